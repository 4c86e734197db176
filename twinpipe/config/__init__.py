"""The one config.yaml every stage reads: schema, defaults, environment overrides, secrets.

Validation collects every error before failing, and each message names the key path and the bad
value, because a user editing YAML by hand needs to fix all typos in one go.

The schema is split by section, one module each (`twinpipe/config/<section>.py`), so each stage's keys
sit in one place; this package re-exports them so callers import from `twinpipe.config`.
"""

from twinpipe.config.alerting import AlertingConfig, AlertmanagerConfig, Rule, RuleOverride
from twinpipe.config.bridge import BridgeConfig, Route, default_device_level
from twinpipe.config.common import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATH,
    ENV_PREFIX,
    KAFKA_TOPIC_PATTERN,
    ConfigError,
    DeviceId,
    HostPort,
    HttpUrl,
    KafkaTopic,
    Measurement,
    Port,
    Positive,
    ReadableFile,
    Section,
    TagKey,
    TagValue,
    ValueName,
    host_rule,
    one_source,
    pattern_rule,
    placeholders,
    read_secret,
)
from twinpipe.config.display import DisplayConfig
from twinpipe.config.health import HealthConfig
from twinpipe.config.influxdb import InfluxConfig
from twinpipe.config.ingestion import IngestionConfig
from twinpipe.config.kafka import KafkaConfig
from twinpipe.config.latency_probe import LatencyProbeConfig
from twinpipe.config.loading import env_overrides, load_config, parse_config, resolve_path
from twinpipe.config.logs import LoggingConfig
from twinpipe.config.model import ModelConfig
from twinpipe.config.mqtt import MqttConfig, MqttTls
from twinpipe.config.predictive import PredictiveConfig, SeriesSettings
from twinpipe.config.publisher import (
    CHECKSUM_SIZES,
    DEFAULT_SENSORS,
    NUCLEO_FIELDS,
    FrameConfig,
    PublisherConfig,
    SensorModel,
    SerialConfig,
    SimulatorConfig,
    simulated_device_ids,
)
from twinpipe.config.replay import ReplayConfig
from twinpipe.config.schema import Config
from twinpipe.config.sensorthings import SensorThingsConfig
from twinpipe.config.twin_state import TwinStateConfig

__all__ = [
    "AlertingConfig",
    "AlertmanagerConfig",
    "Rule",
    "RuleOverride",
    "BridgeConfig",
    "ReplayConfig",
    "CHECKSUM_SIZES",
    "CONFIG_PATH_ENV",
    "Config",
    "ConfigError",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SENSORS",
    "DeviceId",
    "DisplayConfig",
    "ENV_PREFIX",
    "FrameConfig",
    "HealthConfig",
    "HostPort",
    "HttpUrl",
    "InfluxConfig",
    "IngestionConfig",
    "KAFKA_TOPIC_PATTERN",
    "KafkaConfig",
    "KafkaTopic",
    "LatencyProbeConfig",
    "LoggingConfig",
    "Measurement",
    "ModelConfig",
    "MqttConfig",
    "MqttTls",
    "NUCLEO_FIELDS",
    "Port",
    "PredictiveConfig",
    "Positive",
    "PublisherConfig",
    "ReadableFile",
    "Route",
    "Section",
    "SensorModel",
    "SensorThingsConfig",
    "SerialConfig",
    "SeriesSettings",
    "SimulatorConfig",
    "TagKey",
    "TagValue",
    "TwinStateConfig",
    "ValueName",
    "default_device_level",
    "simulated_device_ids",
    "env_overrides",
    "host_rule",
    "load_config",
    "one_source",
    "parse_config",
    "pattern_rule",
    "placeholders",
    "read_secret",
    "resolve_path",
]
