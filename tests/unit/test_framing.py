from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publisher.framing import BinaryDecoder, FrameError, encode_frame, make_decoder
from twinpipe.config import NUCLEO_FIELDS, FrameConfig

NUCLEO = FrameConfig()  # the shipped default is the original Nucleo frame


def nucleo_frame(*raw: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">6h", *raw)


def readings(items: list) -> list[dict[str, float]]:
    return [item for item in items if not isinstance(item, FrameError)]


def errors(items: list) -> list[FrameError]:
    return [item for item in items if isinstance(item, FrameError)]


def test_nucleo_binary_frame_is_decoded_big_endian_divided_by_100() -> None:
    decoder = make_decoder(NUCLEO)
    first, second = (
        nucleo_frame(2450, 6012, 2301, 5500, -150, 4999),
        nucleo_frame(2451, 6013, 2302, 5501, 0, 5000),
    )
    # Hunting at start: the first frame is confirmed by the sync of the next one.
    assert decoder.feed(first) == []
    out = decoder.feed(second)  # confirms the first; locked, so the complete second follows at once
    assert out[0] == dict(zip(NUCLEO_FIELDS, [24.5, 60.12, 23.01, 55.0, -1.5, 49.99], strict=True))
    assert [r["ambient_temperature"] for r in out] == [24.5, 24.51]
    # Locked now: the next frame is decoded as soon as it is complete, one byte at a time.
    third = nucleo_frame(1, 2, 3, 4, 5, 6)
    got = [item for byte in third for item in decoder.feed(bytes([byte]))]
    assert readings(got)[0]["wall2_humidity"] == pytest.approx(0.06)
    assert decoder.feed(b"") == [] and len(readings(got)) == 1


def test_resync_after_garbage_loses_no_later_frame() -> None:
    decoder = make_decoder(NUCLEO)
    frames = [nucleo_frame(i, i + 1, 0, 0, 0, 0) for i in range(1, 6)]  # zeros inside values too
    stream = (
        b"\x07\x00\x00\x13garbage"
        + frames[0]
        + frames[1]
        + b"\xff\x00\x00\xfe"
        + frames[2]
        + frames[3]
        + frames[4]
    )
    out = decoder.feed(stream) + decoder.feed(nucleo_frame(99, 0, 0, 0, 0, 0))
    assert [r["ambient_temperature"] for r in readings(out)] == [0.01, 0.02, 0.03, 0.04, 0.05, 0.99]
    assert all("noise" in e.reason for e in errors(out))
    assert sum(len(e.raw) for e in errors(out)) >= len(b"\x07\x00\x00\x13garbage")


def test_frame_split_across_reads_and_partial_frame_on_timeout() -> None:
    decoder = make_decoder(NUCLEO)
    stream = b"".join(nucleo_frame(i, 0, 0, 0, 0, 0) for i in range(1, 4))
    out = []
    for start in range(0, len(stream), 5):
        out += decoder.feed(stream[start : start + 5])
    assert [r["ambient_temperature"] for r in readings(out)] == [0.01, 0.02, 0.03]
    assert decoder.feed(nucleo_frame(4, 0, 0, 0, 0, 0)[:7]) == []
    dropped = decoder.idle()
    assert len(dropped) == 1 and "incomplete frame" in dropped[0].reason


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_binary_decoder_never_raises_and_keeps_bytes(noise: bytes, chunk: int) -> None:
    decoder = BinaryDecoder(b"\x00\x00\x00\x00", ">6h", NUCLEO_FIELDS, [0.01] * 6)
    tail = b"".join(nucleo_frame(i, 2, 3, 4, 5, 6) for i in range(1, 4))
    stream = noise + tail
    out = []
    for start in range(0, len(stream), chunk):
        out += decoder.feed(stream[start : start + chunk])
    # Whatever the noise, frames after it are decoded (only the very last may still await confirmation).
    assert 0.02 in [r["ambient_temperature"] for r in readings(out)]


LINE_CASES = [
    ("json", {"fields": ["t", "h"]}, b'{"t": 21.5, "h": 40, "x": 1}\n', {"t": 21.5, "h": 40.0}),
    ("json", {"fields": []}, b'{"t": 21.5}\r\n', {"t": 21.5}),
    ("csv", {"fields": ["t", "h"]}, b"21.5, 40\n", {"t": 21.5, "h": 40.0}),
    ("csv", {"fields": ["t", "h"], "csv_delimiter": ";"}, b"21.5;40\n", {"t": 21.5, "h": 40.0}),
    ("kv", {"fields": []}, b"t=21.5 h=40\n", {"t": 21.5, "h": 40.0}),
    ("kv", {"fields": ["t"]}, b"t=21.5,h=40\n", {"t": 21.5}),
]


@pytest.mark.parametrize(("fmt", "extra", "line", "expected"), LINE_CASES)
def test_line_formats(fmt: str, extra: dict, line: bytes, expected: dict) -> None:
    decoder = make_decoder(FrameConfig(format=fmt, **extra))
    assert decoder.feed(line[:3]) == []
    assert decoder.feed(line[3:]) == [expected]


@pytest.mark.parametrize(
    ("fmt", "line", "reason"),
    [
        ("csv", b"1,2,3\n", "expected 2 fields, got 3"),
        ("csv", b"1,abc\n", "h: expected a number"),
        ("csv", b"1,nan\n", "h: non-finite"),
        ("csv", b"1,inf\n", "h: non-finite"),
        ("json", b"{oops\n", "not JSON"),
        ("json", b'{"t": 1}\n', "missing fields ['h']"),
        ("json", b'{"t": 1, "h": "x"}\n', "h: expected a number"),
        ("json", b"[1]\n", "expected a JSON object"),
        ("kv", b"t=1 h\n", "expected key=value"),
        ("csv", b"\xff\xfe,1\n", "not UTF-8"),
    ],
)
def test_bad_lines_are_reported_and_the_next_line_still_decodes(fmt: str, line: bytes, reason: str) -> None:
    decoder = make_decoder(FrameConfig(format=fmt, fields=["t", "h"]))
    out = decoder.feed(
        line + b"5,6\n"
        if fmt == "csv"
        else line + b'{"t":5,"h":6}\n'
        if fmt == "json"
        else line + b"t=5 h=6\n"
    )
    assert reason in errors(out)[0].reason
    assert errors(out)[0].raw == line.rstrip(b"\n")
    assert readings(out) == [{"t": 5.0, "h": 6.0}]


def test_over_long_line_is_reported_once_and_skipped() -> None:
    decoder = make_decoder(FrameConfig(format="csv", fields=["t"], max_line_bytes=16))
    out = decoder.feed(b"9" * 40) + decoder.feed(b"9" * 40 + b"\n1.5\n")
    assert len(errors(out)) == 1 and "longer than 16" in errors(out)[0].reason
    assert readings(out) == [{"t": 1.5}]


@pytest.mark.parametrize("fmt", ["binary", "json", "csv", "kv"])
def test_encode_then_decode_round_trips(fmt: str) -> None:
    config = FrameConfig(format=fmt)
    reading = dict(zip(NUCLEO_FIELDS, [24.5, 60.12, -3.0, 55.0, 1.25, 49.99], strict=True))
    decoder = make_decoder(config)
    out = decoder.feed(encode_frame(config, reading) * 3)
    assert readings(out)[0] == pytest.approx(reading)


@pytest.mark.parametrize("fmt", ["json", "csv", "kv"])
@given(data=st.binary(max_size=400))
def test_line_decoders_never_raise(fmt: str, data: bytes) -> None:
    decoder = make_decoder(FrameConfig(format=fmt, fields=["t", "h"], max_line_bytes=64))
    for item in decoder.feed(data) + decoder.feed(b"\n"):
        assert isinstance(item, FrameError) or set(item) == {"t", "h"}


@pytest.mark.parametrize("chunk", [1, 3, 5, 7, 15, 16, 17, 40, 4096])
def test_every_frame_around_noise_survives_any_read_size(chunk: int) -> None:
    noise = b"\xff\xfe#noise#\x01\x02"
    frames = [nucleo_frame(i, 2, 3, 4, 5, 6) for i in range(1, 61)]
    stream = b"".join(frame + (noise if i % 10 == 4 else b"") for i, frame in enumerate(frames))
    decoder = make_decoder(NUCLEO)
    out = [
        item for start in range(0, len(stream), chunk) for item in decoder.feed(stream[start : start + chunk])
    ]
    out += decoder.idle()
    assert [round(r["ambient_temperature"] * 100) for r in readings(out)] == list(range(1, 61))
    assert [e.reason for e in errors(out)] == ["skipped 11 bytes of noise while resynchronising"] * 6
