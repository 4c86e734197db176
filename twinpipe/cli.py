"""What every stage's `__main__` does the same way: `--config`, loading or exiting, stopping on signals."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from twinpipe.config import (
    CONFIG_PATH_ENV,
    DEFAULT_CONFIG_PATH,
    ENV_PREFIX,
    Config,
    ConfigError,
    load_config,
    resolve_path,
)
from twinpipe.logs import setup_logging

CONFIG_EPILOG = (
    f"Configuration: --config PATH, else ${CONFIG_PATH_ENV}, else ./{DEFAULT_CONFIG_PATH}. Any key can be "
    f"overridden by an environment variable named {ENV_PREFIX}<SECTION>__<KEY>, e.g. "
    f"{ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS=kafka:9092."
)


def stage_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=CONFIG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="config.yaml to read (see below)")
    return parser


def load_or_exit(path: str | None, overrides: dict[str, object] | None = None) -> Config:
    """Load the config and set up logging, or print every config error and exit with status 2.

    `overrides` come from command-line flags, keyed like environment overrides
    ("PUBLISHER__SOURCE") so errors name them the same way; None values are ignored.
    """
    environ = dict(os.environ)
    environ.update(
        {ENV_PREFIX + key: str(value) for key, value in (overrides or {}).items() if value is not None}
    )
    try:
        config = load_config(path, environ)
    except ConfigError as exc:
        print("configuration errors:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        sys.exit(2)
    setup_logging(config.logging)
    source = resolve_path(path, environ)
    if source.is_file():
        logging.getLogger("twinpipe").info("configuration from %s", source)
    else:
        logging.getLogger("twinpipe").warning(
            "no %s: using built-in defaults and environment overrides", source
        )
    return config


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so stages leave their loops and flush instead of dying mid-batch."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
