"""The publisher's Outbox against a model broker: a reading the broker closes the connection on is set
aside and never stalls the readings behind it; acknowledged readings are re-sent after a lost
connection, within a bounded window."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.outbox import PACKET_TOO_LARGE, Outbox, Pending, publish_packet_size, varint_size
from twinpipe.envelope import Envelope


def reading(seq: int, packet_bytes: int = 100) -> Pending:
    pending = Pending(Envelope("d1", "boot-a", seq, 1_700_000_000_000_000_000 + seq, {"t": 1.0}), None)
    pending.packet_bytes = packet_bytes
    return pending


@dataclass
class Books:
    set_aside: list[tuple[int, str]] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)

    def outbox(self, max_inflight: int, window_s: float = 0.0, window_max: int = 1000, clock=None) -> Outbox:
        extra = {"clock": clock} if clock else {}
        return Outbox(
            max_inflight,
            window_s,
            window_max,
            set_aside=lambda p, kind, _reason: self.set_aside.append((p.envelope.seq, kind)),
            finished=lambda p: self.finished.append(p.envelope.seq),
            **extra,
        )


class ModelBroker:
    """paho's queue plus a broker that closes the connection on any packet above `limit` (as
    Mosquitto does for max_packet_size and message_size_limit), acknowledging what came before it."""

    def __init__(self, outbox: Outbox, limit: int, server_reason: int | None) -> None:
        self.outbox = outbox
        self.limit = limit
        self.server_reason = server_reason
        self.queue: OrderedDict[int, Pending] = OrderedDict()  # paho's unacknowledged messages
        self.next_mid = 1
        self.connections = 1
        self.acked: list[int] = []

    def send_what_may_go(self, new: deque[Pending]) -> None:
        while True:
            pending = self.outbox.take()
            if pending is False:
                return
            if pending is None:
                if not new:
                    return
                pending = new.popleft()
            mid, self.next_mid = self.next_mid, self.next_mid + 1
            self.queue[mid] = pending
            self.outbox.sent(mid, pending, on_connection=True)

    def reconnect(self, reason: str, server_reason: int | None) -> None:
        dropped = list(self.queue)  # Client.drop_out_messages() in on_connect
        self.queue.clear()
        self.connections += 1
        self.outbox.connected(dropped, reason, server_reason)

    def step(self) -> None:
        mid, pending = self.queue.popitem(last=False)
        if pending.packet_bytes > self.limit:
            self.queue[mid] = pending
            self.queue.move_to_end(mid, last=False)
            self.reconnect("Packet too large", self.server_reason)
        else:
            self.acked.append(pending.envelope.seq)
            self.outbox.acked(mid, None)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([100, 200, 3000]), min_size=1, max_size=120),
    max_inflight=st.integers(1, 20),
    server_reason=st.sampled_from([None, PACKET_TOO_LARGE, 0x82]),
    crashes=st.lists(st.integers(0, 400), max_size=2),
)
def test_readings_the_broker_closes_the_connection_on_are_set_aside_and_the_rest_delivered(
    sizes: list[int], max_inflight: int, server_reason: int | None, crashes: list[int]
) -> None:
    books = Books()
    outbox = books.outbox(max_inflight)
    broker = ModelBroker(outbox, limit=2048, server_reason=server_reason)
    new = deque(reading(seq, size) for seq, size in enumerate(sizes))
    poisons = {seq for seq, size in enumerate(sizes) if size > 2048}
    steps = 0
    while new or broker.queue or outbox.waiting():
        broker.send_what_may_go(new)
        if steps in crashes:  # the broker killed: nothing said, nothing acknowledged in flight
            broker.reconnect("Unspecified error", None)
        elif broker.queue:
            broker.step()
        steps += 1
        assert steps < 50 * len(sizes) + 100, "stalled"
    assert {seq for seq, _ in books.set_aside} == poisons
    assert set(broker.acked) == set(range(len(sizes))) - poisons
    kinds = {kind for _, kind in books.set_aside}
    assert kinds <= {
        "too_large" if server_reason == PACKET_TOO_LARGE else "connection_lost",
        "connection_lost",
    }
    # Each poison costs one lost connection in a batch and one alone when the broker says why (three
    # alone when it does not), plus the crashes.
    per_poison = 2 if server_reason is not None else 4
    assert broker.connections - 1 <= per_poison * len(poisons) + len(crashes)


def test_the_acknowledged_window_is_resent_after_a_lost_connection_not_after_a_broker_disconnect() -> None:
    now = [0.0]
    books = Books()
    outbox = books.outbox(max_inflight=10, window_s=5.0, clock=lambda: now[0])
    broker = ModelBroker(outbox, limit=2048, server_reason=None)
    broker.send_what_may_go(deque(reading(seq) for seq in range(3)))
    for _ in range(3):
        broker.step()
    assert outbox.window() == 3 and books.finished == []
    broker.reconnect("Session taken over", 0x8E)  # the broker said it: it is alive and kept them
    assert outbox.waiting() == 0 and outbox.window() == 3
    broker.reconnect("Unspecified error", None)  # lost without a word: it may have crashed
    assert outbox.resent == 3 and outbox.window() == 0
    broker.send_what_may_go(deque())
    assert [p.envelope.seq for p in broker.queue.values()] == [0, 1, 2], "oldest first"
    for _ in range(3):
        broker.step()
    now[0] = 5.5
    outbox.expire()
    assert books.finished == [0, 1, 2] and outbox.window() == 0


def test_the_window_is_bounded_in_readings_too() -> None:
    books = Books()
    outbox = books.outbox(max_inflight=100, window_s=60.0, window_max=10, clock=lambda: 0.0)
    broker = ModelBroker(outbox, limit=2048, server_reason=None)
    broker.send_what_may_go(deque(reading(seq) for seq in range(25)))
    while broker.queue:
        broker.step()
    outbox.expire()
    assert outbox.window() == 10 and outbox.window_evicted == 15
    assert books.finished == list(range(15))


def test_a_message_taken_back_before_the_sender_registered_it_is_sent_again() -> None:
    books = Books()
    outbox = books.outbox(max_inflight=10)
    first = reading(0)
    outbox.connected([7], "Unspecified error", None)  # paho's queue held mid 7 already
    outbox.sent(7, first, on_connection=True)
    assert outbox.take() is first and outbox.inflight() == 0


def test_an_acknowledgement_before_the_sender_registered_the_message_counts() -> None:
    books = Books()
    outbox = books.outbox(max_inflight=10)
    outbox.acked(3, "Packet too large")
    outbox.sent(3, reading(0), on_connection=True)
    assert books.set_aside == [(0, "too_large")] and outbox.inflight() == 0


def test_readings_queued_by_paho_while_disconnected_count_no_loss() -> None:
    books = Books()
    outbox = books.outbox(max_inflight=10)
    pending = reading(0, packet_bytes=5000)
    outbox.take()
    outbox.sent(1, pending, on_connection=False)
    for _ in range(5):
        outbox.connected([1], "Unspecified error", None)
        assert outbox.take() is pending
        outbox.sent(1, pending, on_connection=False)
    assert pending.losses == 0 and books.set_aside == []


@given(value=st.integers(0, 268_435_455))
def test_varint_size_is_the_length_of_the_mqtt_variable_byte_integer(value: int) -> None:
    encoded = bytearray()
    while True:  # MQTT 5 §1.5.5, written out
        value, digit = value // 128, value % 128
        encoded.append(digit | (128 if value else 0))
        if not value:
            break
    assert len(encoded) == varint_size(sum((b & 127) << (7 * i) for i, b in enumerate(encoded)))


def test_publish_packet_size_counts_the_whole_packet() -> None:
    # Remaining length 2 + 17 + 2 + 1 + 2000 = 2022 (two bytes as a varint), plus the first byte.
    assert publish_packet_size(b"twin/d1/telemetry", 2000) == 1 + 2 + 2022


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(1, 150),
    autosave_s=st.sampled_from([0.3, 1.0, 2.0]),
    crashes=st.lists(st.integers(0, 300), max_size=4),
    max_inflight=st.integers(1, 10),
)
def test_a_window_longer_than_the_brokers_autosave_interval_survives_any_crash(
    count: int, autosave_s: float, crashes: list[int], max_inflight: int
) -> None:
    """A model Mosquitto that acknowledges at once, saves every `autosave_s` and forgets everything
    unsaved when killed: with resend_window_s above its interval, every reading ends up saved."""
    now = [0.0]
    books = Books()
    outbox = books.outbox(max_inflight, window_s=autosave_s + 0.2, clock=lambda: now[0])
    broker = ModelBroker(outbox, limit=2048, server_reason=None)
    memory: set[int] = set()
    saved: set[int] = set()
    last_save = 0.0
    new = deque(reading(seq) for seq in range(count))
    step = 0
    quiet_until = None  # once everything is acknowledged: two more save intervals
    while quiet_until is None or now[0] < quiet_until:
        if new or broker.queue or outbox.waiting():
            quiet_until = None
        elif quiet_until is None:
            quiet_until = now[0] + 2 * autosave_s
        broker.send_what_may_go(new)
        if step in crashes:
            memory = set(saved)
            broker.reconnect("Unspecified error", None)
        elif broker.queue:
            broker.step()
            memory.add(broker.acked[-1])
        now[0] += 0.05
        if now[0] - last_save >= autosave_s:
            saved |= memory
            last_save = now[0]
        outbox.expire()
        step += 1
        assert step < 100 * count + 1000, "stalled"
    assert saved == set(range(count))
    assert books.set_aside == []
