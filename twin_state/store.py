"""The states of all devices in memory, behind one lock: the lifecycle functions applied to them, the
devices changed since the last persist, and a condition long-polling requests wait on.

No I/O here: the stage (`twin_state.stage`) feeds records in and persists what `take_dirty` returns.
Every transition and every change of a setting's desired or reported value goes to the observers
(metrics, InfluxDB), called under the lock: they must only count or enqueue.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twin_state import lifecycle
from twin_state.lifecycle import State, Transition


@dataclass(frozen=True, slots=True)
class SettingChange:
    device: str
    side: str  # "desired" or "reported"
    name: str
    value: Any
    time_ns: int


class Twin:
    def __init__(
        self,
        setting_names: Callable[[str], set[str]],
        journal_size: int = 50,
        readings_persist_s: float = 0.0,
    ) -> None:
        self.setting_names = setting_names
        self.journal_size = journal_size
        self.readings_persist_s = readings_persist_s
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.states: dict[str, State] = {}
        self._index: dict[str, str] = {}  # command id → device
        self._dirty: set[str] = set()  # to persist now: commands, events, expiry
        self._lazy: set[str] = set()  # only readings changed: persisted every readings_persist_s
        self._persisted: dict[str, float] = {}  # device → time.monotonic() of its last persist
        self.on_transitions: list[Callable[[list[Transition]], None]] = []
        self.on_settings: list[Callable[[list[SettingChange]], None]] = []

    # --- reading ---

    def state(self, device: str) -> State | None:
        with self.lock:
            return self.states.get(device)

    def command(self, command_id: str) -> dict[str, Any] | None:
        with self.lock:
            device = self._index.get(command_id)
            state = self.states.get(device) if device else None
            if state is None:
                return None
            return next((dict(e, device=device) for e in state["commands"] if e["id"] == command_id), None)

    def wait(self, command_id: str, after: str | None, timeout_s: float) -> dict[str, Any] | None:
        """The command once its state differs from `after` (at once when `after` is None or it is
        closed), or as it is when `timeout_s` passes; None for an unknown id."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while True:
                entry = self.command(command_id)
                remaining = deadline - time.monotonic()
                if entry is None or after is None or entry["state"] != after or remaining <= 0:
                    return entry
                self.changed.wait(remaining)

    def open_commands(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for state in self.states.values() for e in lifecycle.open_commands(state)]

    # --- changing ---

    def load(self, device: str, document: State | None) -> None:
        """A state read back from the state topic (None: a tombstone, the device is forgotten)."""
        with self.lock:
            old = self.states.pop(device, None)
            for entry in (old or {}).get("commands", []):
                self._index.pop(entry["id"], None)
            if document is not None:
                self.states[device] = document
                self._index.update({e["id"]: device for e in document["commands"]})

    def desired_version(self, device: str) -> int:
        with self.lock:
            state = self.states.get(device)
            return state["desired_version"] if state else 0

    def queue(self, command: dict[str, Any], time_ns: int, detail: str = "") -> list[Transition]:
        return self._change(
            command["device"],
            lambda s: lifecycle.queue(s, command, time_ns, self.journal_size, detail),
            time_ns,
        )

    def boot(self, device: str, boot: str, time_ns: int) -> dict[str, Any]:
        """Note the boot id of a device's telemetry; the settings a restarted board lost (to re-send)."""
        lost: dict[str, Any] = {}

        def step(state: State) -> tuple[State, list[Transition]]:
            new, found = lifecycle.board_restart(state, boot, time_ns, self.setting_names(device))
            lost.update(found)
            return new, []

        self._change(device, step, time_ns)
        return lost

    def event(self, event: dict[str, Any]) -> list[Transition]:
        return self._change(
            event["device"], lambda s: lifecycle.apply_event(s, event, self.journal_size), event["time_ns"]
        )

    def readings(self, device: str, values: dict[str, float], time_ns: int) -> None:
        self._change(device, lambda s: (lifecycle.apply_readings(s, values, time_ns), []), time_ns, lazy=True)

    def tick(self, now_ns: int) -> list[Transition]:
        transitions = []
        with self.lock:
            for device in list(self.states):
                transitions += self._change(
                    device, lambda s: lifecycle.expire(s, now_ns, self.journal_size), now_ns
                )
        return transitions

    def take_dirty(self, everything: bool = False) -> list[tuple[str, State]]:
        """The devices to persist, with their state documents: every one whose commands changed, and
        those whose readings alone changed once `readings_persist_s` passed since their last persist
        (or all, with `everything`). A reading not yet persisted is lost in a crash, and replaced by
        the board's next one."""
        now = time.monotonic()
        with self.lock:
            due = {
                d
                for d in self._lazy
                if everything or now - self._persisted.get(d, -math.inf) >= self.readings_persist_s
            }
            devices = sorted(self._dirty | due)
            self._dirty.clear()
            self._lazy -= due | set(devices)
            self._persisted.update((device, now) for device in devices)
            return [(device, self.states[device]) for device in devices]

    def mark_dirty(self, devices: list[str]) -> None:
        """Put devices back whose persisting failed, so the next persist retries them."""
        with self.lock:
            self._dirty.update(devices)

    def _change(
        self,
        device: str,
        step: Callable[[State], tuple[State, list[Transition]]],
        time_ns: int,
        lazy: bool = False,
    ) -> list[Transition]:
        with self.changed:
            old = self.states.get(device) or lifecycle.new_state(device)
            new, transitions = step(old)
            if new is old:
                return transitions
            self.states[device] = new
            self._index.update({e["id"]: device for e in new["commands"]})
            kept = {e["id"] for e in new["commands"]}
            for entry in old["commands"]:
                if entry["id"] not in kept:
                    self._index.pop(entry["id"], None)
            (self._lazy if lazy else self._dirty).add(device)
            changes = self._setting_changes(device, old, new, time_ns)
            if transitions:
                for observer in self.on_transitions:
                    observer(transitions)
            if changes:
                for observer in self.on_settings:
                    observer(changes)
            self.changed.notify_all()
            return transitions

    def _setting_changes(self, device: str, old: State, new: State, time_ns: int) -> list[SettingChange]:
        names = self.setting_names(device)
        changes = []
        for side in ("desired", "reported"):
            for name, value in new[side].items():
                if name in names and (name not in old[side] or not lifecycle.same(old[side][name], value)):
                    changes.append(SettingChange(device, side, name, value, time_ns))
        return changes
