"""The whole config.yaml: one section per top-level key, each defined in its own module,
and the checks that span sections."""

from __future__ import annotations

from twinpipe.config.bridge import BridgeConfig
from twinpipe.config.common import Section
from twinpipe.config.display import DisplayConfig
from twinpipe.config.health import HealthConfig
from twinpipe.config.influxdb import InfluxConfig
from twinpipe.config.ingestion import IngestionConfig
from twinpipe.config.kafka import KafkaConfig
from twinpipe.config.latency_probe import LatencyProbeConfig
from twinpipe.config.logs import LoggingConfig
from twinpipe.config.mqtt import MqttConfig
from twinpipe.config.publisher import PublisherConfig
from twinpipe.names import tag_field_collisions


class Config(Section):
    mqtt: MqttConfig = MqttConfig()
    kafka: KafkaConfig = KafkaConfig()
    influxdb: InfluxConfig = InfluxConfig()
    publisher: PublisherConfig = PublisherConfig()
    bridge: BridgeConfig = BridgeConfig()
    ingestion: IngestionConfig = IngestionConfig()
    display: DisplayConfig = DisplayConfig()
    latency_probe: LatencyProbeConfig = LatencyProbeConfig()
    health: HealthConfig = HealthConfig()
    logging: LoggingConfig = LoggingConfig()

    def telemetry_topics(self, override: list[str] | None) -> list[str]:
        return override or [self.kafka.telemetry_topic]


def cross_section_errors(config: Config) -> list[str]:
    """A configured tag key that is also a configured value name would hide the tag (twinpipe.names)."""
    values = {"publisher.simulator.sensors": list(config.publisher.simulator.sensors)}
    values["publisher.serial.frame.fields"] = config.publisher.serial.frame.fields
    tags = {"ingestion.tags": list(config.ingestion.tags)}
    tags |= {f"ingestion.device_tags.{d}": list(t) for d, t in config.ingestion.device_tags.items()}
    return [
        f"{where}.{name}: tag key {name!r} is also a value name in {source}; a field of the same name"
        " hides the tag"
        for where, keys in tags.items()
        for source, names in values.items()
        for name in tag_field_collisions(keys, names)
    ]
