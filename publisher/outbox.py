"""What the publisher has handed to MQTT and what it must send (again): the in-flight readings, the
resend queue, the window of acknowledged readings kept against a broker crash, and the readings set
aside because the broker will never take them. No network code: `publisher/app.py` feeds it paho's
events (publish, PUBACK, connect), so every rule here is tested without a broker (see README.md,
"Oversized readings" and "Broker crash").

Why the publisher re-sends instead of paho: paho re-sends unacknowledged messages oldest first on
every reconnect, so one message the broker refuses by closing the connection kills every new
connection (paho.mqtt.python #640). The publisher therefore takes paho's queue back on every
connect (`Client.drop_out_messages`) and re-publishes it itself, after its checks.

Threads: the sender thread calls `take`, `sent`, `expire`; paho's network thread calls `acked` and
`connected`. paho holds its own message lock while it calls `acked`, so the sender never calls paho
while holding this lock (lock order: paho's, then this one).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from twinpipe.envelope import Envelope

# A reading lost with the connection this many times while it was in flight alone is set aside:
# the broker closes the connection on it (or the network died exactly then, three times in a row).
LONE_LOSSES_TO_SET_ASIDE = 3
PACKET_TOO_LARGE = 0x95  # MQTT 5 reason code (PUBACK or DISCONNECT)
# A broker DISCONNECT with one of these reasons while a reading was alone in flight names that reading
# at once: Malformed Packet, Protocol Error (Mosquitto's message_size_limit), Topic Name invalid,
# Packet too large (Mosquitto's max_packet_size), Payload format invalid.
BLAMES_THE_PACKET = frozenset({0x81, 0x82, 0x90, PACKET_TOO_LARGE, 0x99})


def varint_size(value: int) -> int:
    """Bytes of an MQTT Variable Byte Integer (MQTT 5 §1.5.5)."""
    size = 1
    while value >= 128:
        value >>= 7
        size += 1
    return size


def publish_packet_size(topic: bytes, payload_bytes: int) -> int:
    """Total bytes of an MQTT 5 QoS 1 PUBLISH without properties, as the broker's Maximum Packet
    Size counts it (MQTT 5 §3.2.2.3.6: the total packet, fixed header included): fixed header byte,
    remaining length, topic (2-byte length + bytes), packet id (2), property length (1), payload."""
    remaining = 2 + len(topic) + 2 + 1 + payload_bytes
    return 1 + varint_size(remaining) + remaining


@dataclass(eq=False)
class Pending:
    """One reading on its way: its envelope, its spool segment (None without a spool)."""

    envelope: Envelope
    segment: int | None
    packet_bytes: int = 0  # of the last PUBLISH sent
    losses: int = 0  # connections lost while it was in flight
    lone_losses: int = 0  # ... while it was in flight alone
    suspect: bool = False  # sent alone until acknowledged
    alone: bool = False  # the last send was alone in flight
    on_wire: bool = False  # the last send went to a live connection (not queued by paho meanwhile)
    acked_before: bool = False  # acknowledged once, re-sent from the window after a lost connection
    acked_at: float = 0.0  # monotonic seconds


SetAside = Callable[[Pending, str, str], None]  # (reading, kind, reason)
Finished = Callable[[Pending], None]  # the reading needs no more sending: its spool entry can go


class Outbox:
    """`max_inflight` readings unacknowledged at most; acknowledged readings kept `window_s` seconds
    (at most `window_max` of them) for a re-send after the broker was lost."""

    def __init__(
        self,
        max_inflight: int,
        window_s: float,
        window_max: int,
        set_aside: SetAside,
        finished: Finished,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_inflight = max_inflight
        self.window_s = window_s
        self.window_max = window_max
        self._set_aside = set_aside
        self._finished = finished
        self._clock = clock
        self.changed = threading.Condition()
        self._inflight: OrderedDict[int, Pending] = OrderedDict()  # MQTT message id → reading
        self._resend: deque[Pending] = deque()
        self._suspects: deque[Pending] = deque()
        self._window: deque[Pending] = deque()  # acknowledged, oldest first
        self._early: dict[int, str | None] = {}  # acknowledged before `sent` registered it: failure reason
        self._orphans: set[int] = set()  # taken from paho by `connected` before `sent` registered them
        self.resent = 0  # readings re-sent from the window after a lost connection
        self.window_evicted = 0  # left the window early because it held window_max readings

    # --- sender thread ---

    def take(self) -> Pending | None | bool:
        """The next reading to re-send; None when there is none (take a new one from the buffer);
        False while nothing may be sent now (in-flight limit, or a suspect must go alone)."""
        with self.changed:
            if any(p.alone for p in self._inflight.values()):
                return False
            if self._suspects:
                if self._inflight:
                    return False
                pending = self._suspects.popleft()
                pending.alone = True
                return pending
            if len(self._inflight) >= self.max_inflight:
                return False
            return self._resend.popleft() if self._resend else None

    def give_back(self, pending: Pending) -> None:
        """A reading `take` returned that was not sent (the sender stopped): first in line again."""
        with self.changed:
            (self._suspects if pending.suspect else self._resend).appendleft(pending)

    def sent(self, mid: int, pending: Pending, on_connection: bool) -> None:
        """paho accepted the PUBLISH as message `mid`; `on_connection`: written to a live connection
        (not queued by paho while disconnected)."""
        pending.on_wire = on_connection
        pending.alone = pending.alone and on_connection
        with self.changed:
            if mid in self._orphans:  # `connected` already took paho's queue: send it again
                self._orphans.discard(mid)
                pending.alone = False
                (self._suspects if pending.suspect else self._resend).appendleft(pending)
            elif mid in self._early:
                self._acknowledge(pending, self._early.pop(mid))
            else:
                self._inflight[mid] = pending
            self.changed.notify_all()

    def expire(self) -> None:
        """Acknowledged readings older than the window are safe on the broker's disk: let them go.
        Call only while connected (a broker lost meanwhile may have lost them)."""
        done = []
        with self.changed:
            now = self._clock()
            while self._window and (
                now - self._window[0].acked_at > self.window_s or len(self._window) > self.window_max
            ):
                if now - self._window[0].acked_at <= self.window_s:
                    self.window_evicted += 1
                done.append(self._window.popleft())
        for pending in done:
            self._finished(pending)

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    # --- network thread ---

    def acked(self, mid: int, failure: str | None) -> None:
        """The broker answered message `mid`: `failure` is the PUBACK's failure reason, or None."""
        with self.changed:
            pending = self._inflight.pop(mid, None)
            if pending is None:
                self._early[mid] = failure
                return
            self._acknowledge(pending, failure)
            self.changed.notify_all()

    def connected(self, dropped_mids: list[int], lost_reason: str, server_reason: int | None) -> int:
        """A new connection is up and paho's queue (`dropped_mids`, taken with `drop_out_messages`)
        is ours again: what was in flight is sent again, suspects alone first. `lost_reason`: why the
        previous connection ended; `server_reason`: the reason code of the broker's DISCONNECT packet,
        None when the connection was lost without one (broker killed, network down). Only then is the
        acknowledged window sent again: a broker that sent DISCONNECT is alive and keeps what it
        acknowledged. Returns how many acknowledged readings are re-sent."""
        resend_window = server_reason is None
        with self.changed:
            self._orphans.update(mid for mid in dropped_mids if mid not in self._inflight)
            # Readings sent on the new connection before paho's queue was taken stay in flight.
            lost = [self._inflight.pop(mid) for mid in dropped_mids if mid in self._inflight]
            on_wire = [p for p in lost if p.on_wire]
            for pending in on_wire:
                pending.losses += 1
                pending.lone_losses += pending.alone
            if on_wire:
                max(on_wire, key=lambda p: p.packet_bytes).suspect = True  # the likeliest poison first
            requeue = []
            for pending in lost:
                lone_loss = pending.alone and pending.on_wire
                blamed = lone_loss and server_reason in BLAMES_THE_PACKET
                if blamed or pending.lone_losses >= LONE_LOSSES_TO_SET_ASIDE:
                    kind = "too_large" if blamed and server_reason == PACKET_TOO_LARGE else "connection_lost"
                    reason = (
                        f"the broker closed the connection when it was sent alone ({pending.lone_losses} "
                        f"times, last: {lost_reason}; {pending.packet_bytes} bytes)"
                    )
                    self._set_aside(pending, kind, reason)
                    continue
                pending.alone = pending.on_wire = False
                if pending.losses >= 2:
                    pending.suspect = True
                requeue.append(pending)
            window = list(self._window) if resend_window else []
            for pending in window:
                pending.acked_before = True
            if resend_window:
                self._window.clear()
                self.resent += len(window)
            self._suspects.extend(p for p in requeue if p.suspect)
            self._resend.extendleft(reversed(window + [p for p in requeue if not p.suspect]))
            self.changed.notify_all()
            return len(window)

    # --- shared ---

    def _acknowledge(self, pending: Pending, failure: str | None) -> None:
        pending.alone = False
        pending.suspect = False
        if failure is not None:
            self._set_aside(pending, "too_large" if "too large" in failure.lower() else "refused", failure)
        elif self.window_s > 0:
            pending.acked_at = self._clock()
            self._window.append(pending)
        else:
            self._finished(pending)

    def inflight(self) -> int:
        return len(self._inflight)

    def waiting(self) -> int:
        """Readings queued for a re-send (suspects included)."""
        return len(self._resend) + len(self._suspects)

    def window(self) -> int:
        return len(self._window)

    def unacknowledged(self) -> list[Pending]:
        """Every reading still to be acknowledged: in flight, then queued for a re-send."""
        with self.changed:
            return [*self._inflight.values(), *self._suspects, *self._resend]


def drain(
    outbox: Outbox,
    buffered: Callable[[], int],
    send_one: Callable[[float], object],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    poll_s: float = 0.2,
) -> bool:
    """On shutdown: send what is buffered (`buffered()` readings) or queued for a re-send and wait for
    the acknowledgements, until nothing is unacknowledged (True) or `deadline` (`clock` seconds) passed
    (False). One loop for sending and waiting: a reconnect meanwhile hands what was in flight, and
    the acknowledged window after a lost connection, back to the re-send queue, to be sent again
    rather than waited for. `send_one(timeout_s)` sends one reading, or waits for one to send."""
    while buffered() or outbox.inflight() or outbox.waiting():
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        if buffered() or outbox.waiting():
            send_one(min(poll_s, remaining))
        else:
            outbox.wait(min(poll_s, remaining))
    return True


def describe(readings: list[Pending]) -> str:
    """Readings by device and boot with their sequence numbers as ranges, for a log line:
    "board0 (boot 3f2a) seq 4-9, 12; board1 (boot 3f2a) seq 7", or "none"."""
    seqs: dict[tuple[str, str], set[int]] = {}
    for pending in readings:
        seqs.setdefault((pending.envelope.device, pending.envelope.boot), set()).add(pending.envelope.seq)
    parts = []
    for (device, boot), numbers in sorted(seqs.items()):
        ranges: list[list[int]] = []
        for seq in sorted(numbers):
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1][1] = seq
            else:
                ranges.append([seq, seq])
        text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
        parts.append(f"{device} (boot {boot}) seq {text}")
    return "; ".join(parts) or "none"
