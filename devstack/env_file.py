"""`python3 devstack/env_file.py COMMAND ENV_FILE ...`: the Makefile's handling of compose's `.env`.

Standard library only (runs before the virtualenv exists). Commands:

* `complete ENV_FILE EXAMPLE DOCKER`: create ENV_FILE from EXAMPLE, or complete it: keys it lacks
  are appended with EXAMPLE's values; secrets that are empty get a random 48-hex-digit value (the
  file is then made mode 600). A value is empty when nothing is left after stripping blanks, `\\r`
  and one pair of surrounding quotes (`""`, `''`, ` `); `export KEY=value` lines count as KEY.
  CRLF line endings are converted to LF (and said so). Refuses (exit 1, file untouched) to invent
  an init-once secret while the volume it initialised exists (`DOCKER volume inspect
  <project>_<volume>`), the project being COMPOSE_PROJECT_NAME from the environment, else from
  ENV_FILE, else `twinpipe` (docker-compose.yml's `name:`), as compose resolves it.
* `project ENV_FILE`: print that project name.
* `get ENV_FILE KEY DEFAULT`: print KEY's value (environment first, as compose does), else DEFAULT.
* `hashes ENV_FILE`: print `<KEY>_SHA256=<hex>` for each secret, shell-quoted, for `env` in `make up`:
  docker-compose.yml puts them in labels of the services that use the secret, so a changed secret
  changes the service's config and compose recreates it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

SECRET_KEYS = (
    "INFLUXDB_TOKEN",
    "INFLUXDB_ADMIN_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "MQTT_PASSWORD",
    "MQTT_BRIDGE_PASSWORD",
    "TWIN_STATE_TOKEN",
)
# Used by InfluxDB and Grafana only when their volume is first initialised: a new value later would
# not match what they stored, so an empty one is refused while that volume exists.
INIT_ONCE = {
    "INFLUXDB_TOKEN": "influxdb-data",
    "INFLUXDB_ADMIN_PASSWORD": "influxdb-data",
    "GRAFANA_ADMIN_PASSWORD": "grafana-data",
}
LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def unquote(raw: str) -> str:
    """The value of `KEY=raw` without surrounding blanks, `\\r` and one pair of matching quotes."""
    value = raw.strip(" \t\r")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def is_empty(raw: str) -> bool:
    return unquote(raw).strip(" \t\r") == ""


def entries(lines: list[str]) -> dict[str, tuple[int, str]]:
    """Key → (index of its last line, raw value): the last one wins, as in compose."""
    found: dict[str, tuple[int, str]] = {}
    for index, line in enumerate(lines):
        match = LINE.match(line)
        if match:
            found[match.group(1)] = (index, match.group(2))
    return found


def read(path: Path) -> str:
    """The file's text as it is, `\r` included (read_text would translate CRLF)."""
    return path.read_bytes().decode()


def read_lines(path: Path) -> list[str]:
    return read(path).split("\n") if path.exists() else []


def project(path: Path) -> str:
    if os.environ.get("COMPOSE_PROJECT_NAME"):
        return os.environ["COMPOSE_PROJECT_NAME"]
    found = entries(read_lines(path)).get("COMPOSE_PROJECT_NAME")
    return unquote(found[1]) if found and not is_empty(found[1]) else "twinpipe"


def value(path: Path, key: str) -> str:
    if key in os.environ:
        return os.environ[key]
    found = entries(read_lines(path)).get(key)
    return unquote(found[1]) if found else ""


def complete(path: Path, example: Path, docker: str) -> int:
    created = not path.exists()
    original = read(example) if created else read(path)
    text = original
    messages = [f"created {path}"] if created else []
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
        messages.append(f"{path}: converted its CRLF (Windows) line endings to LF")
    lines = text.split("\n")
    have = entries(lines)
    missing = [(key, raw) for key, (_, raw) in entries(read(example).split("\n")).items() if key not in have]
    name = project(path)
    for key, volume in INIT_ONCE.items():
        raw = have[key][1] if key in have else dict(missing).get(key, "")
        if is_empty(raw) and os.environ.get(key, "") == "":
            volume_name = f"{name}_{volume}"
            inspect = subprocess.run(
                [*shlex.split(docker), "volume", "inspect", volume_name], capture_output=True
            )
            if inspect.returncode == 0:
                print(
                    f"{path}: {key} is empty, but the volume {volume_name} was initialised with a value: "
                    "put that value back, or remove the volume (its data is lost) to start afresh",
                    file=sys.stderr,
                )
                return 1
    if missing:
        messages.append(
            f"{path}: added the keys it lacked, with the defaults of {example.name}: "
            + " ".join(key for key, _ in missing)
        )
        if lines and lines[-1] != "":
            lines.append("")
        lines[-1:] = [f"{key}={raw}" for key, raw in missing] + [""]
    filled = []
    for key in SECRET_KEYS:
        index, raw = entries(lines)[key]
        if is_empty(raw):
            prefix = lines[index][: lines[index].index("=") + 1]
            lines[index] = prefix + secrets.token_hex(24)
            filled.append(key)
    new_text = "\n".join(lines)
    if new_text != original or created:
        path.write_bytes(new_text.encode())
    if filled or created:
        path.chmod(0o600)
    messages += [f"{path}: filled the empty {key} with a random value" for key in filled]
    for message in messages:
        print(message)
    return 0


def hashes(path: Path) -> str:
    return " ".join(
        f"{key}_SHA256={hashlib.sha256(value(path, key).encode()).hexdigest()[:16]}" for key in SECRET_KEYS
    )


def main(argv: list[str]) -> int:
    command, path = argv[0], Path(argv[1])
    if command == "complete":
        return complete(path, Path(argv[2]), argv[3])
    if command == "project":
        print(project(path))
    elif command == "get":
        print(value(path, argv[2]) or argv[3])
    elif command == "hashes":
        print(hashes(path))
    else:
        print(f"unknown command {command!r}: complete, project, get or hashes", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
