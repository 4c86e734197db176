"""`ingestion:` — the Kafka → InfluxDB ingestion: batching, retries, tags and the event-time window."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, Field

from twinpipe.config.common import DeviceId, KafkaTopic, Measurement, Positive, Section, TagKey, TagValue


class IngestionConfig(Section):
    group_id: str = "twinpipe-ingestion"
    topics: list[KafkaTopic] | None = None
    measurement: Measurement = "telemetry"
    tags: dict[TagKey, TagValue] = {}
    device_tags: dict[DeviceId, dict[TagKey, TagValue]] = {}
    batch_size: Annotated[int, Field(ge=1)] = 5000
    flush_interval_s: Annotated[float, Field(ge=0)] = 0.0
    retry_initial_s: Positive = 0.5
    retry_max_s: Positive = 10.0
    shutdown_timeout_s: Positive = 10.0
    earliest_event_time: AwareDatetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_event_age_s: Annotated[float, Field(ge=0)] = 10 * 366 * 86400.0
    max_event_future_s: Annotated[float, Field(ge=0)] = 300.0
    max_plausible_delay_s: Positive = 3600.0
    # None: read the bucket's retention from InfluxDB; 0: keep forever (set nothing aside).
    retention_s: Annotated[float, Field(ge=0)] | None = None

    def earliest_event_ns(self) -> int:
        return int(self.earliest_event_time.timestamp()) * 1_000_000_000
