"""`python -m twinpipe check-config [PATH]`: validate a config.yaml and print every error."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from twinpipe.cli import CONFIG_EPILOG
from twinpipe.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinpipe", description=__doc__, epilog=CONFIG_EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a config file (with environment overrides)")
    check.add_argument("path", nargs="?", help="config file (default: $TWINPIPE_CONFIG or ./config.yaml)")
    probe = commands.add_parser(
        "healthcheck", help="exit 0 if the stage on this host answers /healthz (or /readyz) with 200"
    )
    probe.add_argument("--ready", action="store_true", help="ask /readyz: also connected and subscribed")
    probe.add_argument(
        "--config", metavar="PATH", help="config file (default: $TWINPIPE_CONFIG or ./config.yaml)"
    )
    args = parser.parse_args(argv)
    if args.command == "healthcheck":
        return healthcheck(args.config, "/readyz" if args.ready else "/healthz")
    try:
        load_config(args.path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    print("config OK")
    return 0


def healthcheck(path: str | None, endpoint: str = "/healthz") -> int:
    """For container HEALTHCHECKs: the image has no curl, and this reads the port from the config."""
    try:
        port = load_config(path).health.port
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{endpoint}", timeout=5) as response:
            print(response.read().decode())
            return 0
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
