"""`bridge:` — the MQTT → Kafka bridge: routes, its MQTT session and the Kafka producer."""

from __future__ import annotations

import importlib.util
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from twinpipe.config.common import (
    KAFKA_TOPIC_PATTERN,
    KafkaTopic,
    Positive,
    Section,
    pattern_rule,
    placeholders,
)
from twinpipe.names import NAME_PATTERN


def default_device_level(mqtt_filter: str) -> int | None:
    """The topic level that names the device: the filter's only `+`, else a final `#` (None if neither)."""
    levels = mqtt_filter.split("/")
    plus = [i for i, level in enumerate(levels) if level == "+"]
    if len(plus) == 1:
        return plus[0]
    return len(levels) - 1 if not plus and levels[-1] == "#" else None


class Route(Section):
    mqtt_filter: str
    kafka_topic: str | None = None
    device_level: Annotated[int, Field(ge=0)] | None = None
    check_device: bool = True

    def device_index(self) -> int | None:
        """The topic level an envelope's device must equal, or None when this route does not check."""
        if not self.check_device:
            return None
        return self.device_level if self.device_level is not None else default_device_level(self.mqtt_filter)

    @model_validator(mode="after")
    def _device_level_known(self) -> Route:
        if not self.check_device:
            return self
        levels = self.mqtt_filter.split("/")
        level = self.device_index()
        if level is None:
            raise ValueError(
                f"cannot tell which level of {self.mqtt_filter!r} names the device (it has no single '+'): "
                "set device_level (0 = first level) or check_device: false"
            )
        wildcards = {"+", "#"} & set(levels)
        if wildcards and level < len(levels) and levels[level] not in wildcards:
            # On a filter without wildcards (one device's topic) a fixed level is what names the device.
            raise ValueError(
                f"device_level {level} is the fixed level {levels[level]!r} of {self.mqtt_filter!r}: "
                "point it at a '+' or '#' level, or set check_device: false"
            )
        if level >= len(levels) and levels[-1] != "#":
            raise ValueError(
                f"device_level {level} is beyond the {len(levels)} levels of {self.mqtt_filter!r}"
            )
        return self

    @field_validator("mqtt_filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        levels = value.split("/")
        if not value or value.startswith("$share/"):
            raise ValueError(
                "expected an MQTT topic filter; use bridge.shared_group for shared subscriptions"
            )
        for i, level in enumerate(levels):
            if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
                raise ValueError("wildcards must fill a whole level, and '#' only the last")
        return value

    @field_validator("kafka_topic")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        names = placeholders(value)
        if any(not (n == "device" or n.isdigit()) for n in names):
            raise ValueError("placeholders allowed: {device} and topic levels {0}, {1}, ...")
        if not names and not KAFKA_TOPIC_PATTERN.match(value):
            raise ValueError(f"expected a Kafka topic name matching {KAFKA_TOPIC_PATTERN.pattern}")
        return value


def topic_filter(template: str) -> str:
    """The subscription filter of a `{device}` topic template: `twin/{device}/command/events` →
    `twin/+/command/events`."""
    return template.replace("{device}", "+")


def check_device_template(value: str) -> str:
    """An MQTT topic template with exactly one whole level `{device}` and no wildcards."""
    if placeholders(value) != {"device"} or "{device}" not in value.split("/"):
        raise ValueError(
            "expected an MQTT topic with {device} as one whole level, e.g. twin/{device}/command"
        )
    if "+" in value or "#" in value:
        raise ValueError("an MQTT topic to publish to cannot contain wildcards")
    return value


DeviceTopic = Annotated[str, AfterValidator(check_device_template)]


class DownlinkConfig(Section):
    """`bridge.downlink`: commands from Kafka to the boards' MQTT topics, and their events back."""

    enabled: bool = False
    command_topic: KafkaTopic = "twin.commands"
    events_topic: KafkaTopic = "twin.command_events"
    group_id: Annotated[str, Field(min_length=1)] = "twinpipe-bridge-downlink"
    mqtt_command_topic: DeviceTopic = "twin/{device}/command"
    mqtt_events_topic: DeviceTopic = "twin/{device}/command/events"
    publish_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_batch: Annotated[int, Field(ge=1, le=10000)] = 100

    @model_validator(mode="after")
    def _distinct_topics(self) -> DownlinkConfig:
        if self.mqtt_command_topic == self.mqtt_events_topic:
            raise ValueError("mqtt_command_topic and mqtt_events_topic must differ")
        if self.command_topic == self.events_topic:
            raise ValueError("command_topic and events_topic must differ")
        return self


class BridgeConfig(Section):
    routes: Annotated[list[Route], Field(min_length=1)] = [Route(mqtt_filter="twin/+/telemetry")]
    shared_group: Annotated[str, pattern_rule(NAME_PATTERN, "a group name")] | None = None
    client_id: str = "twinpipe-bridge"
    session_expiry_s: Annotated[int, Field(ge=0, le=4294967295)] = 86400
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 1000
    max_payload_bytes: Annotated[int, Field(ge=64)] = 65536
    linger_ms: Annotated[int, Field(ge=0)] = 5
    batch_size: Annotated[int, Field(ge=1024)] = 65536
    compression: Literal["none", "gzip"] = "none"
    producer: Literal["kafka-python", "confluent-kafka"] = "kafka-python"
    delivery_timeout_s: Annotated[float, Field(ge=1, le=86400)] = 120.0
    shutdown_timeout_s: Positive = 10.0
    downlink: DownlinkConfig = DownlinkConfig()

    @field_validator("producer")
    @classmethod
    def _producer_installed(cls, value: str) -> str:
        if value == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") is None:
            raise ValueError("confluent-kafka is not installed (pip install 'twinpipe[confluent]')")
        return value
