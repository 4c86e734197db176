"""Logging set-up shared by the stages: plain text for people, JSON lines for log collectors."""

from __future__ import annotations

import json
import logging
import sys
import time

from twinpipe.config import LoggingConfig
from twinpipe.ratelog import RepeatFilter

CLIENT_LIBRARIES = ("kafka", "urllib3", "influxdb_client", "librdkafka")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    # Client libraries log every reconnect attempt; our own logs say it once, and theirs are
    # kept to warnings and above, each kind at most once per 30 s.
    handler.addFilter(RepeatFilter(CLIENT_LIBRARIES))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    for noisy in CLIENT_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
