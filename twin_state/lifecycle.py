"""The twin's state per device and its command journal, as pure functions: (state, evidence) → (state,
transitions). No I/O; the stage (`twin_state.stage`) feeds them commands, command events, readings and
timer ticks, and persists what they return.

State document (one per device, JSON; the words of AWS IoT's device shadow):

    {"v": 1, "device": "sim-1",
     "desired": {"heater": true}, "desired_version": 3,       # what a user asked for, not yet reported
     "reported": {"heater": false, "temperature": 21.3},      # settings the board acknowledged + readings
     "reported_version": 17,
     "delta": {"heater": true},                               # desired values reported differs from
     "metadata": {"desired": {"heater": {"time_ns": ...}}, "reported": {"temperature": {"time_ns": ...}}},
     "commands": [<journal entry>, ...],                      # oldest first: every open one, the last
                                                              # `journal_size` closed ones
     "unmatched": [<command event>, ...],                     # events seen before their command (bounded)
     "boot": {"id": "18c2f...", "time_ns": ...}}              # the boot id of its latest telemetry

Journal entry: {"id", "settings", "desired_version", "created_ns", "expires_ns", "state",
"history": [{"state", "time_ns", "by", "detail", "late"?}]}. The lifecycle is
queued → sent → delivered → written → acknowledged → applied, or expired / failed; a command only moves
forward, each state entered on evidence: queued when Kafka acknowledged the command record, sent /
delivered / written / acknowledged / failed / expired on the command event of that state (interfaces.md),
applied when the acknowledged settings equal the command's, expired also when `expires_ns` passes
before an acknowledgement (`expire`). Evidence arriving for a closed command (applied, expired, failed)
is kept in its history marked `late` and changes nothing, except that settings a board acknowledges
are always taken into `reported`: they are what the board has.

Desired settings clear themselves once reported matches. Versions only grow: `desired_version` is the
version of the last accepted command, `reported_version` counts changes of `reported`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from twinpipe import command_messages

VERSION = 1
FORWARD = ("queued", "sent", "delivered", "written", "acknowledged", "applied")
CLOSED = frozenset({"applied", "expired", "failed"})
STATES = (*FORWARD, "expired", "failed")
EVENT_STATES = frozenset(command_messages.STATES)  # the states a command event may carry
RANK = {state: rank for rank, state in enumerate(FORWARD)} | {"expired": len(FORWARD), "failed": len(FORWARD)}
MAX_UNMATCHED = 100

State = dict[str, Any]
Command = dict[str, Any]
Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Transition:
    """A command entered `state` at `time_ns`; `since_queued_s` is the time from queued (≥ 0)."""

    device: str
    id: str
    state: str
    time_ns: int
    since_queued_s: float
    settings: dict[str, Any]
    detail: str = ""


def new_state(device: str) -> State:
    return {
        "v": VERSION,
        "device": device,
        "desired": {},
        "desired_version": 0,
        "reported": {},
        "reported_version": 0,
        "delta": {},
        "metadata": {"desired": {}, "reported": {}},
        "commands": [],
        "unmatched": [],
    }


def same(a: Any, b: Any) -> bool:
    """Equal as settings: numbers within 1e-9 relative (a board echoes 2 as 2.0), else ==; a bool
    only equals a bool."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def is_open(entry: dict[str, Any]) -> bool:
    return entry["state"] not in CLOSED


def unacknowledged(entry: dict[str, Any]) -> bool:
    return RANK[entry["state"]] < RANK["acknowledged"]


def queue(
    state: State, command: Command, time_ns: int, journal_size: int = 50, detail: str = ""
) -> tuple[State, list[Transition]]:
    """Take a command Kafka acknowledged (or one read back from the command topic) into the journal as
    queued, and its settings into `desired`. A command already known, or older than the current
    desired version (one pruned from the journal), changes nothing."""
    if _entry(state, command["id"]) is not None or command["desired_version"] <= state["desired_version"]:
        return state, []
    new = copy.deepcopy(state)
    new["desired_version"] = command["desired_version"]
    for name, value in command["settings"].items():
        new["desired"][name] = value
        new["metadata"]["desired"][name] = {"time_ns": command["created_ns"]}
    entry = {
        "id": command["id"],
        "settings": dict(command["settings"]),
        "desired_version": command["desired_version"],
        "created_ns": command["created_ns"],
        "expires_ns": command["expires_ns"],
        "state": "queued",
        "history": [{"state": "queued", "time_ns": time_ns, "by": "twin_state", "detail": detail}],
    }
    new["commands"].append(entry)
    transitions = [_transition(new, entry, "queued", time_ns, detail)]
    waiting = [e for e in new["unmatched"] if e["id"] == command["id"]]
    new["unmatched"] = [e for e in new["unmatched"] if e["id"] != command["id"]]
    for event in sorted(waiting, key=lambda e: (RANK[e["state"]], e["time_ns"])):
        new, more = _apply(new, event)
        transitions += more
    _settle(new)
    _prune(new, journal_size)
    return new, transitions


def apply_event(state: State, event: Event, journal_size: int = 50) -> tuple[State, list[Transition]]:
    """Take one command event (interfaces.md: twin.command_events) into the state. Duplicates and
    events out of order change nothing beyond their first, in-order effect; an event for a command not
    (yet) in the journal waits in `unmatched` for it (the newest MAX_UNMATCHED are kept)."""
    if _entry(state, event["id"]) is None:
        if event in state["unmatched"]:
            return state, []
        new = copy.deepcopy(state)
        new["unmatched"] = [*new["unmatched"], dict(event)][-MAX_UNMATCHED:]
        if event["state"] == "acknowledged":
            _take_reported(new, event.get("reported") or {}, event["time_ns"])
            _settle(new)
        return new, []
    new, transitions = _apply(copy.deepcopy(state), event)
    _settle(new)
    _prune(new, journal_size)
    return (state, []) if new == state else (new, transitions)


def expire(state: State, now_ns: int, journal_size: int = 50) -> tuple[State, list[Transition]]:
    """Mark expired every command not acknowledged by its `expires_ns` (≤ now_ns, wall clock ns)."""
    due = [e for e in state["commands"] if is_open(e) and unacknowledged(e) and e["expires_ns"] <= now_ns]
    if not due:
        return state, []
    new = copy.deepcopy(state)
    transitions = []
    for entry in new["commands"]:
        if is_open(entry) and unacknowledged(entry) and entry["expires_ns"] <= now_ns:
            detail = f"not acknowledged before expires_ns {entry['expires_ns']}; last state {entry['state']}"
            transitions.append(_enter(new, entry, "expired", now_ns, "twin_state", detail))
    _prune(new, journal_size)
    return new, transitions


def apply_readings(state: State, values: dict[str, float], time_ns: int) -> State:
    """Take a device's readings (an envelope's values at event time `time_ns`) into `reported`; a
    reading older than the one held is ignored. Returns `state` itself when nothing changed."""
    times = state["metadata"]["reported"]
    newer = {k: v for k, v in values.items() if times.get(k, {}).get("time_ns", -1) < time_ns}
    if not newer:
        return state
    new = dict(state)
    new["reported"] = {**state["reported"], **newer}
    new["metadata"] = {
        "desired": state["metadata"]["desired"],
        "reported": {**times, **{k: {"time_ns": time_ns} for k in newer}},
    }
    if any(not same(state["reported"].get(k), v) or k not in state["reported"] for k, v in newer.items()):
        new["reported_version"] = state["reported_version"] + 1
    return new


def board_restart(
    state: State, boot: str, time_ns: int, setting_names: set[str]
) -> tuple[State, dict[str, Any]]:
    """Note the `boot` id of a device's telemetry (twinpipe.envelope: a new one at every publisher
    start, so a simulated board's restart) read at event time `time_ns`. When it differs from the one
    held and is newer (a replayed old reading is not a restart), the board has restarted and lost its
    settings: they leave `reported` (it no longer has them), and the values it had applied are
    returned, to be sent again as a new command — except a setting an open command not yet written to
    the board (queued, sent, delivered) sets: that command brings the newer value to the restarted
    board, and re-sending the old one would write the setting twice. Returns (state, settings to
    re-send); `state` itself when nothing changed. State key: "boot": {"id", "time_ns"} (absent in
    older documents)."""
    held = state.get("boot")
    if held is not None and (held["id"] == boot or time_ns <= held["time_ns"]):
        return state, {}
    new = copy.deepcopy(state)
    new["boot"] = {"id": boot, "time_ns": time_ns}
    if held is None:
        return new, {}
    lost = {name: value for name, value in state["reported"].items() if name in setting_names}
    for name in lost:
        del new["reported"][name]
        new["metadata"]["reported"].pop(name, None)
    if lost:
        new["reported_version"] += 1
    _settle(new)
    coming = {
        name
        for entry in open_commands(state)
        if RANK[entry["state"]] < RANK["written"]
        for name in entry["settings"]
    }
    return new, {name: value for name, value in lost.items() if name not in coming}


def open_commands(state: State) -> list[dict[str, Any]]:
    return [e for e in state["commands"] if is_open(e)]


# --- internals --------------------------------------------------------------------------------------


def _entry(state: State, command_id: str) -> dict[str, Any] | None:
    return next((e for e in state["commands"] if e["id"] == command_id), None)


def _transition(state: State, entry: dict[str, Any], to: str, time_ns: int, detail: str) -> Transition:
    queued_ns = next(h["time_ns"] for h in entry["history"] if h["state"] == "queued")
    return Transition(
        state["device"],
        entry["id"],
        to,
        time_ns,
        max(0.0, (time_ns - queued_ns) / 1e9),
        entry["settings"],
        detail,
    )


def _enter(state: State, entry: dict[str, Any], to: str, time_ns: int, by: str, detail: str) -> Transition:
    entry["state"] = to
    entry["history"].append({"state": to, "time_ns": time_ns, "by": by, "detail": detail})
    return _transition(state, entry, to, time_ns, detail)


def _apply(state: State, event: Event) -> tuple[State, list[Transition]]:
    """`event` into the journal entry it names (which exists); mutates `state`, a copy."""
    entry = _entry(state, event["id"])
    assert entry is not None
    to, time_ns, by, detail = event["state"], event["time_ns"], event.get("by", ""), event.get("detail", "")
    if to == "acknowledged":
        _take_reported(state, event.get("reported") or {}, time_ns)
    if any(h["state"] == to and h["by"] == by for h in entry["history"]):
        return state, []  # a duplicate
    current = entry["state"]
    moves = (
        current not in CLOSED
        and to != "applied"
        and (RANK[to] > RANK[current] if to in FORWARD else RANK[current] < RANK["acknowledged"])
    )
    if not moves:
        record = {"state": to, "time_ns": time_ns, "by": by, "detail": detail}
        if current in CLOSED:
            record["late"] = True
        entry["history"].append(record)
        return state, []
    transitions = [_enter(state, entry, to, time_ns, by, detail)]
    if to == "acknowledged":
        reported = event.get("reported") or {}
        wrong = {k: reported.get(k) for k, v in entry["settings"].items() if not same(reported.get(k), v)}
        if wrong:
            why = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
            transitions.append(
                _enter(state, entry, "failed", time_ns, "twin_state", f"acknowledged, but reports {why}")
            )
        else:
            transitions.append(
                _enter(state, entry, "applied", time_ns, "twin_state", "reported equals desired")
            )
    return state, transitions


def _take_reported(state: State, reported: dict[str, Any], time_ns: int) -> None:
    times = state["metadata"]["reported"]
    changed = False
    for name, value in reported.items():
        if times.get(name, {}).get("time_ns", -1) >= time_ns:
            continue
        times[name] = {"time_ns": time_ns}
        if name not in state["reported"] or not same(state["reported"][name], value):
            changed = True
        state["reported"][name] = value
    if changed:
        state["reported_version"] += 1


def _settle(state: State) -> None:
    """Clear desired settings reported matches; recompute the delta."""
    for name in [
        k for k, v in state["desired"].items() if k in state["reported"] and same(state["reported"][k], v)
    ]:
        del state["desired"][name]
        state["metadata"]["desired"].pop(name, None)
    state["delta"] = {k: v for k, v in state["desired"].items() if not same(state["reported"].get(k), v)}


def _prune(state: State, journal_size: int) -> None:
    closed = [e for e in state["commands"] if not is_open(e)]
    drop = {e["id"] for e in closed[: max(0, len(closed) - journal_size)]}
    if drop:
        state["commands"] = [e for e in state["commands"] if e["id"] not in drop]
