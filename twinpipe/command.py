"""`python -m twinpipe command DEVICE set NAME=VALUE ...`: set desired settings through the twin state
API (twin_state/README.md) and print the command's lifecycle as it advances.

Values are read the way a person types them: on/off/true/false are booleans, numbers are numbers,
anything else is a string (an enum value); the API checks them against the model and answers with
the reason when one does not fit. Exit status: 0 once the command is queued (or, with --wait,
applied); 1 when it expired or failed, or the API refused it; 2 for usage and connection errors.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CLOSED = ("applied", "expired", "failed")
_BOOLS = {"on": True, "true": True, "off": False, "false": False}


class CommandError(Exception):
    """Why the command could not be sent or followed; `status` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """["heater=on", "report_interval_s=2"] → {"heater": True, "report_interval_s": 2}."""
    settings: dict[str, Any] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        if not sep or not name or not raw:
            raise CommandError(f"{text!r}: expected NAME=VALUE, e.g. heater=on or report_interval_s=2")
        if name in settings:
            raise CommandError(f"{text!r}: {name} is given twice; a command sets each setting once")
        settings[name] = parse_value(raw)
    return settings


def parse_value(raw: str) -> bool | int | float | str:
    if raw.lower() in _BOOLS:
        return _BOOLS[raw.lower()]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def request(method: str, url: str, token: str | None = None, body: Any = None, timeout_s: float = 30) -> Any:
    """The JSON answer of the API; CommandError with the API's reason for an error status."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, method=method, headers=headers), timeout=timeout_s
        ) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        raise CommandError(f"{method} {url}: HTTP {exc.code}: {reason(exc.read())}", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(f"{method} {url}: cannot reach the twin state API: {exc}") from None


def reason(body: bytes) -> str:
    """FastAPI's error detail as one line: a string, or each {"loc", "msg"} as `name: msg`."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")[:300]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])[-1:]))}: {d.get('msg')}" for d in detail)
    return str(detail)


def describe(entry: dict[str, Any]) -> str:
    last = entry["history"][-1] if entry.get("history") else {"state": entry["state"]}
    return describe_step(entry["id"], last)


def describe_step(command_id: str, step: dict[str, Any]) -> str:
    """One journal history item as a line: `HH:MM:SS ID STATE [by WHO] [(DETAIL)] [late]`, its time
    the item's own (time_ns, local time) when it has one."""
    detail = f" ({step['detail']})" if step.get("detail") else ""
    by = f" by {step['by']}" if step.get("by") else ""
    late = " late" if step.get("late") else ""
    at = time.localtime(step["time_ns"] / 1e9) if step.get("time_ns") else None
    return f"{time.strftime('%H:%M:%S', at)} {command_id} {step['state']}{by}{detail}{late}"


def new_steps(entry: dict[str, Any], shown: int) -> list[str]:
    """Lines for the history items after the first `shown` (the journal only appends)."""
    return [describe_step(entry["id"], step) for step in entry.get("history", [])[shown:]]


def run(
    url: str,
    token: str | None,
    device: str,
    settings: dict[str, Any],
    wait: bool,
    expires_in_s: float | None,
    wait_s: float = 20,
    out: Any = sys.stdout,
) -> int:
    body: dict[str, Any] = {"settings": settings}
    if expires_in_s is not None:
        body["expires_in_s"] = expires_in_s
    base = url.rstrip("/")
    answer = request("PATCH", f"{base}/things/{urllib.parse.quote(device, safe='')}/desired", token, body)
    entry = answer["command"]
    if not wait:
        print(describe(entry), file=out, flush=True)
    shown = 0
    while wait:
        # Every state the journal passed, each once: several may pass between two answers.
        for line in new_steps(entry, shown):
            print(line, file=out, flush=True)
        shown = len(entry.get("history", []))
        if entry["state"] in CLOSED:
            break
        query = urllib.parse.urlencode({"wait_s": wait_s, "after": entry["state"]})
        entry = request("GET", f"{base}/commands/{entry['id']}?{query}", timeout_s=wait_s + 30)
    if entry["state"] in ("expired", "failed"):
        return 1
    return 0


def read_token(token_file: str | None, configured: str | None) -> str | None:
    if token_file:
        try:
            return Path(token_file).read_text().strip()
        except OSError as exc:
            raise CommandError(f"--token-file {token_file}: {exc.strerror}") from None
    return configured
