"""`latency_probe:` — hop delays, summaries and probe readings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from twinpipe.config.common import KafkaTopic, Measurement, Positive, Section


class LatencyProbeConfig(Section):
    group_id: str = "twinpipe-latency-probe"
    topics: list[KafkaTopic] | None = None
    start_from: Literal["latest", "earliest"] = "latest"
    device_labels: Annotated[int, Field(ge=0, le=1000)] = 20
    max_plausible_delay_s: Positive = 3600.0
    summary_interval_s: Annotated[float, Field(ge=0)] = 10.0
    summary_measurement: Measurement = "twinpipe_latency"
    probe_interval_s: Annotated[float, Field(ge=0)] = 5.0
    probe_timeout_s: Positive = 30.0
    influx_poll_interval_s: Positive = 0.05
