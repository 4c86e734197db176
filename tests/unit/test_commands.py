"""Pure parts of the way down: command shapes, expiry arithmetic, the serial codec and ACK extraction,
the simulated board's answers, and the publisher's command runner with a fake board and MQTT."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_kafka_bridge.downlink import message_properties, puback_outcome
from publisher.board_commands import BoardSettings, heater_offset
from publisher.command_codec import AckExtractor, LineCodec, format_value, parse_reported
from publisher.commands import CommandRunner
from twinpipe.command_messages import (
    MAX_MESSAGE_EXPIRY_S,
    Command,
    CommandError,
    CommandEvent,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    remaining_s,
)
from twinpipe.config import ConfigError, parse_config
from twinpipe.config.publisher import CommandsConfig

NS = 1_000_000_000
ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True)
values = st.one_of(
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(-1e15, 1e15, allow_nan=False, allow_infinity=False),
    st.from_regex(r"[!-~]{1,64}", fullmatch=True),
)
int64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    created = draw(st.integers(0, 2**62))
    return Command(
        id=draw(ids),
        device=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
        settings=draw(st.dictionaries(names, values, min_size=1, max_size=4)),
        desired_version=draw(int64),
        created_ns=created,
        expires_ns=created + draw(st.integers(0, 2**63 - 1 - created)),  # within int64
    )


@given(st.integers(-(2**63), 2**63), st.integers(-(2**63), 2**63))
def test_message_expiry_is_the_remaining_life_rounded_up_and_zero_once_expired(
    expires: int, now: int
) -> None:
    interval = remaining_s(expires, now)
    left = expires - now
    if left <= 0:
        assert interval == 0
    elif interval < MAX_MESSAGE_EXPIRY_S:
        assert (interval - 1) * NS < left <= interval * NS, "rounded up to whole seconds"
    else:
        assert interval == MAX_MESSAGE_EXPIRY_S and left > (MAX_MESSAGE_EXPIRY_S - 1) * NS


def test_message_expiry_examples() -> None:
    assert remaining_s(10 * NS, 10 * NS) == 0  # expired at its expires_ns
    assert remaining_s(10 * NS + 1, 10 * NS) == 1  # 1 ns left: 1 s, never 0 ("now")
    assert remaining_s(15 * NS, 10 * NS) == 5


@given(commands())
def test_a_command_survives_the_wire_unchanged(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


@given(
    st.binary(max_size=300) | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.text(), values))
)
def test_any_payload_is_a_command_or_a_command_error(payload: bytes) -> None:
    try:
        decode_command(payload)
    except CommandError as exc:
        assert str(exc)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "version v=2"),
        ({"id": "a b"}, "id: expected a command id"),
        ({"device": "_probe"}, "device: '_probe' is not a device id"),
        ({"settings": {}}, "settings: expected a non-empty object"),
        ({"settings": {"heater": float("nan")}}, "settings.heater: nan is not a finite number"),
        ({"settings": {"mode": "two words"}}, "settings.mode: expected a number, a bool or text"),
        ({"expires_ns": 1}, "expires_ns 1 is before created_ns"),
        ({"desired_version": True}, "desired_version: expected an integer"),
    ],
)
def test_an_invalid_command_names_the_key(change: dict[str, Any], reason: str) -> None:
    document = {
        "v": 1, "id": "abc", "device": "nucleo-1", "settings": {"heater": True},
        "desired_version": 3, "created_ns": 10, "expires_ns": 20,
    }  # fmt: skip
    with pytest.raises(CommandError, match=re.escape(reason)):
        decode_command(json.dumps({**document, **change}).encode())


@given(
    ids,
    st.sampled_from(["sent", "delivered", "written", "acknowledged", "failed", "expired"]),
    st.sampled_from(["bridge", "publisher"]),
    st.text(max_size=40),
    st.dictionaries(names, values, min_size=1, max_size=3),
    int64,
)
def test_a_command_event_survives_the_wire(
    command_id: str, state: str, by: str, detail: str, reported: dict[str, Any], time_ns: int
) -> None:
    event = CommandEvent(
        command_id, "sim-1", state, time_ns, by, detail, reported if state == "acknowledged" else None
    )
    assert decode_event(encode_event(event)) == event


def test_an_acknowledged_event_must_say_what_the_board_reports() -> None:
    event = {"v": 1, "id": "a", "device": "d", "state": "acknowledged", "time_ns": 1, "by": "publisher"}
    with pytest.raises(CommandError, match="reported: an acknowledged event carries"):
        decode_event(json.dumps(event).encode())


@given(values)
def test_a_value_written_to_the_board_reads_back_as_the_same_value(value: Any) -> None:
    text = format_value(value)
    assert " " not in text and "\n" not in text
    assert parse_reported(text, value) == value
    assert type(parse_reported(text, value)) is type(value)


@given(commands())
def test_each_setting_is_one_line_that_an_ack_of_it_matches(command: Command) -> None:
    codec = LineCodec(CommandsConfig())
    lines = codec.encode(command)
    assert [name for name, _ in lines] == list(command.settings)
    for name, line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        verb, command_id, setting, value = line.decode().split()
        assert (verb, command_id, setting) == ("SET", command.id, name)
        ack = codec.parse_ack(f"ACK {command_id} {setting} {value}\r")
        assert ack is not None and (ack.id, ack.name, ack.value) == (command.id, name, value)
    assert codec.parse_ack("SET a b 1") is None


ack_lines = st.builds(lambda i, n, v: f"ACK {i} {n} {format_value(v)}", ids, names, values)


@settings(max_examples=150)
@given(
    st.lists(st.tuples(st.binary(max_size=40), st.lists(ack_lines, max_size=2)), max_size=8),
    st.lists(st.integers(1, 64), min_size=1, max_size=20),
)
def test_ack_lines_leave_the_serial_stream_and_every_other_byte_stays_in_order(
    pieces: list[tuple[bytes, list[str]]], cuts: list[int]
) -> None:
    """Binary frames (any bytes, the all-zero sync included) with ACK lines between them, read in
    arbitrary chunks: the decoder gets exactly the frame bytes, the runner exactly the ACK lines."""
    data = b"".join(chunk for chunk, _ in pieces)
    if b"ACK " in data:
        return  # a frame that holds the ACK marker itself is covered below
    stream = b"".join(chunk + b"".join(line.encode() + b"\n" for line in lines) for chunk, lines in pieces)
    codec = LineCodec(CommandsConfig())
    extractor = codec.extractor()
    out, found, i = b"", [], 0
    for size in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        if i >= len(stream):
            break
        part, acks = extractor.feed(stream[i : i + size])
        out, found, i = out + part, found + acks, i + size
    out += extractor.idle()
    assert out == data
    assert found == [line for _, lines in pieces for line in lines]


def test_text_that_starts_like_an_ack_but_is_none_stays_in_the_stream() -> None:
    extractor = AckExtractor(b"ACK ", lambda line: re.fullmatch(r"ACK \S+ \w+ \S+", line) is not None)
    assert extractor.feed(b"\x00ACK garbage\n\x01") == (b"\x00ACK garbage\n\x01", [])
    assert extractor.feed(b"\x00\x00AC") == (b"\x00\x00", [])  # maybe the start of one: held
    assert extractor.holding == 2
    assert extractor.idle() == b"AC"  # a quiet gap: it was data
    assert extractor.feed(b"ACK " + b"x" * 300) == (b"ACK " + b"x" * 300, [])  # too long for one


def test_the_simulated_board_applies_an_id_once_and_answers_every_time() -> None:
    board = BoardSettings(report_interval_s=1.0)
    first = board.handle("SET c1 heater 1")
    assert first is not None and first.applied and first.line == "ACK c1 heater 1\n"
    board.handle("SET c2 heater 0")
    again = board.handle("SET c1 heater 1")  # re-sent after a crash: ignored, answered
    assert again is not None and not again.applied and again.line == "ACK c1 heater 0\n"
    assert board.heater is False and board.repeats == 1
    interval = board.handle("SET c3 report_interval_s 0.5")
    assert interval is not None and interval.line == "ACK c3 report_interval_s 0.5\n"
    assert board.report_interval_s == 0.5
    refused = board.handle("SET c4 report_interval_s 0.01")  # out of range: answered with what it kept
    assert refused is not None and refused.line == "ACK c4 report_interval_s 0.5\n" and not refused.applied
    assert refused.refusal == "outside 0.1..3600" and board.report_interval_s == 0.5
    unknown = board.handle("SET c5 fan 1")  # no such setting: no answer (the publisher times out)
    assert unknown is not None and unknown.line is None and unknown.refusal == "unknown setting"
    assert board.handle("hello") is None


@given(
    st.floats(0, 10),
    st.booleans(),
    st.lists(st.floats(0, 100), max_size=20),
    st.floats(0, 5),
    st.floats(0, 20),
)
def test_the_heater_offset_stays_between_zero_and_its_maximum_and_moves_the_right_way(
    start: float, on: bool, steps: list[float], rise: float, maximum: float
) -> None:
    offset = min(start, maximum)
    for elapsed in steps:
        after = heater_offset(offset, on, elapsed, rise, maximum)
        assert 0.0 <= after <= maximum
        assert after >= offset if on else after <= offset
        offset = after


def test_a_config_error_names_the_command_key_and_value() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(
            {
                "publisher": {
                    "commands": {"line_template": "SET {name} {value}\n", "ack_pattern": "^ACK (\\S+)$"}
                },
                "bridge": {"downlink": {"mqtt_command_topic": "twin/+/command"}},
            },
            {},
        )
    message = str(error.value)
    assert "publisher.commands.line_template" in message and "{id}" in message
    assert "publisher.commands.ack_pattern" in message and "named groups id, name and value" in message
    assert "bridge.downlink.mqtt_command_topic" in message


def test_puback_outcomes() -> None:
    assert puback_outcome(ReasonCode(PacketTypes.PUBACK, identifier=0), "t") == ("sent", "")
    state, detail = puback_outcome(ReasonCode(PacketTypes.PUBACK, identifier=0x10), "twin/d/command")
    assert state == "failed" and "no subscriber for twin/d/command" in detail
    state, detail = puback_outcome(ReasonCode(PacketTypes.PUBACK, identifier=0x87), "t")
    assert state == "failed" and "Not authorized" in detail
    command = Command("c", "d", {"heater": True}, 1, 0, 10 * NS + 1)
    properties = message_properties(command, "twin/d/command/events", 0)
    assert properties.MessageExpiryInterval == 11
    assert properties.CorrelationData == b"c" and properties.ResponseTopic == "twin/d/command/events"


class FakeBoard:
    """A board behind write(): unplugged until `plugged` is set; answers with the simulated board."""

    def __init__(self, answer: bool = True) -> None:
        self.plugged = threading.Event()
        self.settings = BoardSettings(1.0)
        self.written: list[bytes] = []
        self.answer = answer
        self.runner: CommandRunner | None = None

    def write(self, device: str, data: bytes) -> bool:
        if not self.plugged.is_set():
            return False
        self.written.append(data)
        for line in data.decode().splitlines():
            reply = self.settings.handle(line)
            if reply is not None and reply.line is not None and self.answer and self.runner is not None:
                self.runner.on_ack(device, reply.line.strip())
        return True


def run_commands(
    board: FakeBoard, incoming: list[Command], clock: list[int], timeout_s: float = 5.0
) -> list[tuple[str, str, Any]]:
    """Runs the runner until every command has its MQTT acknowledgement; the log of what happened:
    ("event", id, state) and ("ack", token, None), in order."""
    log: list[tuple[str, str, Any]] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def emit(event: CommandEvent, topic: str) -> None:
        assert topic == f"twin/{event.device}/command/events"
        with lock:
            log.append(("event", event.id, event.state))

    def ack(token: Any) -> None:
        with lock:
            log.append(("ack", token, None))
        done.release()

    config = CommandsConfig(ack_timeout_s=timeout_s)
    runner = CommandRunner(config, LineCodec(config), board.write, emit, ack, clock_ns=lambda: clock[0])
    board.runner = runner
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        for command in incoming:
            runner.submit(command, f"twin/{command.device}/command/events", command.id)
        for _ in incoming:
            assert done.acquire(timeout=10), log
    finally:
        stop.set()
        thread.join()
    return log


def test_the_runner_reports_each_step_and_acknowledges_the_message_after_the_outcome() -> None:
    board = FakeBoard()
    board.plugged.set()
    command = Command("c1", "nucleo-1", {"heater": True, "report_interval_s": 2}, 1, 0, 100 * NS)
    log = run_commands(board, [command], [1 * NS])
    assert log == [
        ("event", "c1", "delivered"),
        ("event", "c1", "written"),
        ("event", "c1", "acknowledged"),
        ("ack", "c1", None),
    ]
    assert board.written == [b"SET c1 heater 1\nSET c1 report_interval_s 2\n"]


def test_an_expired_command_is_reported_and_never_written_and_a_silent_board_fails() -> None:
    board = FakeBoard(answer=False)
    board.plugged.set()
    late = Command("late", "nucleo-1", {"heater": True}, 1, 0, 5 * NS)
    silent = Command("silent", "nucleo-1", {"heater": True}, 1, 0, 100 * NS)
    log = run_commands(board, [late, silent], [6 * NS], timeout_s=0.3)
    states = [(what, name, state) for what, name, state in log if what == "event"]
    assert ("event", "late", "expired") in states and ("event", "late", "written") not in states
    assert ("event", "silent", "failed") in states
    assert board.written == [b"SET silent heater 1\n"]
    assert log.index(("event", "silent", "failed")) < log.index(("ack", "silent", None))


@given(st.floats(0.1, 3600.0, allow_nan=False, allow_infinity=False))
def test_any_report_interval_in_range_is_written_so_the_boards_ack_matches_exactly(value: float) -> None:
    """Issue 15: 1000.125 was acknowledged as 1000.12 (6 significant digits) and the command failed."""
    command_line = f"SET c1 report_interval_s {format_value(value)}"
    assert "e" not in command_line.lower().split()[-1], "no exponent a board's parser may refuse"
    answer = BoardSettings(report_interval_s=1.0).handle(command_line)
    assert answer is not None and answer.applied and answer.line is not None
    acked = answer.line.split()[-1]
    assert parse_reported(acked, value) == value


def test_numbers_the_user_sent_are_written_and_acknowledged_in_full() -> None:
    for value, text in ((1000.125, "1000.125"), (12.34567, "12.34567"), (1e-5, "0.00001"), (3600.0, "3600")):
        assert format_value(value) == text
        answer = BoardSettings(report_interval_s=1.0).handle(f"SET c1 report_interval_s {text}")
        assert answer is not None and answer.line is not None
        assert answer.line.split()[-1] == (text if value >= 0.1 else "1")
