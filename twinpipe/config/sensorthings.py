"""`sensorthings:` — the read-only OGC SensorThings API 1.1 stage (sensorthings_api/README.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from twinpipe.config.common import HttpUrl, Port, Positive, Section, host_rule


class SensorThingsConfig(Section):
    host: Annotated[str, host_rule("sensorthings.port")] = "0.0.0.0"
    port: Port = 8090
    # Links (@iot.selfLink, navigation links, @iot.nextLink) start with this; None: from the request.
    base_url: HttpUrl | None = None
    default_top: Annotated[int, Field(ge=1)] = 100
    max_top: Annotated[int, Field(ge=1)] = 10000
    request_timeout_s: Positive = 10.0
    devices_cache_s: Annotated[float, Field(ge=0)] = 10.0

    @model_validator(mode="after")
    def _top_within_max(self) -> SensorThingsConfig:
        if self.default_top > self.max_top:
            raise ValueError(f"default_top ({self.default_top}) must not exceed max_top ({self.max_top})")
        return self
