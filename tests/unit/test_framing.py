from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from publisher.framing import CHECKSUMS, BinaryDecoder, FrameError, encode_frame, make_decoder
from twinpipe.config import NUCLEO_FIELDS, ConfigError, FrameConfig, parse_config

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
    # Port just opened (start unknown): one frame alone proves nothing until a gap or more frames.
    assert decoder.feed(first) == []
    out = decoder.idle()  # the quiet gap after it: the bytes before it are whole frames
    assert out == [dict(zip(NUCLEO_FIELDS, [24.5, 60.12, 23.01, 55.0, -1.5, 49.99], strict=True))]
    # Locked: a frame is decoded as soon as the next frame's sync confirms it, one byte at a time.
    got = [
        item for byte in second + nucleo_frame(1, 2, 3, 4, 5, 6)[:4] for item in decoder.feed(bytes([byte]))
    ]
    assert [r["ambient_temperature"] for r in readings(got)] == [24.51]
    assert decoder.feed(b"") == []


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
    out = decoder.feed(encode_frame(config, reading) * 3) + decoder.idle()
    assert readings(out) == [pytest.approx(reading)] * 3


@pytest.mark.parametrize("fmt", ["json", "csv", "kv"])
@given(data=st.binary(max_size=400))
def test_line_decoders_never_raise(fmt: str, data: bytes) -> None:
    decoder = make_decoder(FrameConfig(format=fmt, fields=["t", "h"], max_line_bytes=64))
    for item in decoder.feed(data) + decoder.feed(b"\n"):
        assert isinstance(item, FrameError) or set(item) == {"t", "h"}


# --- binary framing: every frame at any rate, never a misaligned value --------------------------------

SYNC = b"\x00\x00\x00\x00"
FRAME_LEN = 16
GAP = None  # a quiet read timeout in a list of stream events


def scaled(raw: tuple[int, ...]) -> dict[str, float]:
    return {name: round(v * 0.01, 9) for name, v in zip(NUCLEO_FIELDS, raw, strict=True)}


def plain_decoder(**options: object) -> BinaryDecoder:
    """The Nucleo frame without ranges, so that any int16 value is a valid reading."""
    return BinaryDecoder(SYNC, options.pop("layout", ">6h"), NUCLEO_FIELDS, [0.01] * 6, **options)  # type: ignore[arg-type]


def run(decoder: BinaryDecoder, events: list[bytes | None]) -> list:
    out = []
    for event in events:
        out += decoder.idle() if event is None else decoder.feed(event)
    return out


def chunked(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        yield data[pos : pos + size]
        pos += size
        i += 1


def suffix_start(decoded: list[dict], sent: list[dict]) -> int:
    """The index j with decoded == sent[j:], asserting there is one (a contiguous run to the end)."""
    j = len(sent) - len(decoded)
    assert j >= 0 and decoded == sent[j:], "a decoded value differs from the frame sent at its position"
    return j


INT16 = st.one_of(st.just(0), st.sampled_from([-32768, 32767, 1, -1, 255, 256]), st.integers(-32768, 32767))
FRAME_VALUES = st.one_of(st.just((0,) * 6), st.tuples(*[INT16] * 6))


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(FRAME_VALUES, min_size=1, max_size=40),
    offset=st.integers(0, 2 * FRAME_LEN),
    gaps=st.sets(st.integers(0, 40)),
    sizes=st.lists(st.integers(1, 70), max_size=8),
)
@example(frames=[(100, 200, 300, 400, 500, 0)] * 12, offset=7, gaps=set(), sizes=[])  # 0.00 runs into sync
@example(frames=[(2500, 6000, 2400, 5500, 0, 0)] * 12, offset=3, gaps={11}, sizes=[5])  # two 0.00 fields
@example(frames=[(0,) * 6] * 5, offset=0, gaps={0, 1, 2, 3, 4}, sizes=[])
@example(frames=[(0,) * 6] * 40, offset=0, gaps=set(), sizes=[])  # all zeros: every alignment fits
def test_property_no_misaligned_value_and_every_frame_after_a_gap(
    frames: list[tuple[int, ...]], offset: int, gaps: set[int], sizes: list[int]
) -> None:
    """Any values (zeros anywhere, all-zero frames, extremes), any start offset, any read chunking, quiet
    gaps after any frames: the decoded readings are exactly the frames sent from some point on, and
    every frame after the first gap is among them (the first one too when the port opened at a
    frame boundary and a gap followed)."""
    events: list[bytes | None] = []
    buffer = b""
    for index, raw in enumerate(frames):
        buffer += nucleo_frame(*raw)[max(0, offset - index * FRAME_LEN) :]
        if index in gaps and buffer:
            events += [*chunked(buffer, sizes), GAP]  # read sizes as a serial port may return them
            buffer = b""
    events += [*chunked(buffer, sizes), GAP]  # the board stops: quiet at the end
    out = run(plain_decoder(), events)
    start = suffix_start(readings(out), [scaled(raw) for raw in frames])
    first_whole = -(-offset // FRAME_LEN)
    first_gap = min((i for i in gaps if first_whole <= i < len(frames)), default=len(frames) - 1)
    assert start <= first_gap + 1, "a frame after the first gap was not decoded"
    if offset % FRAME_LEN == 0 and first_whole <= first_gap < first_whole + BinaryDecoder.MAX_HOLD_FRAMES:
        assert start == first_whole, "the first frame after the port opened at a boundary"
    assert all(e.kind in ("noise", "ambiguous") for e in errors(out)), errors(out)


LOSSY = ">6hI"  # the Nucleo values followed by a CRC-32 of them


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(FRAME_VALUES, min_size=1, max_size=40),
    offset=st.integers(0, 40),
    gaps=st.sets(st.integers(0, 40)),
    lost=st.sets(st.integers(0, 40 * 20)),
    sizes=st.lists(st.integers(1, 70), max_size=8),
)
def test_property_lost_bytes_with_a_checksum_never_give_a_wrong_value(
    frames: list[tuple[int, ...]], offset: int, gaps: set[int], lost: set[int], sizes: list[int]
) -> None:
    """Random lost bytes too: with a CRC-32 in the frame every decoded reading is a frame that was sent,
    in order, and every frame after the first gap that follows the last loss is decoded."""
    config = FrameConfig(layout=LOSSY, checksum="crc32", ranges={})
    stream = [encode_frame(config, scaled(raw)) for raw in frames]
    length = len(stream[0])
    events: list[bytes | None] = []
    buffer = b""
    for index, frame in enumerate(stream):
        base = index * length
        buffer += bytes(b for i, b in enumerate(frame) if base + i >= offset and base + i not in lost)
        if index in gaps:
            events += list(chunked(buffer, sizes)) + [GAP]
            buffer = b""
    events += list(chunked(buffer, sizes)) + [GAP]
    out = run(make_decoder(config), events)
    sent = [scaled(raw) for raw in frames]
    decoded = readings(out)
    position = 0
    for reading in decoded:  # a subsequence of what was sent, in order
        while position < len(sent) and sent[position] != reading:
            position += 1
        assert position < len(sent), f"decoded {reading} was never sent (at this position)"
        position += 1
    damaged = max([i // length for i in lost if i < len(stream) * length] + [offset // length])
    proven_from = min((i + 1 for i in gaps if i >= damaged and i < len(frames)), default=len(frames))
    assert decoded[len(decoded) - (len(sent) - proven_from) :] == sent[proven_from:] or proven_from == len(
        sent
    )


def test_one_frame_per_second_board_gives_every_frame_the_first_included() -> None:
    """The issue's 1 frame/s board: each frame arrives alone and is followed by a quiet read timeout."""
    decoder = make_decoder(NUCLEO)
    frames = [nucleo_frame(2400 + i, 5000, 2300, 5100, 2200, 5200) for i in range(10)]
    out = run(decoder, [GAP] + [event for frame in frames for event in (frame[:5], frame[5:], GAP)])
    assert [r["ambient_temperature"] for r in readings(out)] == [24.0 + i / 100 for i in range(10)]
    assert errors(out) == []


def test_a_partial_first_frame_is_reported_as_skipped_never_as_an_incomplete_complete_frame() -> None:
    decoder = make_decoder(NUCLEO)
    frames = [nucleo_frame(2400 + i, 5000, 2300, 5100, 2200, 5200) for i in range(3)]
    out = run(decoder, [frames[0][9:], GAP, frames[1], GAP, frames[2][:10], GAP])
    assert [r["ambient_temperature"] for r in readings(out)] == [24.01]
    assert [e.kind for e in errors(out)] == ["noise", "incomplete"]
    assert "7 bytes" in errors(out)[0].reason and "10 bytes before a quiet gap" in errors(out)[1].reason


def joined_mid_stream(raw: list[tuple[int, ...]], offset: int, gap_at: int, sizes: list[int]) -> list:
    """A fast board (no quiet gaps) joined `offset` bytes in; the board pauses after frame `gap_at`."""
    stream = b"".join(nucleo_frame(*r) for r in raw)
    cut = gap_at * FRAME_LEN
    return run(
        make_decoder(NUCLEO), [*chunked(stream[offset:cut], sizes), GAP, *chunked(stream[cut:], sizes), GAP]
    )


@pytest.mark.parametrize("offset", range(0, 32, 3))
def test_last_field_zero_running_into_the_next_sync_mid_stream(offset: int) -> None:
    """`... 00 00 | 00 00 00 00 ...`: a last field of 0.00 makes a sync one and two bytes early; with
    the values in range, `0000 | 0000 f0 .. f4` is a plausible frame too. Nothing shifted is stored;
    the ambiguous frames are dropped and reported; the pause proves the alignment, and every frame
    after it is decoded."""
    raw = [(2000 + i, 5000 - i, 2100, 5100, 2200 + i, 0) for i in range(60)]
    out = joined_mid_stream(raw, offset, 40, [7, 16, 3])
    assert suffix_start(readings(out), [scaled(r) for r in raw]) <= 40
    assert {e.kind for e in errors(out)} <= {"ambiguous", "noise"}


def test_two_adjacent_zero_fields_are_a_sync_by_themselves_held_until_a_gap_proves_one() -> None:
    """Wall 2 unplugged (0.00, 0.00): `0000 A 0000` repeats, so five alignments fit a stream joined
    mid-way. Nothing is guessed: frames are held, then dropped as ambiguous; a quiet gap proves one."""
    raw = [(2000 + i, 5000, 2100, 5100, 0, 0) for i in range(100)]
    out = joined_mid_stream(raw, 5, 80, [64])
    start = suffix_start(readings(out), [scaled(r) for r in raw])
    assert 80 - BinaryDecoder.MAX_HOLD_FRAMES <= start <= 80
    ambiguous = [e for e in errors(out) if e.kind == "ambiguous"]
    assert len(ambiguous) >= 80 - BinaryDecoder.MAX_HOLD_FRAMES - 2
    assert all(len(e.raw) == FRAME_LEN for e in ambiguous)


def test_ranges_resolve_what_the_sync_alone_cannot() -> None:
    """One 0.00 field in the middle: the shifted alignments decode to values outside the ranges."""
    raw = [(2000 + i, 5000, 0, 0, 2300, 5500) for i in range(30)]
    out = joined_mid_stream(raw, 9, 30, [16])
    assert suffix_start(readings(out), [scaled(r) for r in raw]) <= 5


def test_mid_stream_start_never_stores_shifted_values() -> None:
    """The issue's run: a publisher joining a streaming board with 0.00 values in it stored 31 of 60
    points shifted. Any start offset, any read size: nothing shifted; after a pause, everything."""
    raw = [(i % 3 and 2000 + i, 0 if i % 4 else 4500, 0, 0, 2200, 0 if i % 5 else 100) for i in range(60)]
    sent = [scaled(r) for r in raw]
    for offset in range(0, 48, 5):
        for size in (1, 5, 16, 17, 64, 4096):
            out = joined_mid_stream(raw, offset, 45, [size])
            assert suffix_start(readings(out), sent) <= 45, (offset, size)


def test_noise_between_frames_costs_at_most_the_frame_before_it() -> None:
    noise = b"\xff\xfe#noise#\x01\x02"
    raw = [(100 + i, 2, 3, 4, 5, 6) for i in range(60)]
    stream = b"".join(nucleo_frame(*r) + (noise if i % 10 == 4 else b"") for i, r in enumerate(raw))
    for size in (1, 3, 7, 16, 17, 40, 4096):
        out = run(make_decoder(NUCLEO), [GAP, *chunked(stream, [size]), GAP])
        got = [round(r["ambient_temperature"] * 100) - 100 for r in readings(out)]
        lost = sorted(set(range(60)) - set(got))
        assert got == sorted(got) and lost == [4, 14, 24, 34, 44, 54], size  # the frame before each noise run
        kinds = [e.kind for e in errors(out)]
        assert kinds.count("unconfirmed") == 6 and kinds.count("noise") == 6


def test_out_of_range_values_are_dropped_and_counted_never_published() -> None:
    decoder = make_decoder(NUCLEO)
    # −327.68 °C humidity: what a misaligned frame looks like; 101 % humidity: a bad reading.
    out = run(
        decoder, [GAP, nucleo_frame(2000, -32768, 0, 0, 0, 0), GAP, nucleo_frame(2000, 10100, 0, 0, 0, 0)]
    )
    out += run(decoder, [GAP, nucleo_frame(2000, 5000, 0, 0, 0, 0), GAP])
    assert readings(out) == [scaled((2000, 5000, 0, 0, 0, 0))]
    assert [e.kind for e in errors(out)] == ["out_of_range", "out_of_range"]
    assert "ambient_humidity = -327.68 is outside its range [0, 100]" in errors(out)[0].reason
    line = make_decoder(FrameConfig(format="csv", fields=["t"], ranges={"t": (0, 50)}))
    assert [e.kind for e in errors(line.feed(b"51\n"))] == ["out_of_range"]


@pytest.mark.parametrize("algorithm", sorted(CHECKSUMS))
@pytest.mark.parametrize("covers", ["values", "frame"])
def test_checksum_frames_decode_and_a_corrupted_byte_is_dropped(algorithm: str, covers: str) -> None:
    code = {1: "B", 2: "H", 4: "I"}[CHECKSUMS[algorithm][1]]
    config = FrameConfig(layout=f">6h{code}", checksum=algorithm, checksum_covers=covers)
    values = dict(zip(NUCLEO_FIELDS, [24.5, 60.12, 23.01, 55.0, -1.5, 49.99], strict=True))
    frame = encode_frame(config, values)
    assert len(frame) == 16 + CHECKSUMS[algorithm][1]
    corrupted = frame[:6] + bytes([frame[6] ^ 0x10]) + frame[7:]
    out = run(make_decoder(config), [GAP, frame, GAP, corrupted, GAP, frame, GAP])
    assert readings(out) == [values, values]
    assert [e.kind for e in errors(out)] == ["checksum"]


def test_checksum_byte_coverage_and_order_are_as_documented() -> None:
    config = FrameConfig(layout=">6hH", checksum="crc16-xmodem")
    frame = encode_frame(config, dict(zip(NUCLEO_FIELDS, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], strict=True)))
    import binascii

    assert frame[-2:] == binascii.crc_hqx(frame[4:-2], 0).to_bytes(2, "big")  # values only, big-endian
    little = FrameConfig(layout="<6hI", checksum="crc32", checksum_covers="frame")
    import zlib

    frame = encode_frame(little, dict(zip(NUCLEO_FIELDS, [1.0] * 6, strict=True)))
    assert frame[-4:] == zlib.crc32(frame[:-4]).to_bytes(4, "little")  # sync included, little-endian


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"ranges": {"co2": [0, 5000]}}, "publisher.serial.frame: ranges: ['co2'] not in fields"),
        (
            {"ranges": {"ambient_humidity": [100, 0]}},
            "publisher.serial.frame.ranges: ambient_humidity: expected [min, max]",
        ),
        ({"checksum": "crc32"}, "layout '>6h' holds 5 values and the checksum but fields lists 6"),
        (
            {"checksum": "crc16-xmodem", "layout": ">6hI"},
            "checksum: crc16-xmodem is a 2-byte unsigned value, so the layout must end with 'H'",
        ),
        ({"checksum": "md5"}, "publisher.serial.frame.checksum: Input should be"),
        ({"format": "json", "checksum": "crc32"}, "checksum: only binary frames carry a checksum"),
    ],
)
def test_frame_config_errors_name_the_key(frame: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"publisher": {"serial": {"frame": frame}}}, {})
    assert message in str(caught.value)


def test_default_ranges_follow_the_fields() -> None:
    assert FrameConfig().ranges["ambient_humidity"] == (0.0, 100.0)
    assert FrameConfig().ranges["wall2_temperature"] == (-40.0, 125.0)
    assert FrameConfig(format="csv", fields=["t", "wall1_humidity"]).ranges == {
        "wall1_humidity": (0.0, 100.0)
    }
    assert FrameConfig(format="json", fields=[], ranges={"t": (0, 1)}).ranges == {"t": (0, 1)}


def test_decoding_keeps_up_with_far_more_than_1000_frames_per_second() -> None:
    decoder = make_decoder(NUCLEO)
    frames = b"".join(nucleo_frame(2000 + i % 500, 5000, 2100, 5100, 0, 0) for i in range(20_000))
    decoder.idle()
    began = time.perf_counter()
    count = sum(len(decoder.feed(frames[p : p + 160])) for p in range(0, len(frames), 160))
    rate = count / (time.perf_counter() - began)
    assert count == 19_999 and rate > 5_000, rate
    # Joined mid-stream, the same frames are ambiguous (wall 2 at 0.00) and stay so: hunting, holding
    # and dropping must keep up too (measured here: ~80,000 frames/s; ~1,800 before caching).
    hunting = make_decoder(NUCLEO)
    began = time.perf_counter()
    dropped = sum(len(hunting.feed(frames[p : p + 16])) for p in range(5, len(frames), 16))
    rate = 20_000 / (time.perf_counter() - began)
    assert dropped >= 19_900 and rate > 5_000, rate


def test_bytes_left_when_the_port_closes_are_reported_not_decoded() -> None:
    decoder = make_decoder(NUCLEO)
    frame = nucleo_frame(2000, 5000, 2100, 5100, 2200, 5200)
    assert run(decoder, [GAP, frame]) == []  # not confirmed yet: no next sync, no quiet gap
    closed = decoder.close()
    assert [e.kind for e in closed] == ["unconfirmed"] and closed[0].raw == frame
    line = make_decoder(FrameConfig(format="csv", fields=["t"]))
    assert line.feed(b"1.5\n2.") == [{"t": 1.5}]
    assert [(e.kind, e.raw) for e in line.close()] == [("incomplete", b"2.")]


def test_a_byte_lost_while_hunting_does_not_let_a_false_alignment_in_a_run_of_zeros_win() -> None:
    """Found by measuring (100k frames, wall 2 at 0.00, 1e-4 of the bytes lost): every published
    reading was rotated. The true alignment breaks at the lost byte, while one inside the run of
    eight zeros (`0000` + the sync) survives a one-byte shift, so it looked like the only consistent
    one. Now no alignment is proven while another fits a few consecutive frames on either side."""
    rng = random.Random(3)
    for _ in range(300):  # seeded cases like the measurement's (the old rule failed the 10th)
        pairs = [(rng.randint(2000, 3000), rng.randint(4000, 7000)) for _ in range(20)]
        raw = [(t, h, t, h, 0, 0) for t, h in pairs]  # 20-30 °C, 40-70 %; wall 2 unplugged
        sent = [scaled(r) for r in raw]
        stream = b"".join(nucleo_frame(*r) for r in raw)
        offset = rng.randint(0, 15)
        lost = rng.randint(offset, offset + 10 * FRAME_LEN)
        damaged = stream[offset:lost] + stream[lost + 1 :]
        out = run(make_decoder(NUCLEO), list(chunked(damaged, [64])))
        for reading in readings(out):
            assert reading in sent, (offset, lost, reading)
