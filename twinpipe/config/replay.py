"""`publisher.replay:` — replaying a recording (publisher.source: replay); see publisher/README.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, ConfigDict, Field, model_validator

from twinpipe.config.common import DeviceId, Positive, Section, ValueName

# File name ending → format, for `format: auto`.
FORMAT_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class ReplayConfig(Section):
    # `from` is a Python keyword: the field is from_, written and dumped as `from`.
    model_config = ConfigDict(**Section.model_config, serialize_by_alias=True)

    path: Path | None = None
    format: Literal["auto", "csv", "jsonl"] = "auto"
    time_column: Annotated[str, Field(min_length=1)] = "time"
    time_unit: Literal["s", "ms", "us", "ns"] | None = None
    columns: list[ValueName] | None = None
    device: DeviceId = "replay"
    device_column: Annotated[str, Field(min_length=1)] = "device"
    device_map: dict[str, DeviceId] = {}
    speed: Annotated[float, Field(ge=0, le=1e9)] = 1.0
    time_shift: Literal["keep", "end_now"] = "keep"
    loop: bool = False
    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    csv_delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    progress_interval_s: Positive = 10.0

    @model_validator(mode="after")
    def _consistent(self) -> ReplayConfig:
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError(f"from ({self.from_.isoformat()}) is after to ({self.to.isoformat()})")
        if self.path is not None:
            self.resolved_format()
        if self.loop and self.time_shift == "end_now" and not 0 < self.speed <= 1:
            raise ValueError(
                f"loop with time_shift: end_now needs 0 < speed <= 1 (got {self.speed:g}): each pass ends"
                " when the replay reaches its end, so a faster pass would rewrite the history of the one"
                " before; use time_shift: keep, or no loop"
            )
        if self.columns is not None and (clash := {self.time_column, self.device_column} & set(self.columns)):
            raise ValueError(f"columns: {sorted(clash)} is the time_column or device_column")
        return self

    def resolved_format(self) -> str:
        """csv or jsonl: `format`, or from the file name's ending when it is auto."""
        if self.format != "auto":
            return self.format
        suffix = self.path.suffix.lower() if self.path else ""
        if suffix not in FORMAT_BY_SUFFIX:
            raise ValueError(
                f"format: auto cannot tell the format of {str(self.path)!r} (ending {suffix or 'none'!r}; "
                f"known: {', '.join(FORMAT_BY_SUFFIX)}); set publisher.replay.format to csv or jsonl"
            )
        return FORMAT_BY_SUFFIX[suffix]

    def from_ns(self) -> int | None:
        return None if self.from_ is None else _ns(self.from_)

    def to_ns(self) -> int | None:
        return None if self.to is None else _ns(self.to)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch (datetime holds microseconds)."""
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000
