"""`kafka:` — the cluster, topics, consumer timing and security every Kafka client uses."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator

from twinpipe.config.common import (
    ENV_PREFIX,
    HostPort,
    KafkaTopic,
    ReadableFile,
    Section,
    one_source,
    read_secret,
)


def _comma_list(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


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
        one_source(self.sasl_password, self.sasl_password_file, "sasl_password")
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
