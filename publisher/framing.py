"""Turning the bytes a board sends into readings (name → value), and readings back into bytes.

Decoders are fed whatever chunks the serial port returns and hand back, in order, one item per
frame: a reading, or a FrameError that says what was wrong with which bytes. They keep every byte
they have not decoded yet (nothing is dropped to "catch up") and resynchronise after noise.
Encoders are the inverse, used by the simulator and the tests.
"""

from __future__ import annotations

import binascii
import bisect
import functools
import json
import logging
import math
import operator
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from twinpipe.config import FrameConfig
from twinpipe.names import value_name_problem

log = logging.getLogger("publisher.framing")


class Reading(dict[str, float]):
    """name → value of one frame, and `read_ns`: the wall-clock time (ns) of the read that completed
    the frame's bytes (0 when not known, e.g. straight from a parser)."""

    __slots__ = ("read_ns",)

    def __init__(
        self, values: Mapping[str, float] | Iterable[tuple[str, float]] = (), read_ns: int = 0
    ) -> None:
        super().__init__(values)
        self.read_ns = read_ns


# What went wrong with a frame (the `kind` label of twinpipe_publisher_frame_errors_total).
FRAME_ERROR_KINDS = (
    "malformed",  # a line that does not parse (not UTF-8, not a number, missing fields, ...)
    "too_long",  # a line longer than max_line_bytes
    "noise",  # bytes skipped because they are not part of an aligned binary frame
    "incomplete",  # a line cut off when the port closed
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
    value: str | None = None  # out_of_range: the value name (datastream) outside its range


class BadFrame(ValueError):
    """Raised by the line parsers; the decoder turns it into a FrameError carrying the raw bytes."""


class Decoder(Protocol):
    def feed(self, data: bytes, read_ns: int | None = None) -> list[Reading | FrameError]: ...

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


class SkippedKeys:
    """Keys a line frame carried that `fields: []` does not take: not a finite number (`"status": "ok"`,
    `true`), or a name storage cannot hold (`device`, `time`, `_x`: twinpipe.names). The rest of the
    line is still a reading. Counted per name; a name is logged once (unstorable names as a warning,
    non-numeric ones at debug), so a board sending a status string every frame does not flood the log."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, name: str, why: str, warn: bool) -> None:
        name = name[:64]
        if name not in self.counts:
            if len(self.counts) >= 1024:  # a board sending ever new keys: count them under one entry
                name = "(other)"
            if name not in self.counts:
                (log.warning if warn else log.debug)(
                    "line frames carry key %r: %s; skipped (logged once per key)", name, why
                )
        self.counts[name] = self.counts.get(name, 0) + 1


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _select(pairs: dict[str, object], fields: list[str], skipped: SkippedKeys | None = None) -> Reading:
    """The values of `fields` (each must be there and a finite number), or with `fields == []` every key
    whose value is a finite number and whose name can be stored; other keys are skipped into `skipped`."""
    if fields:
        missing = [name for name in fields if name not in pairs]
        if missing:
            raise BadFrame(f"missing fields {missing}")
        return Reading({name: _number(name, pairs[name]) for name in fields})
    reading = Reading()
    for name, value in pairs.items():
        problem = value_name_problem(name)
        if problem is not None:
            if skipped is not None:
                skipped.add(name, f"{problem}, so its value cannot be stored", warn=True)
            continue
        number = _finite(value)
        if number is None:
            if skipped is not None:
                skipped.add(name, f"not a finite number ({value!r:.40})", warn=False)
            continue
        reading[name] = number
    if not reading:
        raise BadFrame("no numeric values with storable names in frame")
    return reading


def parse_json_line(line: str, fields: list[str], skipped: SkippedKeys | None = None) -> Reading:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadFrame(f"expected a JSON object, got {type(data).__name__}")
    return _select(data, fields, skipped)


def parse_csv_line(line: str, fields: list[str], delimiter: str) -> Reading:
    parts = [part.strip() for part in line.split(delimiter)]
    if len(parts) != len(fields):
        raise BadFrame(f"expected {len(fields)} fields, got {len(parts)}")
    return Reading({name: _number(name, text) for name, text in zip(fields, parts, strict=True)})


def parse_kv_line(line: str, fields: list[str], skipped: SkippedKeys | None = None) -> Reading:
    pairs: dict[str, object] = {}
    for token in line.replace(",", " ").replace(";", " ").split():
        name, sep, value = token.partition("=")
        if not sep:
            raise BadFrame(f"expected key=value, got {token!r:.40}")
        pairs[name.strip()] = value.strip()
    return _select(pairs, fields, skipped)


class LineDecoder:
    """Newline-delimited frames; an over-long line is reported once and skipped up to its newline."""

    def __init__(
        self,
        parse: Callable[[str], Reading],
        max_line_bytes: int,
        ranges: Mapping[str, tuple[float, float]] | None = None,
        skipped: SkippedKeys | None = None,
    ) -> None:
        self._parse = parse
        self.skipped = skipped or SkippedKeys()  # keys `fields: []` did not take, by name
        self._max = max_line_bytes
        self._ranges = [(name, low, high) for name, (low, high) in (ranges or {}).items()]
        self._buffer = bytearray()
        self._skipping = False

    def feed(self, data: bytes, read_ns: int | None = None) -> list[Reading | FrameError]:
        """`read_ns`: when `data` was read (default: now); every line it completes carries that time."""
        self._buffer += data
        now = time.time_ns() if read_ns is None else read_ns
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
            if isinstance(item, Reading):
                item.read_ns = now
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
                name,
            )
    return None


class BinaryDecoder:
    """Fixed-size frames: a sync header, then a struct layout (values, optionally a checksum last).

    A frame is published only when its alignment is proven; otherwise it is held or dropped with a
    reason, never guessed (an all-zero sync also occurs inside values). Only the frame *structure*
    selects an alignment: the sync at every frame start and, when configured, the checksum. Ranges
    never do (a real sensor can read out of range, and then a shifted alignment that happens to be in
    range would win); they only drop frames of a proven alignment. The proofs:

    * locked (the buffer starts at a proven boundary): each frame must start with the sync and be
      followed by the next frame's sync at exactly one frame length (or pass its checksum); otherwise
      it is dropped and the lock is lost. A quiet gap (`idle()`) after whole frames decodes the last
      one at once; a gap inside a frame (firmware that pauses after sending the sync) keeps the
      partial frame and the lock.
    * unlocked at a quiet gap: the frames counted back from the gap are decoded when the gap's
      alignment is the only one that fits the held bytes (every other alignment has a byte where its
      sync should be that is not the sync), or, with a checksum, when each of them passes it (and is
      not all zeros), or when the board's gaps have earned trust (`gaps_trusted()`: TRUST_GAPS gaps
      at frame boundaries while locked, none inside a frame). A gap alone proves nothing: a board may
      pause inside a frame, so a gap-delimited chunk such as `00000000 v1 v2 v3 v4 00000000` (ambient
      zeros ... the next frame's sync) is held, not decoded. Firmware assumption: a gap never falls
      inside the sync word (the sync is written in one call), so an alignment that would put a held
      gap strictly inside one of its syncs is ruled out (`_gap_inside_sync`): a 1 frame/s board whose
      last field reads 0.00 is decoded, while `... 00 00 00 00 | gap | sync ...` (two trailing 0.00
      fields) still also fits a pause right after the sync and stays held.
    * hunting without a gap (a fast board joined mid-stream): a candidate alignment is proven when the
      sync recurs at the frame period for PROOF_FRAMES frames and no other alignment fits any
      LOCK_FRAMES consecutive frames of them. Ambiguous bytes are held (up to MAX_HOLD_FRAMES frames),
      then dropped one frame at a time and reported as "ambiguous".

    Every reading carries `read_ns`, the arrival time of the read that completed its bytes, also when
    it was held while the alignment was searched for.
    """

    PROOF_FRAMES = 7  # = 2 * LOCK_FRAMES + 1: one lost byte leaves the truth LOCK_FRAMES on one side
    LOCK_FRAMES = 3
    MAX_HOLD_FRAMES = 32
    TRUST_GAPS = 3

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
        self._byteorder: Literal["big", "little"] = "little" if layout[0] == "<" else "big"
        self._buffer = bytearray()
        self._locked = False  # the buffer starts at a proven frame boundary
        # While hunting, what is already known about the buffer (reset whenever its start moves other
        # than by whole frames): frames at its start consistent with the alignment there, and where
        # another alignment's LOCK_FRAMES consecutive frames begin (-1: none known).
        self._known_frames = 0
        self._other_window = -1
        self._noise = bytearray()  # skipped bytes not yet reported: one error per run
        self._noise_size = 0
        # Arrival times: the stream position (bytes fed so far) at the end of each read, and its time.
        self._fed = 0
        self._read_ends: list[int] = []
        self._read_times: list[int] = []
        self._gaps: list[int] = []  # stream positions of quiet gaps inside the buffer
        self.gaps_inside_frames = 0  # quiet gaps seen inside a frame (the board pauses mid-frame)
        self._boundary_gaps = 0  # quiet gaps seen while locked, each at a frame boundary

    # --- pure checks ---------------------------------------------------------------------------

    def _checksum_fails(self, frame: bytes | bytearray) -> bool:
        if self._checksum is None:
            return False
        sent = int.from_bytes(frame[self._covered.stop : self._frame_len], self._byteorder)
        return self._checksum(bytes(frame[self._covered])) != sent

    def _fits(self, pos: int) -> bool:
        """Whether the frame at buffer[pos] is structurally whole: its sync, the next frame's sync (or
        its checksum). Values are not looked at: ranges never choose an alignment."""
        buf, sync, s = self._buffer, self._sync, self._sync_len
        if buf[pos : pos + s] != sync:
            return False
        if self._checksum is None:
            end = pos + self._frame_len
            return buf[end : end + s] == sync
        return not self._checksum_fails(buf[pos : pos + self._frame_len])

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
        scaled = [round(v * s, 9) for v, s in zip(values, self._scales, strict=True)]
        reading = Reading(zip(self._fields, scaled, strict=True))
        return check_ranges(reading, self._ranges, frame) or reading

    # --- feeding ---------------------------------------------------------------------------------

    def feed(self, data: bytes, read_ns: int | None = None) -> list[Reading | FrameError]:
        """`read_ns`: when `data` was read (default: now). A frame's reading carries the time of the
        read that completed its bytes."""
        if data:
            self._fed += len(data)
            self._read_ends.append(self._fed)
            self._read_times.append(time.time_ns() if read_ns is None else read_ns)
        self._buffer += data
        out: list[Reading | FrameError] = []
        self._advance(out)
        self._trim_times()
        return out

    def idle(self) -> list[Reading | FrameError]:
        """A quiet gap: when locked, the frames before it are complete; unlocked, it may prove an
        alignment (see the class docstring). It never drops bytes by itself."""
        out: list[Reading | FrameError] = []
        self._advance(out)
        if self._buffer and (not self._gaps or self._gaps[-1] != self._fed):
            self._gaps.append(self._fed)
        if self._locked:
            self._frames_before_gap(out)
        else:
            self._align_to_gap(out)
        self._report_noise(out)
        self._trim_times()
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

    def _emit(self, out: list[Reading | FrameError], pos: int) -> None:
        """The frame at buffer[pos] (alignment proven), with the arrival time of its last byte."""
        item = self.check(bytes(self._buffer[pos : pos + self._frame_len]))
        if isinstance(item, Reading):
            end = self._fed - len(self._buffer) + pos + self._frame_len
            index = bisect.bisect_left(self._read_ends, end)
            item.read_ns = self._read_times[min(index, len(self._read_times) - 1)]
        out.append(item)

    def _trim_times(self) -> None:
        """Forget the arrival times of reads whose bytes have all left the buffer, and gaps before it."""
        start = self._fed - len(self._buffer)
        while self._gaps and self._gaps[0] <= start:
            del self._gaps[0]
        drop = bisect.bisect_left(self._read_ends, start + 1) if self._read_ends else 0
        if drop > 64 or (drop and not self._buffer):
            keep = drop if self._buffer else len(self._read_ends)
            del self._read_ends[:keep], self._read_times[:keep]

    def _advance(self, out: list[Reading | FrameError]) -> None:
        while True:
            locked = self._locked
            if locked:
                self._drain_locked(out)
            else:
                self._hunt(out)
            if self._locked == locked:
                return

    def _bad_frame_size(self, pos: int) -> int:
        """How many bytes a frame at buffer[pos] that failed its sync or checksum takes with it: the
        whole frame, or up to a quiet gap inside it (what follows a gap may begin a frame: a frame cut
        short by a reset or lost bytes must not take the next frame's first bytes with it)."""
        start = self._fed - len(self._buffer) + pos
        inside = [g for g in self._gaps if start < g < start + self._frame_len]
        return inside[-1] - start if inside else self._frame_len

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
                if self._checksum is None and buf[pos + length : pos + length + s] != sync:
                    size = self._bad_frame_size(pos)
                    self._report_noise(out)
                    out.append(
                        FrameError(
                            "frame not followed by the next frame's sync (bytes lost or inserted); dropped",
                            bytes(buf[pos : pos + length + s]),
                            "unconfirmed",
                        )
                    )
                    pos += size
                    self._locked = False
                    return
                if self._noise_size:
                    self._report_noise(out)
                self._emit(out, pos)
                if self._checksum is not None and getattr(out[-1], "kind", None) == "checksum":
                    # A wrong checksum: bytes lost or changed, the next frame may not start here.
                    # An out-of-range value is the sensor's, not the alignment's: the lock stays.
                    pos += self._bad_frame_size(pos)
                    self._locked = False
                    return
                pos += length
        finally:
            del buf[:pos]

    def _run(self, start: int, end: int) -> tuple[int, bool]:
        """How many consecutive structurally whole frames the alignment at `start` has within
        buffer[:end], and whether it is still consistent there (False: a sync or checksum failed)."""
        count, pos, length = 0, start, self._frame_len
        while pos + self._needed <= end:
            if not self._fits(pos):
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
            for k in range(count):
                self._emit(out, k * length)
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
        length = self._frame_len
        end = count * length + self._needed - length
        for offset in range(1, length):
            run = 0
            for pos in range(offset + (end - offset - self._needed) // length * length, -1, -length):
                if self._fits(pos):
                    run += 1
                    if run >= self.LOCK_FRAMES:
                        self._other_window = pos
                        return True
                else:
                    run = 0
        return False

    def _frames_before_gap(self, out: list[Reading | FrameError]) -> None:
        """Locked at a gap: after draining, the buffer holds at most one frame, not yet followed by a
        sync. Whole: the gap ends it. Partial: the board pauses inside frames (or was reset, or lost
        bytes): the bytes are kept, and what follows them decides (the next sync, or a lost lock)."""
        buf, length = self._buffer, self._frame_len
        if not buf:
            return
        if len(buf) == length and buf[: self._sync_len] == self._sync:
            self._report_noise(out)
            self._emit(out, 0)
            del buf[:length]
            self._boundary_gaps += 1
            return
        self.gaps_inside_frames += 1
        if self.gaps_inside_frames == 1:
            log.info(
                "a quiet gap came %d bytes into a %d-byte frame: the board pauses inside frames, so gaps "
                "are not taken as frame boundaries (frames are confirmed by the next frame's sync)",
                len(buf),
                length,
            )

    def gaps_trusted(self) -> bool:
        """Whether this board's quiet gaps have been seen to fall at frame boundaries (TRUST_GAPS of them
        while locked) and never inside a frame. Then, after the lock is lost (noise, lost bytes), a gap
        re-aligns even where the bytes alone admit more than one alignment."""
        return self._boundary_gaps >= self.TRUST_GAPS and not self.gaps_inside_frames

    def _fits_offset(self, residue: int, begin: int) -> bool:
        """Whether frames starting at positions ≡ residue (mod frame length) fit buffer[begin:]: every
        sync byte of theirs inside it is the sync's (frames cut off at either end included), and every
        whole frame passes the checksum."""
        buf, sync, s, length = self._buffer, self._sync, self._sync_len, self._frame_len
        size = len(buf)
        pos = begin + (residue - begin) % length - length
        while pos < size:
            low, high = max(pos, begin), min(pos + s, size)
            if low < high and buf[low:high] != sync[low - pos : high - pos]:
                return False
            if pos >= begin and pos + length <= size and self._checksum_fails(buf[pos : pos + length]):
                return False
            pos += length
        return True

    def _gap_inside_sync(self, residue: int) -> bool:
        """Whether frames starting at buffer positions ≡ residue (mod frame length) would have a quiet
        gap held in the buffer (the one at its end included) strictly inside one of their sync words.
        The firmware assumption (README "alignment"): a board writes its sync in one call, so it may
        pause after the sync or between frames but never inside the sync; such an alignment is ruled out."""
        start = self._fed - len(self._buffer)
        return any(0 < (gap - start - residue) % self._frame_len < self._sync_len for gap in self._gaps)

    def _align_to_gap(self, out: list[Reading | FrameError]) -> None:
        """Unlocked at a gap: if the held bytes ended at a frame boundary, these are the frames counted
        back from the gap. Decoded only when no other alignment fits the held bytes (a board may pause
        inside frames); otherwise everything stays held and the hunt goes on."""
        buf, length, s = self._buffer, self._frame_len, self._sync_len
        first = len(buf)
        while first - length >= 0 and buf[first - length : first - length + s] == self._sync:
            first -= length
        if first == len(buf):
            return
        if self._checksum is not None:
            # A checksum proves each frame by itself (all-zero bytes excepted: some checksums of
            # zeros are zero, so zeros read at the wrong offset would pass).
            if any(
                self._checksum_fails(buf[p : p + length]) or not any(buf[p + s : p + length])
                for p in range(first, len(buf), length)
            ):
                return
        elif not self.gaps_trusted():
            residue = len(buf) % length
            if self._gap_inside_sync(residue):
                return  # the gap's own alignment breaks the firmware assumption: prove nothing
            for other in range(length):
                if other != residue and self._fits_offset(other, 0) and not self._gap_inside_sync(other):
                    return  # more than one alignment fits: the gap does not say which
        if first:
            self._skip(first)
        self._report_noise(out)
        for pos in range(0, len(buf), length):
            self._emit(out, pos)
        self._buffer.clear()
        self._forget()
        self._locked = True

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


def make_decoder(config: FrameConfig, ranges: Mapping[str, tuple[float, float]] | None = None) -> Decoder:
    """A decoder for the configured frame format; `ranges` (value name → [min, max], from the model's
    datastreams) drop frames with a value outside, counted as out_of_range."""
    if config.format == "binary":
        return BinaryDecoder(
            config.sync(),
            config.layout,
            config.fields,
            config.scales(),
            ranges,
            config.checksum,
            config.checksum_covers,
        )
    skipped = SkippedKeys()
    parsers: dict[str, Callable[[str], Reading]] = {
        "json": lambda line: parse_json_line(line, config.fields, skipped),
        "csv": lambda line: parse_csv_line(line, config.fields, config.csv_delimiter),
        "kv": lambda line: parse_kv_line(line, config.fields, skipped),
    }
    return LineDecoder(parsers[config.format], config.max_line_bytes, ranges, skipped)


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
