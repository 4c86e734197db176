"""Which readings the rules may judge: the same plausibility checks as the ingestion and the publisher.

* event time (`time_ns`) outside the ingestion's window (twinpipe.eventtime.EventTimeWindow:
  `ingestion.earliest_event_time`, `max_event_age_s`, `max_event_future_s`, against the record's
  Kafka timestamp, like the ingestion): the whole reading is skipped, so one reading a year ahead
  cannot move a datastream's event-time clock and blind its rules (reason `implausible_time`);
* a device that matches no `model.things` entry has no rules: skipped (reason `unmodelled`);
* a value outside its datastream's plausible range (`model`: the datastream's range, else its
  observed property's; the publisher skips the same) is left out of the reading (value reason
  `out_of_range`); the other values of the reading are judged.

Pure: no I/O, no clock; the caller counts and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twinpipe.config.ingestion import IngestionConfig
from twinpipe.eventtime import EventTimeWindow
from twinpipe.model import TwinModel


@dataclass(slots=True)
class Screened:
    values: dict[str, float]  # what the rules may judge
    skipped: str | None = None  # why the whole reading was skipped: implausible_time | unmodelled
    problem: str = ""  # for the log
    out_of_range: list[str] = field(default_factory=list)  # value names left out


class Screen:
    def __init__(self, model: TwinModel, window: IngestionConfig) -> None:
        self._model = model
        self._event_times = EventTimeWindow(window)

    @property
    def max_future_ns(self) -> int:
        return self._event_times.max_future_ns

    def reading(self, device: str, values: dict[str, float], time_ns: int, arrival_ns: int) -> Screened:
        """`time_ns`: the reading's event time; `arrival_ns`: the record's Kafka timestamp (ns)."""
        problem = self._event_times.problem(time_ns, arrival_ns)
        if problem is not None:
            return Screened({}, "implausible_time", problem)
        if self._model.thing(device) is None:
            return Screened({}, "unmodelled", f"device {device!r} matches no model.things entry")
        outside = self._model.outside_ranges(device, values)
        kept = {name: value for name, value in values.items() if name not in outside}
        return Screened(kept, out_of_range=outside)
