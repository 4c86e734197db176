"""`display:` — the live view of the stream."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from twinpipe.config.common import DeviceId, KafkaTopic, Section


class DisplayConfig(Section):
    topics: list[KafkaTopic] | None = None
    devices: list[DeviceId] = []
    max_lines_per_s: Annotated[float, Field(gt=0)] = 20.0
