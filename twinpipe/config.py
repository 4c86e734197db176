"""The one config.yaml every stage reads: schema, defaults, environment overrides, secrets.

Validation collects every error before failing, and each message names the key path and the bad
value, because a user editing YAML by hand needs to fix all typos in one go.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import string
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from twinpipe.names import (
    NAME_PATTERN,
    device_problem,
    measurement_problem,
    tag_field_collisions,
    tag_key_problem,
    tag_value_problem,
    value_name_problem,
)

ENV_PREFIX = "TWINPIPE__"
CONFIG_PATH_ENV = "TWINPIPE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")

KAFKA_TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,249}\Z")  # \Z: "$" matches before a final newline


class ConfigError(Exception):
    """Raised with every problem found in a configuration, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


# --- value checks -----------------------------------------------------------------------------------


# A DNS name (labels of letters, digits, '-' and '_', which container names use) or an IP address.
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")
_TLS_SCHEMES = {"mqtts", "ssl", "tls", "wss", "https", "sasl_ssl"}


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_host(value: str) -> bool:
    return _is_ip(value) or (len(value) <= 253 and bool(_HOSTNAME.fullmatch(value)))


def _url_parts(value: str) -> tuple[str, str | None, str]:
    """Host, port (None if absent) and scheme of something written as `scheme://[user@]host[:port]/...`.

    Parsed by hand: urlsplit gives up on schemes such as Kafka's SASL_SSL and lowercases the host.
    """
    scheme, _, rest = value.partition("://")
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    return host or "HOST", port if port.isdigit() else None, scheme.lower()


def _host(port_key: str, tls_key: str | None = None) -> AfterValidator:
    """A host to connect to or bind on, as sockets take it: no scheme, port, path or brackets.

    Clients given `tcp://broker:1883` resolve that whole string as a name and retry forever, so the
    mistake is refused here with what to write instead.
    """

    def check(value: str) -> str:
        if "://" in value:
            host, port, scheme = _url_parts(value)
            hint = f"write host only: {host}, port " + (f"{port} in {port_key}" if port else f"in {port_key}")
            if scheme in _TLS_SCHEMES and tls_key:
                hint += f", TLS with {tls_key}"
            raise ValueError(f"expected a host name or IP address, not a URL: {hint}")
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and _is_host(host.strip("[]")) and not _is_ip(value):
            raise ValueError(
                "expected a host name or IP address without a port: "
                f"write host only: {host.strip('[]')}, port {port} in {port_key}"
            )
        if value.startswith("[") and value.endswith("]") and _is_ip(value[1:-1]):
            raise ValueError(f"write the IPv6 address without brackets: {value[1:-1]}")
        if not _is_host(value):
            raise ValueError("expected a host name or IP address (letters, digits, '.', '-', '_')")
        return value

    return AfterValidator(check)


def _host_port(value: str) -> str:
    """`host:port` for Kafka (`[v6address]:port` for IPv6), never a URL or a Kafka listener spec."""
    if "://" in value:
        host, port, scheme = _url_parts(value)
        host = f"[{host}]" if ":" in host else host
        hint = f"write {host}:{port}" if port else f"write {host}:PORT"
        if scheme.upper() in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "HTTPS"):
            hint += " (the protocol goes in kafka.security_protocol)"
        raise ValueError(f"expected host:port, not a URL: {hint}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port")
    if host.startswith("[") and host.endswith("]"):
        valid = ":" in host and _is_ip(host[1:-1])
    elif ":" in host:
        raise ValueError(f"expected host:port; write an IPv6 address in brackets: [{host}]:{port}")
    else:
        valid = _is_host(host)
    if not valid:
        raise ValueError("expected host:port with a host name or IP address ([address] for IPv6)")
    return value


def _comma_list(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = f"http://{value}" if "://" not in value else "http://influxdb:8086"
        raise ValueError(f"expected an http:// or https:// URL such as {example}")
    if not _is_host(parts.hostname):
        raise ValueError(f"expected a URL with a host name or IP address, not {parts.hostname!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("expected a URL whose port is a number from 1 to 65535") from None
    return value.rstrip("/")


def _pattern(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"expected {what} matching {pattern.pattern}")
        return value

    return AfterValidator(check)


def _name_rule(problem_of: Any, what: str):
    """A validator from one of twinpipe.names' rules (which InfluxDB can store unchanged)."""

    def check(value: str) -> str:
        problem = problem_of(value)
        if problem:
            raise ValueError(f"expected {what}: {problem}")
        return value

    return AfterValidator(check)


def _readable_file(value: Path) -> Path:
    try:
        with open(value, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror}") from None
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
ValueName = Annotated[str, _name_rule(value_name_problem, "a value name")]  # a name in envelope values
TagKey = Annotated[str, _name_rule(tag_key_problem, "a tag key")]
TagValue = Annotated[str, _name_rule(tag_value_problem, "a tag value")]
DeviceId = Annotated[str, _name_rule(lambda d: device_problem(d, allow_probe=False), "a device id")]
Measurement = Annotated[str, _name_rule(measurement_problem, "a measurement name")]
KafkaTopic = Annotated[str, _pattern(KAFKA_TOPIC_PATTERN, "a Kafka topic name")]
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
Port = Annotated[int, Field(gt=0, lt=65536)]
Positive = Annotated[float, Field(gt=0)]


def _one_source(value: SecretStr | None, path: Path | None, key: str) -> None:
    if value is not None and path is not None:
        raise ValueError(f"set {key} or {key}_file, not both")


def read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """A secret given inline (usually via the environment) or as a file path (Docker/K8s secrets)."""
    if path is not None:
        return path.read_text().strip()
    return value.get_secret_value() if value is not None else None


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections ---------------------------------------------------------------------------------------


class MqttTls(Section):
    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None


class MqttConfig(Section):
    host: Annotated[str, _host("mqtt.port", "mqtt.tls")] = "localhost"
    port: Port = 1883
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    username: str | None = None
    password: SecretStr | None = None
    password_file: ReadableFile | None = None
    tls: MqttTls | None = None
    reconnect_min_s: Positive = 0.5
    reconnect_max_s: Positive = 10.0

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        _one_source(self.password, self.password_file, "password")
        return self

    def secret_password(self) -> str | None:
        return read_secret(self.password, self.password_file)


class KafkaConfig(Section):
    bootstrap_servers: Annotated[list[HostPort], BeforeValidator(_comma_list), Field(min_length=1)] = [
        "localhost:9092"
    ]
    telemetry_topic: KafkaTopic = "twin.telemetry"
    dead_letter_topic: KafkaTopic = "twin.deadletter"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    create_topics: bool = True
    partitions: Annotated[int, Field(ge=1)] = 4
    replication_factor: Annotated[int, Field(ge=1)] = 1
    session_timeout_ms: Annotated[int, Field(ge=1000)] = 10000
    heartbeat_interval_ms: Annotated[int, Field(ge=100)] = 3000
    fetch_max_wait_ms: Annotated[int, Field(ge=0, le=10000)] = 20
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: ReadableFile | None = None
    ssl_ca_file: ReadableFile | None = None
    ssl_cert_file: ReadableFile | None = None
    ssl_key_file: ReadableFile | None = None

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaConfig:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaConfig:
        _one_source(self.sasl_password, self.sasl_password_file, "sasl_password")
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_mechanism or not self.sasl_username:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_mechanism and sasl_username"
                )
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs a password: set "
                    f"{ENV_PREFIX}KAFKA__SASL_PASSWORD or kafka.sasl_password_file"
                )
        elif self.sasl_mechanism:
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("set ssl_cert_file and ssl_key_file together (a client certificate and its key)")
        return self

    def security(self) -> dict[str, Any]:
        """kafka-python's keyword arguments for the configured protocol, SASL and TLS settings."""
        settings: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            settings |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": read_secret(self.sasl_password, self.sasl_password_file),
            }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            settings |= {
                "ssl_cafile": str(self.ssl_ca_file) if self.ssl_ca_file else None,
                "ssl_certfile": str(self.ssl_cert_file) if self.ssl_cert_file else None,
                "ssl_keyfile": str(self.ssl_key_file) if self.ssl_key_file else None,
            }
        return settings


class InfluxConfig(Section):
    url: HttpUrl = "http://localhost:8086"
    org: str = "twinpipe"
    bucket: str = "twin"
    token: SecretStr | None = None
    token_file: ReadableFile | None = None
    timeout_s: Positive = 10.0

    @model_validator(mode="after")
    def _one_token_source(self) -> InfluxConfig:
        _one_source(self.token, self.token_file, "token")
        return self

    def secret_token(self) -> str:
        token = read_secret(self.token, self.token_file)
        if not token:
            raise ConfigError(
                [f"influxdb.token: required; set {ENV_PREFIX}INFLUXDB__TOKEN or influxdb.token_file"]
            )
        return token


NUCLEO_FIELDS = [
    "ambient_temperature",
    "ambient_humidity",
    "wall1_temperature",
    "wall1_humidity",
    "wall2_temperature",
    "wall2_humidity",
]


class FrameConfig(Section):
    format: Literal["binary", "json", "csv", "kv"] = "binary"
    fields: list[ValueName] = NUCLEO_FIELDS
    csv_delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    max_line_bytes: Annotated[int, Field(ge=16)] = 4096
    sync_hex: str = "00000000"
    layout: str = ">6h"
    scale: Annotated[list[float], BeforeValidator(lambda v: v if isinstance(v, list) else [v])] = [0.01]

    @field_validator("sync_hex")
    @classmethod
    def _hex(cls, value: str) -> str:
        try:
            if not bytes.fromhex(value):
                raise ValueError
        except ValueError:
            raise ValueError("expected a non-empty hex string such as '00000000'") from None
        return value

    @field_validator("layout")
    @classmethod
    def _struct(cls, value: str) -> str:
        try:
            struct.calcsize(value)
        except struct.error as exc:
            raise ValueError(f"not a struct layout ({exc})") from None
        if value[:1] not in "<>!=":
            raise ValueError("must start with a byte order: '>' (big-endian) or '<' (little-endian)")
        return value

    def sync(self) -> bytes:
        return bytes.fromhex(self.sync_hex)

    def scales(self) -> list[float]:
        """One factor per field (a single configured factor applies to all)."""
        return self.scale * len(self.fields) if len(self.scale) == 1 else self.scale

    @model_validator(mode="after")
    def _binary_shape(self) -> FrameConfig:
        if self.format == "binary":
            count = len(struct.unpack(self.layout, bytes(struct.calcsize(self.layout))))
            if count != len(self.fields):
                raise ValueError(
                    f"layout {self.layout!r} holds {count} values but fields lists {len(self.fields)}"
                )
            if len(self.scale) not in (1, count):
                raise ValueError(f"scale must be one number or {count} numbers")
        if self.format == "csv" and not self.fields:
            raise ValueError("csv frames need the fields list")
        return self


class SerialConfig(Section):
    device_id: DeviceId = "nucleo-1"
    port: str = "/dev/ttyACM0"
    baudrate: Annotated[int, Field(gt=0)] = 38400
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1
    read_timeout_s: Positive = 0.2
    reconnect_max_s: Positive = 10.0
    frame: FrameConfig = FrameConfig()


class SensorModel(Section):
    mean: float
    stddev: Annotated[float, Field(ge=0)]
    drift: Annotated[float, Field(ge=0)] = 0.0


DEFAULT_SENSORS = {
    "temperature": SensorModel(mean=25.0, stddev=2.0, drift=0.05),
    "humidity": SensorModel(mean=60.0, stddev=3.0, drift=0.05),
    "pressure": SensorModel(mean=1013.0, stddev=2.0, drift=0.02),
}


class SimulatorConfig(Section):
    devices: Annotated[int, Field(ge=1, le=10000)] = 1
    device_prefix: DeviceId = "sim"
    rate_hz: Annotated[float, Field(gt=0, le=100000)] = 1.0
    outlier_probability: Annotated[float, Field(ge=0, le=1)] = 0.001
    outlier_scale: Annotated[float, Field(ge=0)] = 6.0
    seed: int | None = None
    sensors: dict[ValueName, SensorModel] = Field(default_factory=lambda: dict(DEFAULT_SENSORS), min_length=1)

    @model_validator(mode="after")
    def _device_ids_valid(self) -> SimulatorConfig:
        problem = device_problem(f"{self.device_prefix}-{self.devices}", allow_probe=False)
        if problem:
            raise ValueError(f"device_prefix makes device ids that are not allowed: {problem}")
        return self


class PublisherConfig(Section):
    source: Literal["simulator", "serial"] = "simulator"
    topic_template: str = "twin/{device}/telemetry"
    client_id: str | None = None
    buffer_size: Annotated[int, Field(ge=1)] = 100_000
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100
    shutdown_timeout_s: Positive = 10.0
    spool_dir: Path | None = None
    # MQTT caps a packet at 268,435,455 bytes; 65536 matches bridge.max_payload_bytes' default.
    max_payload_bytes: Annotated[int, Field(ge=256, le=268_435_455)] = 65536
    # ≥ the broker's autosave_interval plus margin (compose: 10 s); 0 = keep nothing once acknowledged.
    resend_window_s: Annotated[float, Field(ge=0)] = 15.0
    serial: SerialConfig = SerialConfig()
    simulator: SimulatorConfig = SimulatorConfig()

    @field_validator("topic_template")
    @classmethod
    def _topic(cls, value: str) -> str:
        if _placeholders(value) - {"device"}:
            raise ValueError("only the placeholder {device} is allowed")
        if "+" in value or "#" in value or not value:
            raise ValueError("an MQTT topic to publish to cannot be empty or contain wildcards")
        return value


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
        names = _placeholders(value)
        if any(not (n == "device" or n.isdigit()) for n in names):
            raise ValueError("placeholders allowed: {device} and topic levels {0}, {1}, ...")
        if not names and not KAFKA_TOPIC_PATTERN.match(value):
            raise ValueError(f"expected a Kafka topic name matching {KAFKA_TOPIC_PATTERN.pattern}")
        return value


class BridgeConfig(Section):
    routes: Annotated[list[Route], Field(min_length=1)] = [Route(mqtt_filter="twin/+/telemetry")]
    shared_group: Annotated[str, _pattern(NAME_PATTERN, "a group name")] | None = None
    client_id: str = "twinpipe-bridge"
    session_expiry_s: Annotated[int, Field(ge=0, le=4294967295)] = 86400
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 1000
    max_payload_bytes: Annotated[int, Field(ge=64)] = 65536
    linger_ms: Annotated[int, Field(ge=0)] = 5
    batch_size: Annotated[int, Field(ge=1024)] = 65536
    compression: Literal["none", "gzip"] = "none"
    producer: Literal["kafka-python", "confluent-kafka"] = "kafka-python"
    shutdown_timeout_s: Positive = 10.0

    @field_validator("producer")
    @classmethod
    def _producer_installed(cls, value: str) -> str:
        if value == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") is None:
            raise ValueError("confluent-kafka is not installed (pip install 'twinpipe[confluent]')")
        return value


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

    def earliest_event_ns(self) -> int:
        return int(self.earliest_event_time.timestamp()) * 1_000_000_000


class DisplayConfig(Section):
    topics: list[KafkaTopic] | None = None
    devices: list[DeviceId] = []
    max_lines_per_s: Annotated[float, Field(gt=0)] = 20.0


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


class HealthConfig(Section):
    host: Annotated[str, _host("health.port")] = "0.0.0.0"
    port: Annotated[int, Field(ge=0, lt=65536)] = 8080


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


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


def _tag_field_collisions(config: Config) -> list[str]:
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


# --- loading ----------------------------------------------------------------------------------------


def resolve_path(cli_path: str | Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(cli_path or environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """`TWINPIPE__KAFKA__BOOTSTRAP_SERVERS=a:9092` → {("kafka", "bootstrap_servers"): (name, "a:9092")}.

    Values are parsed as YAML scalars/flow collections so numbers, booleans and lists work.
    """
    overrides = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        overrides[path] = (name, value)
    return overrides


def _apply(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = document
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _describe(error: Any, sources: dict[tuple[str, ...], str]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (check the spelling against config.yaml)"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if "input" in error and not isinstance(error["input"], dict):
            message += f", got {_redacted(loc, error['input'])!r}"
    origin = next((name for path, name in sources.items() if loc[: len(path)] == path), None)
    return f"{key}: {message}" + (f" (from {origin})" if origin else "")


def _redacted(loc: tuple[str, ...], value: Any) -> Any:
    if isinstance(value, str) and "://" in value:  # a URL's user:password@ part
        value = re.sub(r"(://)[^/@]*@", r"\1***@", value)
    return "***" if loc and loc[-1] in ("password", "token", "sasl_password") else value


def parse_config(document: Any, environ: Mapping[str, str] = os.environ, origin: str = "config") -> Config:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([f"{origin}: expected a mapping of sections, got {type(document).__name__}"])
    sources = {}
    for path, (name, value) in env_overrides(environ).items():
        _apply(document, path, value)
        sources[path] = name
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError([_describe(error, sources) for error in exc.errors()]) from None
    collisions = _tag_field_collisions(config)
    if collisions:
        raise ConfigError(collisions)
    return config


def load_config(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Load and validate; a missing file is allowed only when no path was asked for explicitly."""
    explicit = path is not None or CONFIG_PATH_ENV in environ
    resolved = resolve_path(path, environ)
    try:
        text = resolved.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError([f"{resolved}: config file not found"]) from None
        text = ""
    except OSError as exc:
        raise ConfigError([f"{resolved}: cannot read config file: {exc.strerror}"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{resolved}: not valid YAML: {exc}"]) from None
    return parse_config(document, environ, origin=str(resolved))
