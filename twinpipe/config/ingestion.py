"""`ingestion:` — the Kafka → InfluxDB ingestion: batching, retries, tags and the event-time window."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, model_validator

from twinpipe.config.common import DeviceId, KafkaTopic, Measurement, Positive, Section, TagKey, TagValue


class IngestionConfig(Section):
    group_id: str = "twinpipe-ingestion"
    topics: list[KafkaTopic] | None = None
    measurement: Measurement = "telemetry"
    tags: dict[TagKey, TagValue] = {}
    device_tags: dict[DeviceId, dict[TagKey, TagValue]] = {}
    # Where each modelled device's location goes for Grafana's Geomap; None: not written.
    location_measurement: Measurement | None = "twin_location"
    # One location point per device and window of event time this long (see influx_ingestion/README.md).
    location_interval_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
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

    @model_validator(mode="after")
    def _location_apart(self) -> IngestionConfig:
        if self.location_measurement == self.measurement:
            raise ValueError(
                f"location_measurement: {self.location_measurement!r} is also ingestion.measurement;"
                " locations need a measurement of their own (e.g. twin_location)"
            )
        return self

    def earliest_event_ns(self) -> int:
        return int(self.earliest_event_time.timestamp()) * 1_000_000_000
