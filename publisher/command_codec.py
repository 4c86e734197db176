"""How a command looks on the serial line, and how the board's acknowledgement is found in what it sends.

One codec per `publisher.commands.format`. `line` (the only one so far): each setting is written as
`line_template` (`SET {id} {name} {value}\\n`, a bool as 1/0) and acknowledged by a line matching
`ack_pattern` with the groups id, name and value. A binary frame format would be another class with
the same three methods (`encode`, `parse_ack`, `extractor`), chosen in `make_codec`.

Acknowledgements arrive on the same serial stream as the telemetry frames (binary or lines), so
`AckExtractor` takes them out of the byte stream before the frame decoder sees it: an ACK line is
never counted as a bad frame, and the frames around it decode as if it had not been there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from twinpipe.command_messages import Command, Setting
from twinpipe.config.publisher import CommandsConfig

MAX_POSITIONAL_CHARS = 32  # a float longer than this written positionally keeps its exponent
MAX_ACK_LINE_BYTES = 256  # a candidate ACK line longer than this is not one: its bytes go on as data


@dataclass(frozen=True, slots=True)
class Ack:
    id: str
    name: str
    value: str  # as the board wrote it


def format_value(value: Setting) -> str:
    """A setting as text for the serial line: bool → 1/0, a whole float without its `.0`, any other
    number exactly: the shortest decimal that reads back as the same double (Python's repr), written
    positionally (1e-05 → 0.00001), since a board's strtod/atof may not take an exponent. A board
    that parses the text as a double therefore holds exactly the value asked for, and its ACK of it
    (written the same way) matches. Only a number whose positional text would exceed
    `MAX_POSITIONAL_CHARS` (below 1e-12 or so, far outside any board setting) keeps repr's exponent
    (2.2e-308): still exact, and an ACK line stays under MAX_ACK_LINE_BYTES."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        positional = format(Decimal(repr(value)), "f")
        return positional if len(positional) <= MAX_POSITIONAL_CHARS else repr(value)
    return str(value)


def parse_reported(text: str, desired: Setting) -> Setting:
    """The value a board acknowledged, typed like the value asked for (`1` for a bool → True); text
    that does not read as that type is reported as the text itself, so a mismatch stays visible."""
    if isinstance(desired, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "on"):
            return True
        if lowered in ("0", "false", "off"):
            return False
        return text
    if isinstance(desired, int | float):
        try:
            number = float(text)
        except ValueError:
            return text
        if isinstance(desired, int) and number.is_integer():
            return int(number)
        return number
    return text


class LineCodec:
    def __init__(self, config: CommandsConfig) -> None:
        self._template = config.line_template
        self._ack = re.compile(config.ack_pattern)
        self._ack_start = config.ack_start.encode()

    def encode(self, command: Command) -> list[tuple[str, bytes]]:
        """One line per setting, in the command's order: [(setting name, bytes to write)]."""
        return [
            (name, self._template.format(id=command.id, name=name, value=format_value(value)).encode())
            for name, value in command.settings.items()
        ]

    def parse_ack(self, line: str) -> Ack | None:
        """An acknowledgement line (without its newline), or None when `line` is none."""
        match = self._ack.fullmatch(line.rstrip("\r"))
        if match is None:
            return None
        return Ack(match["id"], match["name"], match["value"])

    def extractor(self) -> AckExtractor:
        return AckExtractor(self._ack_start, lambda line: self.parse_ack(line) is not None)


class AckExtractor:
    """Takes ACK lines out of a serial byte stream, leaving every other byte in order.

    A candidate starts with `start` (e.g. `ACK `) and ends at the next newline; it is an ACK when
    `is_ack` accepts it, else its bytes stay in the stream. Bytes that may be the beginning of one
    (a partial `start`, or a `start` whose newline has not come yet) are held until the next read,
    or released by `idle()` (a quiet gap: the board writes an ACK line in one go).
    """

    def __init__(self, start: bytes, is_ack: Callable[[str], bool], max_line: int = MAX_ACK_LINE_BYTES):
        self._start = start
        self._is_ack = is_ack
        self._max_line = max_line
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """(the bytes for the frame decoder, the ACK lines found without their newline)."""
        buffer = self._held + data
        self._held = b""
        out = bytearray()
        acks: list[str] = []
        start, i = self._start, 0
        while True:
            j = buffer.find(start, i)
            if j < 0:
                keep = _partial_suffix(buffer, start, i)
                out += buffer[i : len(buffer) - keep]
                self._held = buffer[len(buffer) - keep :]
                break
            out += buffer[i:j]
            newline = buffer.find(b"\n", j, j + self._max_line + 1)
            if newline < 0:
                if len(buffer) - j > self._max_line:  # too long to be an ACK line
                    out += buffer[j : j + 1]
                    i = j + 1
                    continue
                self._held = buffer[j:]
                break
            line = buffer[j:newline].decode("ascii", "replace")
            if self._is_ack(line):
                acks.append(line.rstrip("\r"))
                i = newline + 1
            else:
                out += buffer[j : j + 1]
                i = j + 1
        return bytes(out), acks

    def idle(self) -> bytes:
        """A quiet gap: what was held as a possible ACK line was not one; it goes on as data."""
        held, self._held = self._held, b""
        return held

    @property
    def holding(self) -> int:
        return len(self._held)


def _partial_suffix(buffer: bytes, start: bytes, since: int) -> int:
    """How many bytes at the end of buffer[since:] are a proper prefix of `start`."""
    for size in range(min(len(start) - 1, len(buffer) - since), 0, -1):
        if buffer.endswith(start[:size]):
            return size
    return 0


def make_codec(config: CommandsConfig) -> LineCodec:
    """The codec for `publisher.commands.format`."""
    if config.format == "line":
        return LineCodec(config)
    raise ValueError(f"publisher.commands.format: {config.format!r} has no codec")
