"""Turning the bytes a board sends into readings (name → value), and readings back into bytes.

Decoders are fed whatever chunks the serial port returns and hand back, in order, one item per
frame: a reading, or a FrameError that says what was wrong with which bytes. They keep every byte
they have not decoded yet (nothing is dropped to "catch up") and resynchronise after noise.
Encoders are the inverse, used by the simulator and the tests.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twinpipe.config import FrameConfig
from twinpipe.envelope import is_value_name

Reading = dict[str, float]


@dataclass(frozen=True, slots=True)
class FrameError:
    reason: str
    raw: bytes


class BadFrame(ValueError):
    """Raised by the line parsers; the decoder turns it into a FrameError carrying the raw bytes."""


class Decoder(Protocol):
    def feed(self, data: bytes) -> list[Reading | FrameError]: ...

    def idle(self) -> list[Reading | FrameError]: ...


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

    def __init__(self, parse: Callable[[str], Reading], max_line_bytes: int) -> None:
        self._parse = parse
        self._max = max_line_bytes
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
                            FrameError(f"line longer than {self._max} bytes", bytes(self._buffer[:64]))
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

    def _decode_line(self, raw: bytes) -> Reading | FrameError | None:
        if len(raw) > self._max:
            return FrameError(f"line longer than {self._max} bytes", raw[:64])
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return FrameError("line is not UTF-8 text", raw)
        if not line:
            return None
        try:
            return self._parse(line)
        except BadFrame as exc:
            return FrameError(str(exc), raw)


class BinaryDecoder:
    """Fixed-size frames: a sync header followed by a struct layout, each value multiplied by a scale.

    While hunting for the frame boundary (at start and after noise), a sync is trusted only once the
    next frame's sync follows it, because the sync bytes (e.g. four zeros) can occur inside values.
    Once locked, frames are decoded as soon as they are complete. A partial frame left after a quiet
    read timeout (the board reset mid-frame) is reported and dropped, which also drops the lock.
    """

    def __init__(self, sync: bytes, layout: str, fields: list[str], scales: list[float]) -> None:
        self._sync = sync
        self._struct = struct.Struct(layout)
        self._frame_len = len(sync) + self._struct.size
        self._fields = fields
        self._scale = scales
        self._buffer = bytearray()
        self._locked = False
        self._noise_run = bytearray()  # skipped bytes not yet reported: one error per run of noise

    def feed(self, data: bytes) -> list[Reading | FrameError]:
        self._buffer += data
        out: list[Reading | FrameError] = []
        sync, buf = self._sync, self._buffer
        while True:
            start = buf.find(sync)
            if start < 0:
                self._skip(max(0, len(buf) - (len(sync) - 1)))
                return out
            if start > 0:
                self._skip(start)
                continue
            needed = self._frame_len if self._locked else self._frame_len + len(sync)
            if len(buf) < needed:
                return out
            if not self._locked and buf[self._frame_len : needed] != sync:
                self._skip(1)
                continue
            self._report_noise(out)
            raw = bytes(buf[len(sync) : self._frame_len])
            del buf[: self._frame_len]
            self._locked = True
            values = self._struct.unpack(raw)
            # Rounding removes binary float noise (6012 * 0.01 = 60.120000000000005).
            out.append(
                {name: round(v * s, 9) for name, v, s in zip(self._fields, values, self._scale, strict=True)}
            )

    def idle(self) -> list[Reading | FrameError]:
        out: list[Reading | FrameError] = []
        self._report_noise(out)
        if self._buffer:
            raw = bytes(self._buffer)
            self._buffer.clear()
            self._locked = False
            out.append(
                FrameError(f"incomplete frame of {len(raw)} bytes dropped after a quiet read timeout", raw)
            )
        return out

    def _skip(self, count: int) -> None:
        """Bytes that cannot start a frame: set aside and reported as one error when the noise ends."""
        if not count:
            return
        self._noise_run += self._buffer[:count]
        del self._buffer[:count]
        self._locked = False

    def _report_noise(self, out: list[Reading | FrameError]) -> None:
        if self._noise_run:
            size = len(self._noise_run)
            out.append(
                FrameError(
                    f"skipped {size} bytes of noise while resynchronising", bytes(self._noise_run[:256])
                )
            )
            self._noise_run.clear()


def make_decoder(config: FrameConfig) -> Decoder:
    if config.format == "binary":
        return BinaryDecoder(config.sync(), config.layout, config.fields, config.scales())
    parsers: dict[str, Callable[[str], Reading]] = {
        "json": lambda line: parse_json_line(line, config.fields),
        "csv": lambda line: parse_csv_line(line, config.fields, config.csv_delimiter),
        "kv": lambda line: parse_kv_line(line, config.fields),
    }
    return LineDecoder(parsers[config.format], config.max_line_bytes)


def encode_frame(config: FrameConfig, reading: Reading) -> bytes:
    """One frame as the board would send it (the simulator writes these into a pseudo-terminal)."""
    names = config.fields or list(reading)
    if config.format == "binary":
        raw = [round(reading[name] / s) for name, s in zip(names, config.scales(), strict=True)]
        return config.sync() + struct.pack(config.layout, *raw)
    if config.format == "json":
        return json.dumps({name: reading[name] for name in names}).encode() + b"\n"
    if config.format == "csv":
        return config.csv_delimiter.join(repr(reading[name]) for name in names).encode() + b"\n"
    return " ".join(f"{name}={reading[name]!r}" for name in names).encode() + b"\n"
