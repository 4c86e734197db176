"""Turning the bytes a board sends into readings (name → value), and readings back into bytes.

Decoders are fed whatever chunks the serial port returns and hand back, in order, one item per
frame: a reading, or a FrameError that says what was wrong with which bytes. They keep every byte
they have not decoded yet (nothing is dropped to "catch up") and resynchronise after noise.
Encoders are the inverse, used by the simulator and the tests.
"""

from __future__ import annotations

import binascii
import functools
import json
import math
import operator
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from twinpipe.config import FrameConfig
from twinpipe.envelope import is_value_name

Reading = dict[str, float]


# What went wrong with a frame (the `kind` label of twinpipe_publisher_frame_errors_total).
FRAME_ERROR_KINDS = (
    "malformed",  # a line that does not parse (not UTF-8, not a number, missing fields, ...)
    "too_long",  # a line longer than max_line_bytes
    "noise",  # bytes skipped because they are not part of an aligned binary frame
    "incomplete",  # bytes before a quiet gap that are not whole binary frames
    "unconfirmed",  # a binary frame not followed by the next frame's sync
    "ambiguous",  # a binary frame dropped because more than one alignment fits
    "checksum",  # checksum mismatch
    "out_of_range",  # a value outside its configured range
)


@dataclass(frozen=True, slots=True)
class FrameError:
    reason: str
    raw: bytes
    kind: str = "malformed"


class BadFrame(ValueError):
    """Raised by the line parsers; the decoder turns it into a FrameError carrying the raw bytes."""


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[Reading | FrameError]: ...

    def idle(self) -> list[Reading | FrameError]: ...

    def close(self) -> list[FrameError]: ...


def _number(name: str, text: object) -> float:
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise BadFrame(f"{name}: expected a number, got {text!r:.40}")
    try:
        value = float(text)
    except (ValueError, OverflowError):
        raise BadFrame(f"{name}: expected a number, got {text!r:.40}") from None
    if not math.isfinite(value):
        raise BadFrame(f"{name}: non-finite value {text!r:.40}")
    return value


def _select(pairs: dict[str, object], fields: list[str]) -> Reading:
    if fields:
        missing = [name for name in fields if name not in pairs]
        if missing:
            raise BadFrame(f"missing fields {missing}")
        return {name: _number(name, pairs[name]) for name in fields}
    if not pairs:
        raise BadFrame("no values in frame")
    bad = [name for name in pairs if not is_value_name(name)]
    if bad:
        raise BadFrame(f"invalid value names {bad!r:.80}")
    return {name: _number(name, value) for name, value in pairs.items()}


def parse_json_line(line: str, fields: list[str]) -> Reading:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadFrame(f"expected a JSON object, got {type(data).__name__}")
    return _select(data, fields)


def parse_csv_line(line: str, fields: list[str], delimiter: str) -> Reading:
    parts = [part.strip() for part in line.split(delimiter)]
    if len(parts) != len(fields):
        raise BadFrame(f"expected {len(fields)} fields, got {len(parts)}")
    return {name: _number(name, text) for name, text in zip(fields, parts, strict=True)}


def parse_kv_line(line: str, fields: list[str]) -> Reading:
    pairs: dict[str, object] = {}
    for token in line.replace(",", " ").replace(";", " ").split():
        name, sep, value = token.partition("=")
        if not sep:
            raise BadFrame(f"expected key=value, got {token!r:.40}")
        pairs[name.strip()] = value.strip()
    return _select(pairs, fields)


class LineDecoder:
    """Newline-delimited frames; an over-long line is reported once and skipped up to its newline."""

    def __init__(
        self,
        parse: Callable[[str], Reading],
        max_line_bytes: int,
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self._parse = parse
        self._max = max_line_bytes
        self._ranges = [(name, low, high) for name, (low, high) in (ranges or {}).items()]
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Reading | FrameError]:
        self._buffer += data
        out: list[Reading | FrameError] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    if not self._skipping:
                        out.append(
                            FrameError(
                                f"line longer than {self._max} bytes", bytes(self._buffer[:64]), "too_long"
                            )
                        )
                    self._skipping = True
                    del self._buffer[:]
                return out
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            item = self._decode_line(raw)
            if item is not None:
                out.append(item)

    def idle(self) -> list[Reading | FrameError]:
        return []

    def close(self) -> list[FrameError]:
        """The port closed: a line without its newline is reported, not decoded."""
        raw, skipping = bytes(self._buffer), self._skipping
        self._buffer.clear()
        if not raw.strip() or skipping:
            return []
        return [FrameError("line cut off when the port closed", raw[:256], "incomplete")]

    def _decode_line(self, raw: bytes) -> Reading | FrameError | None:
        if len(raw) > self._max:
            return FrameError(f"line longer than {self._max} bytes", raw[:64], "too_long")
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return FrameError("line is not UTF-8 text", raw)
        if not line:
            return None
        try:
            reading = self._parse(line)
        except BadFrame as exc:
            return FrameError(str(exc), raw)
        return check_ranges(reading, self._ranges, raw) or reading


def _xor8(data: bytes) -> int:
    return functools.reduce(operator.xor, data, 0)


# Checksum algorithms for `frame.checksum`: name → (function of the covered bytes, size in bytes).
# The checksum is the layout's last item, unsigned, in the layout's byte order.
CHECKSUMS: dict[str, tuple[Callable[[bytes], int], int]] = {
    "crc16-xmodem": (lambda data: binascii.crc_hqx(data, 0), 2),  # poly 0x1021, init 0
    "crc16-ccitt-false": (lambda data: binascii.crc_hqx(data, 0xFFFF), 2),  # poly 0x1021, init 0xFFFF
    "crc32": (zlib.crc32, 4),  # IEEE 802.3 (zlib, Ethernet, PNG)
    "sum8": (lambda data: sum(data) & 0xFF, 1),  # byte sum modulo 256
    "xor8": (_xor8, 1),  # XOR of all bytes
}


def check_ranges(
    reading: Reading, ranges: Sequence[tuple[str, float, float]], raw: bytes
) -> FrameError | None:
    for name, low, high in ranges:
        value = reading.get(name)
        if value is not None and not low <= value <= high:
            return FrameError(
                f"{name} = {value:g} is outside its range [{low:g}, {high:g}] "
                "(misaligned frame or faulty sensor)",
                raw,
                "out_of_range",
            )
    return None


class BinaryDecoder:
    """Fixed-size frames: a sync header, then a struct layout (values, optionally a checksum last).

    A frame is published only when its alignment is proven; otherwise it is held or dropped with a
    reason, never guessed (an all-zero sync also occurs inside values). Evidence, strongest first:

    * a quiet gap (`idle()`, one read timeout without bytes): the bytes before it end at a frame
      boundary and the bytes after it begin one. Whatever arrived between gaps must be whole frames;
      at one frame per second every frame is proven this way when its gap comes.
    * when locked, every frame must start with the sync and be followed by the next frame's sync at
      exactly one frame length (or pass its checksum); otherwise it is dropped and the lock is lost.
    * when hunting without gaps (a fast board, joined mid-stream), a candidate alignment is proven when
      the sync recurs at the frame period for PROOF_FRAMES frames and no other alignment fits any
      LOCK_FRAMES consecutive frames of them. Ambiguous bytes are held (up to MAX_HOLD_FRAMES
      frames), then dropped one frame at a time and reported as "ambiguous".
    * per-field ranges and a checksum: a frame failing them is dropped, and an alignment whose frames
      fail them is not consistent.
    """

    PROOF_FRAMES = 7  # = 2 * LOCK_FRAMES + 1: one lost byte leaves the truth LOCK_FRAMES on one side
    LOCK_FRAMES = 3
    MAX_HOLD_FRAMES = 32

    def __init__(
        self,
        sync: bytes,
        layout: str,
        fields: list[str],
        scales: list[float],
        ranges: Mapping[str, tuple[float, float]] | None = None,
        checksum: str | None = None,
        checksum_covers: str = "values",
    ) -> None:
        self._sync = bytes(sync)
        self._sync_len = len(sync)
        self._struct = struct.Struct(layout)
        self._frame_len = self._sync_len + self._struct.size
        self._fields = fields
        self._scales = scales
        self._ranges = [(name, low, high) for name, (low, high) in (ranges or {}).items()]
        self._checksum, checksum_size = CHECKSUMS[checksum] if checksum else (None, 0)
        self._covered = slice(
            0 if checksum_covers == "frame" else self._sync_len, self._frame_len - checksum_size
        )
        # Bytes a frame needs before it can be trusted: itself and the next sync, or itself with a checksum.
        self._needed = self._frame_len if self._checksum else self._frame_len + self._sync_len
        self._buffer = bytearray()
        self._locked = False  # the buffer starts at a frame boundary
        # While hunting, what is already known about the buffer (reset whenever its start moves other
        # than by whole frames): frames at its start consistent with the alignment there, and where
        # another alignment's LOCK_FRAMES consecutive frames begin (-1: none known).
        self._known_frames = 0
        self._other_window = -1
        self._noise = bytearray()  # skipped bytes not yet reported: one error per run
        self._noise_size = 0

    # --- pure checks ---------------------------------------------------------------------------

    def check(self, frame: bytes) -> Reading | FrameError:
        """One frame (sync included) → its reading, or why it cannot be one (checksum, range)."""
        values = self._struct.unpack_from(frame, self._sync_len)
        if self._checksum is not None:
            *values, sent = values
            computed = self._checksum(frame[self._covered])
            if computed != sent:
                return FrameError(
                    f"checksum mismatch: frame carries {sent:#x}, its bytes give {computed:#x}",
                    frame,
                    "checksum",
                )
        # Rounding removes binary float noise (6012 * 0.01 = 60.120000000000005).
        reading = {
            name: round(v * s, 9) for name, v, s in zip(self._fields, values, self._scales, strict=True)
        }
        return check_ranges(reading, self._ranges, frame) or reading

    # --- feeding ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Reading | FrameError]:
        self._buffer += data
        out: list[Reading | FrameError] = []
        self._advance(out)
        return out

    def idle(self) -> list[Reading | FrameError]:
        """A quiet gap: what is buffered ends at a frame boundary, and the next byte begins a frame."""
        out: list[Reading | FrameError] = []
        self._advance(out)
        if self._locked:
            self._whole_frames_before_gap(out)
        else:
            self._align_to_gap(out)
        self._report_noise(out)
        self._buffer.clear()
        self._forget()
        self._locked = True
        return out

    def close(self) -> list[FrameError]:
        """The port closed (stop, unplug): buffered bytes are not known to end at a frame boundary."""
        out: list[Reading | FrameError] = []
        self._report_noise(out)
        if self._buffer:
            out.append(
                FrameError(
                    f"{len(self._buffer)} bytes not confirmed as frames when the port closed",
                    bytes(self._buffer[:256]),
                    "unconfirmed",
                )
            )
            self._buffer.clear()
        self._forget()
        return [item for item in out if isinstance(item, FrameError)]

    def _advance(self, out: list[Reading | FrameError]) -> None:
        while True:
            locked = self._locked
            if locked:
                self._drain_locked(out)
            else:
                self._hunt(out)
            if self._locked == locked:
                return

    def _drain_locked(self, out: list[Reading | FrameError]) -> None:
        buf, sync, s, length = self._buffer, self._sync, self._sync_len, self._frame_len
        size, pos = len(buf), 0
        try:
            while pos + s <= size:
                if buf[pos : pos + s] != sync:
                    self._locked = False
                    return
                if pos + self._needed > size:
                    return
                frame = bytes(buf[pos : pos + length])
                if self._checksum is None and buf[pos + length : pos + length + s] != sync:
                    self._report_noise(out)
                    out.append(
                        FrameError(
                            "frame not followed by the next frame's sync (bytes lost or inserted); dropped",
                            frame + bytes(buf[pos + length : pos + length + s]),
                            "unconfirmed",
                        )
                    )
                    pos += length
                    self._locked = False
                    return
                item = self.check(frame)
                self._report_noise(out)
                out.append(item)
                pos += length
                if isinstance(item, FrameError):
                    self._locked = False
                    return
        finally:
            del buf[:pos]

    def _run(self, start: int, end: int) -> tuple[int, bool]:
        """How many consecutive trusted frames the alignment at `start` has within buffer[:end], and
        whether it is still consistent there (False: a sync, checksum or range failed)."""
        buf, sync, s, length = self._buffer, self._sync, self._sync_len, self._frame_len
        count, pos = 0, start
        while pos + self._needed <= end:
            if buf[pos : pos + s] != sync:
                return count, False
            if self._checksum is None and buf[pos + length : pos + length + s] != sync:
                return count, False
            if isinstance(self.check(bytes(buf[pos : pos + length])), FrameError):
                return count, False
            count += 1
            pos += length
        return count, True

    def _hunt(self, out: list[Reading | FrameError]) -> None:
        buf, sync, length = self._buffer, self._sync, self._frame_len
        while True:
            start = buf.find(sync)
            if start < 0:
                self._skip(max(0, len(buf) - (self._sync_len - 1)))  # keep what may begin a sync
                return
            if start:
                self._skip(start)
            count, consistent = self._run(self._known_frames * length, len(buf))
            count += self._known_frames
            self._known_frames = count if consistent else 0
            if count < self.PROOF_FRAMES:
                if consistent:
                    return  # wait for more bytes
                self._skip(1)
                continue
            if self._ambiguous(count):
                if consistent and count < self.MAX_HOLD_FRAMES:
                    return  # hold until more bytes (or a gap) tell the alignments apart
                self._report_noise(out)
                out.append(
                    FrameError(
                        "more than one alignment fits these bytes (zero values look like the sync); "
                        "dropped rather than guessed",
                        bytes(buf[:length]),
                        "ambiguous",
                    )
                )
                del buf[:length]
                self._known_frames = max(0, self._known_frames - 1)
                self._other_window = max(-1, self._other_window - length)
                continue
            self._report_noise(out)
            out.extend(self.check(bytes(buf[k * length : (k + 1) * length])) for k in range(count))
            del buf[: count * length]
            self._forget()
            self._locked = True  # the buffer starts at the sync that confirmed the last frame
            return

    def _forget(self) -> None:
        self._known_frames = 0
        self._other_window = -1

    def _ambiguous(self, count: int) -> bool:
        """Whether another alignment fits LOCK_FRAMES consecutive frames anywhere among the candidate's
        `count` frames. Not only over all of them: after a byte lost among them the true alignment fits
        on one side of the loss only, while a false one inside a run of zeros may fit across it.
        Scans from the end, so that the window found stays in the buffer while frames are dropped."""
        if self._other_window >= 0:
            return True
        buf, sync, s, length = self._buffer, self._sync, self._sync_len, self._frame_len
        end = count * length + self._needed - length
        for offset in range(1, length):
            run = 0
            for pos in range(offset + (end - offset - self._needed) // length * length, -1, -length):
                if (
                    buf[pos : pos + s] == sync
                    and (self._checksum is not None or buf[pos + length : pos + length + s] == sync)
                    and not isinstance(self.check(bytes(buf[pos : pos + length])), FrameError)
                ):
                    run += 1
                    if run >= self.LOCK_FRAMES:
                        self._other_window = pos
                        return True
                else:
                    run = 0
        return False

    def _whole_frames_before_gap(self, out: list[Reading | FrameError]) -> None:
        buf, length = self._buffer, self._frame_len
        if not buf:
            return
        starts = range(0, len(buf), length)
        if len(buf) % length or any(buf[p : p + self._sync_len] != self._sync for p in starts):
            self._report_noise(out)
            out.append(
                FrameError(
                    f"{len(buf)} bytes before a quiet gap are not whole {length}-byte frames "
                    "(board reset mid-frame, or bytes lost); dropped",
                    bytes(buf[:256]),
                    "incomplete",
                )
            )
            return
        self._report_noise(out)
        out.extend(self.check(bytes(buf[p : p + length])) for p in starts)

    def _align_to_gap(self, out: list[Reading | FrameError]) -> None:
        """Unlocked at a gap: the frames ending at the gap, counted back from it, each with its sync."""
        buf, length, s = self._buffer, self._frame_len, self._sync_len
        first = len(buf)
        while first - length >= 0 and buf[first - length : first - length + s] == self._sync:
            first -= length
        if first == len(buf):
            if buf:
                self._skip(len(buf))
            return
        if first:
            self._skip(first)
        self._report_noise(out)
        out.extend(self.check(bytes(buf[p : p + length])) for p in range(0, len(buf), length))

    def _skip(self, count: int) -> None:
        """Bytes that are not part of an aligned frame: set aside, reported as one error per run."""
        if not count:
            return
        self._forget()
        self._noise += self._buffer[: max(0, min(count, 256 - len(self._noise)))]
        self._noise_size += count
        del self._buffer[:count]

    def _report_noise(self, out: list[Reading | FrameError]) -> None:
        if self._noise_size:
            out.append(
                FrameError(
                    f"skipped {self._noise_size} bytes that are not part of an aligned frame "
                    "(partial frame at start, noise, or bytes lost)",
                    bytes(self._noise),
                    "noise",
                )
            )
            self._noise.clear()
            self._noise_size = 0


def make_decoder(config: FrameConfig) -> Decoder:
    if config.format == "binary":
        return BinaryDecoder(
            config.sync(),
            config.layout,
            config.fields,
            config.scales(),
            config.ranges,
            config.checksum,
            config.checksum_covers,
        )
    parsers: dict[str, Callable[[str], Reading]] = {
        "json": lambda line: parse_json_line(line, config.fields),
        "csv": lambda line: parse_csv_line(line, config.fields, config.csv_delimiter),
        "kv": lambda line: parse_kv_line(line, config.fields),
    }
    return LineDecoder(parsers[config.format], config.max_line_bytes, config.ranges)


def encode_frame(config: FrameConfig, reading: Reading) -> bytes:
    """One frame as the board would send it (the simulator writes these into a pseudo-terminal)."""
    names = config.fields or list(reading)
    if config.format == "binary":
        raw = [round(reading[name] / s) for name, s in zip(names, config.scales(), strict=True)]
        if config.checksum is None:
            return config.sync() + struct.pack(config.layout, *raw)
        function, size = CHECKSUMS[config.checksum]
        frame = config.sync() + struct.pack(config.layout, *raw, 0)[:-size]
        covered = frame if config.checksum_covers == "frame" else frame[len(config.sync()) :]
        return frame + struct.pack(config.layout[0] + config.layout[-1], function(covered))
    if config.format == "json":
        return json.dumps({name: reading[name] for name in names}).encode() + b"\n"
    if config.format == "csv":
        return config.csv_delimiter.join(repr(reading[name]) for name in names).encode() + b"\n"
    return " ".join(f"{name}={reading[name]!r}" for name in names).encode() + b"\n"
