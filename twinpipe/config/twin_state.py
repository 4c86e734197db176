"""`twin_state:` — the twin state stage: desired/reported state, commands and their journal, HTTP API
(twin_state/README.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from twinpipe.config.common import (
    KafkaTopic,
    Measurement,
    Port,
    Positive,
    ReadableFile,
    Section,
    host_rule,
    one_source,
    read_secret,
)


class TwinStateConfig(Section):
    host: Annotated[str, host_rule("twin_state.port")] = "0.0.0.0"
    port: Port = 8091
    command_topic: KafkaTopic = "twin.commands"
    event_topic: KafkaTopic = "twin.command_events"
    state_topic: KafkaTopic = "twin.state"
    group_id: Annotated[str, Field(min_length=1)] = "twinpipe-twin-state"
    # Bearer token for writes (PATCH /things/{device}/desired): inline (usually from the environment,
    # TWINPIPE__TWIN_STATE__TOKEN) or a secret file. Without either the stage refuses to start unless
    # read_only is true.
    token: SecretStr | None = None
    token_file: ReadableFile | None = None
    read_only: bool = False
    command_expiry_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 300.0
    max_wait_s: Annotated[float, Field(ge=0, le=300)] = 60.0
    journal_size: Annotated[int, Field(ge=1, le=10000)] = 50
    expiry_check_s: Positive = 0.5
    readings_persist_s: Annotated[float, Field(ge=0, le=3600)] = 5.0
    kafka_timeout_s: Positive = 10.0
    influx_measurement_commands: Measurement = "twin_commands"
    influx_measurement_settings: Measurement = "twin_settings"

    @model_validator(mode="after")
    def _token_or_read_only(self) -> TwinStateConfig:
        one_source(self.token, self.token_file, "token")
        if self.read_only and (self.token is not None or self.token_file is not None):
            raise ValueError("read_only: true with a token: remove the token or set read_only: false")
        if not self.read_only and self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token: empty; set a secret (or read_only: true)")
        return self

    def secret_token(self) -> str | None:
        return read_secret(self.token, self.token_file)
