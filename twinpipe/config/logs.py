"""`logging:` — level and format of every stage's log."""

from __future__ import annotations

from typing import Literal

from twinpipe.config.common import Section


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
