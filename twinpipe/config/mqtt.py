"""`mqtt:` — the broker every MQTT client of twinpipe connects to."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from twinpipe.config.common import Port, Positive, ReadableFile, Section, host_rule, one_source, read_secret


class MqttTls(Section):
    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None


class MqttConfig(Section):
    host: Annotated[str, host_rule("mqtt.port", "mqtt.tls")] = "localhost"
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
        one_source(self.password, self.password_file, "password")
        return self

    def secret_password(self) -> str | None:
        return read_secret(self.password, self.password_file)
