"""`python -m twinpipe check-config [PATH]`: validate a config.yaml and print every error.
`python -m twinpipe dashboard [--check]`: write (or compare) the Digital twin dashboard from the model.
`python -m twinpipe command DEVICE set NAME=VALUE ... [--wait]`: set desired settings of a device."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from twinpipe.cli import CONFIG_EPILOG
from twinpipe.config import CONFIG_PATH_ENV, ConfigError, env_overrides, load_config, resolve_path


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
    board = commands.add_parser(
        "dashboard",
        help="write the Digital twin dashboard (grafana/twin/digital-twin.json) from config.yaml's model",
        description="Write the Digital twin dashboard from the config file's model (TWINPIPE__ environment"
        " overrides are not applied: Grafana serves the one dashboard to the whole stack).",
    )
    board.add_argument(
        "--config", metavar="PATH", help="config file (default: $TWINPIPE_CONFIG or ./config.yaml)"
    )
    board.add_argument(
        "--output",
        metavar="PATH",
        help="dashboard file (default: the repository's grafana/twin/digital-twin.json; compose's"
        " twin-dashboard service writes into the volume Grafana provisions from)",
    )
    board.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the file differs from the model's"
    )
    add_command_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "command":
        return command(args)
    if args.command == "dashboard":
        return dashboard(args.config, args.output, args.check)
    if args.command == "healthcheck":
        return healthcheck(args.config, "/readyz" if args.ready else "/healthz")
    return check_config(args.path, os.environ)


def add_command_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "command",
        help="set desired settings of a device through the twin state API and follow the command",
        description="Set desired settings of DEVICE through the twin state API (python -m twin_state): the\n"
        "API checks them against the model's settings of the device's thing, writes a command the bridge\n"
        "sends to the board, and records its lifecycle: queued -> sent -> delivered -> written ->\n"
        "acknowledged -> applied, or expired / failed. Prints each state as it is reached.",
        epilog="Examples:\n  python -m twinpipe command sim-1 set heater=on\n"
        "  python -m twinpipe command nucleo-1 set heater=off report_interval_s=2 --wait\n\n"
        "VALUE: on/off/true/false for a bool, a number (in the setting's unit) or an enum's value.\n"
        "Exit status: 0 queued (with --wait: applied); 1 expired, failed or refused by the API (the\n"
        "reason is printed); 2 usage or connection error.\n\n" + CONFIG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("device", metavar="DEVICE", help="device id, e.g. nucleo-1 or sim-1")
    parser.add_argument("action", choices=["set"], help="what to do (set desired settings)")
    parser.add_argument("assignments", metavar="NAME=VALUE", nargs="+", help="settings, e.g. heater=on")
    parser.add_argument(
        "--wait", action="store_true", help="follow the command until it is applied, expired or failed"
    )
    parser.add_argument(
        "--url", help="the API, default http://127.0.0.1:<twin_state.port> from the config file"
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding the bearer token (default: twin_state.token / token_file of the config,"
        " e.g. from $TWINPIPE__TWIN_STATE__TOKEN)",
    )
    parser.add_argument(
        "--expires-in",
        type=float,
        metavar="S",
        help="seconds until the command expires unacknowledged (default twin_state.command_expiry_s)",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $TWINPIPE_CONFIG or ./config.yaml)"
    )


def command(args: argparse.Namespace) -> int:
    from twinpipe.command import CommandError, parse_assignments, read_token, run

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    url = args.url or f"http://127.0.0.1:{config.twin_state.port}"
    try:
        token = read_token(args.token_file, config.twin_state.secret_token())
        return run(url, token, args.device, parse_assignments(args.assignments), args.wait, args.expires_in)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130


def check_config(path: str | None, environ: Mapping[str, str]) -> int:
    """Validate and say what was validated: a file, or (none found) the built-in defaults.

    A path given on the command line or in $TWINPIPE_CONFIG must exist; only the default
    ./config.yaml may be absent, because the stages then run on defaults too.
    """
    source = resolve_path(path, environ)
    given = "on the command line" if path is not None else f"in ${CONFIG_PATH_ENV}"
    explicit = path is not None or CONFIG_PATH_ENV in environ
    if explicit and not source.exists():
        print(f"{source}: config file not found (given {given})", file=sys.stderr)
        return 1
    try:
        load_config(path, environ)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    overrides = sorted(name for name, _ in env_overrides(environ).values())
    with_overrides = f" with environment overrides {', '.join(overrides)}" if overrides else ""
    if source.is_file():
        print(f"config OK: {source}{with_overrides}")
    else:
        print(
            f"no config file found ({source.absolute()} does not exist and ${CONFIG_PATH_ENV} is not set): "
            f"the built-in defaults apply{with_overrides}"
        )
        print(f"config OK: built-in defaults{with_overrides}")
    return 0


def dashboard(path: str | None, output: str | None, check: bool) -> int:
    """Render the Digital twin dashboard from the config file's model (twinpipe/dashboard.py).
    TWINPIPE__ overrides are not applied: they configure one process, while the dashboard file is
    provisioned to Grafana for the whole stack, which reads the same config.yaml."""
    from twinpipe.dashboard import OUTPUT, render

    try:
        text = render(load_config(resolve_path(path, os.environ), {}))
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    target = Path(output) if output else OUTPUT
    current = target.read_text() if target.is_file() else None
    if check:
        if current != text:
            print(f"{target} differs from the model: run python -m twinpipe dashboard", file=sys.stderr)
            return 1
        print(f"{target} matches the model")
        return 0
    if current == text:
        print(f"{target} is up to date")
        return 0
    try:
        write_replacing(target, text)
    except OSError as exc:
        print(f"cannot write the dashboard to {target}: {exc}", file=sys.stderr)
        return 1
    print(f"{target} written from the model")
    return 0


def write_replacing(target: Path, text: str) -> None:
    """Write beside `target`, then rename over it: Grafana re-reads provisioned files every 30 s
    (grafana/provisioning/dashboards/twinpipe.yml) and sees the old file or the new one, never half
    of one. Mode 0644 because Grafana reads it as another user (uid 472) than the writer (10001)."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)
    os.replace(temporary, target)


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
