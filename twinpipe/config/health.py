"""`health:` — where every stage serves /healthz, /readyz and /metrics."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from twinpipe.config.common import Section, host_rule


class HealthConfig(Section):
    host: Annotated[str, host_rule("health.port")] = "0.0.0.0"
    port: Annotated[int, Field(ge=0, lt=65536)] = 8080
