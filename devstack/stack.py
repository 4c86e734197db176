"""All servers a pipeline needs, on free loopback ports, and a config.yaml pointing the stages at them."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

import yaml

from devstack.faultproxy import FaultProxy
from devstack.influx import Influxd, InfluxV2Shim
from devstack.kafka import Tansu
from devstack.mosquitto import Mosquitto

ORG = "twinpipe"
BUCKET = "twin"


class LocalStack(contextlib.ExitStack):
    def __init__(self, workdir: Path, kafka_proxy: bool = False) -> None:
        """`kafka_proxy`: clients reach Kafka through a FaultProxy (`self.kafka_proxy`) that can cut it."""
        super().__init__()
        self.workdir = workdir
        self.token = secrets.token_hex(16)
        self.kafka_proxy: FaultProxy | None = None
        self._with_proxy = kafka_proxy

    def __enter__(self) -> LocalStack:
        super().__enter__()
        self.mosquitto = self.enter_context(Mosquitto(self.workdir / "mosquitto"))
        kafka = Tansu(self.workdir / "kafka")
        if self._with_proxy:
            self.kafka_proxy = self.enter_context(FaultProxy(kafka.port))
            kafka.advertised_port = self.kafka_proxy.port
        self.kafka = self.enter_context(kafka)
        self.influxd = self.enter_context(Influxd(self.workdir / "influxdb"))
        self.influx = self.enter_context(InfluxV2Shim(self.influxd, ORG, self.token))
        self.influx.add_bucket(BUCKET)
        return self

    def config(self) -> dict[str, Any]:
        """Connection settings for the stages; the InfluxDB token travels in the environment."""
        return {
            "mqtt": {"host": "127.0.0.1", "port": self.mosquitto.port},
            "kafka": {
                "bootstrap_servers": [self.kafka.bootstrap],
                # Tansu joins consumer groups slowly with client defaults; these work on Kafka too.
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 2000,
            },
            "influxdb": {"url": self.influx.url, "org": ORG, "bucket": BUCKET},
        }

    def env(self) -> dict[str, str]:
        return {"TWINPIPE__INFLUXDB__TOKEN": self.token}


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two config documents; `override` wins."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result
