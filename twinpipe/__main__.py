"""`python -m twinpipe check-config [PATH]`: validate a config.yaml and print every error."""

from __future__ import annotations

import argparse
import sys

from twinpipe.cli import CONFIG_EPILOG
from twinpipe.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinpipe", description=__doc__, epilog=CONFIG_EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a config file (with environment overrides)")
    check.add_argument("path", nargs="?", help="config file (default: $TWINPIPE_CONFIG or ./config.yaml)")
    args = parser.parse_args(argv)
    try:
        load_config(args.path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    print("config OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
