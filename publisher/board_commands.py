"""What a simulated board does with a command line: apply the setting and answer like firmware would.

Shared by the in-process simulated boards (publisher.source: simulator) and the pty board
(`python -m publisher.simulate`). They understand the default line format of `publisher.commands`
(`SET <id> <name> <value>`) and answer `ACK <id> <name> <value>` (the default `ack_pattern`) with
the value they now have: a value they refuse (out of range) is answered with the value they kept,
so the twin sees reported differ from desired. A setting they do not have is not answered (the
publisher reports the command failed after its timeout); nothing but ACK lines goes back, so no
other text lands among the frames. A command id already applied is not applied again: the board
answers ACK with its current value (firmware does the same, so a command re-sent after a crash is
harmless).

Settings: `heater` (bool, 1/0) and `report_interval_s` (s, 0.1..3600).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from publisher.command_codec import format_value

SET_LINE = re.compile(r"SET (?P<id>\S+) (?P<name>\w+) (?P<value>\S+)")
REMEMBERED_IDS = 4096  # command ids a board remembers as applied (oldest forgotten first)
REPORT_INTERVAL_RANGE = (0.1, 3600.0)


@dataclass(slots=True)
class Answer:
    line: str | None  # with its newline; None: nothing to answer (a setting the board lacks)
    applied: bool  # False: a repeated id, or refused
    refusal: str | None = None  # why it was not applied, when refused


class BoardSettings:
    def __init__(self, report_interval_s: float) -> None:
        self.heater = False
        self.report_interval_s = report_interval_s
        self._applied: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.repeats = 0

    def handle(self, line: str) -> Answer | None:
        """The answer to one line from the serial port (without newline), or None for a line that is
        no command."""
        match = SET_LINE.fullmatch(line.strip())
        if match is None:
            return None
        command_id, name, text = match["id"], match["name"], match["value"]
        key = (command_id, name)
        if key in self._applied:
            self.repeats += 1
            return Answer(f"ACK {command_id} {name} {self.current(name)}\n", applied=False)
        if name not in ("heater", "report_interval_s"):
            return Answer(None, applied=False, refusal="unknown setting")
        refusal = self._apply(name, text)
        if refusal:
            return Answer(f"ACK {command_id} {name} {self.current(name)}\n", applied=False, refusal=refusal)
        self._applied[key] = None
        if len(self._applied) > REMEMBERED_IDS:
            self._applied.popitem(last=False)
        return Answer(f"ACK {command_id} {name} {self.current(name)}\n", applied=True)

    def current(self, name: str) -> str:
        if name == "heater":
            return "1" if self.heater else "0"
        return format_value(self.report_interval_s)  # exactly: 1000.125, not 1000.12

    def _apply(self, name: str, text: str) -> str | None:
        if name == "heater":
            if text not in ("0", "1"):
                return "expected 1 or 0"
            self.heater = text == "1"
            return None
        if name == "report_interval_s":
            try:
                value = float(text)
            except ValueError:
                return "not a number"
            low, high = REPORT_INTERVAL_RANGE
            if not low <= value <= high:
                return f"outside {low:g}..{high:g}"
            self.report_interval_s = value
            return None
        return "unknown setting"


def heater_offset(
    offset: float, heater_on: bool, elapsed_s: float, rise_per_s: float, max_rise: float
) -> float:
    """The temperature added by the heater after `elapsed_s` more seconds: rises at `rise_per_s`
    (Cel/s) up to `max_rise` while on, falls back to 0 at the same rate while off."""
    step = rise_per_s * max(0.0, elapsed_s)
    return min(max_rise, offset + step) if heater_on else max(0.0, offset - step)


def heats(value_name: str) -> bool:
    """Which simulated values the heater warms: temperatures."""
    return value_name == "temperature" or value_name.endswith("_temperature")
