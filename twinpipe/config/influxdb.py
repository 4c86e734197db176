"""`influxdb:` — the InfluxDB 2 server, org, bucket and token."""

from __future__ import annotations

from pydantic import SecretStr, model_validator

from twinpipe.config.common import (
    ENV_PREFIX,
    ConfigError,
    HttpUrl,
    Positive,
    ReadableFile,
    Section,
    one_source,
    read_secret,
)


class InfluxConfig(Section):
    url: HttpUrl = "http://localhost:8086"
    org: str = "twinpipe"
    bucket: str = "twin"
    token: SecretStr | None = None
    token_file: ReadableFile | None = None
    timeout_s: Positive = 10.0

    @model_validator(mode="after")
    def _one_token_source(self) -> InfluxConfig:
        one_source(self.token, self.token_file, "token")
        return self

    def secret_token(self) -> str:
        token = read_secret(self.token, self.token_file)
        if not token:
            raise ConfigError(
                [f"influxdb.token: required; set {ENV_PREFIX}INFLUXDB__TOKEN or influxdb.token_file"]
            )
        return token
