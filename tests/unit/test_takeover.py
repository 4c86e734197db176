"""twinpipe/takeover.py: the rule that names a stolen MQTT session, fed times and disconnect reasons,
and its wiring to a paho client (a stand-in that records the reconnect delays it is given)."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devstack.process import poll
from twinpipe.metrics import sample
from twinpipe.takeover import (
    BACKOFF_MAX_S,
    SESSION_TAKEN_OVER,
    SHORT_S,
    STABLE_MIN_S,
    STRIKES,
    SessionGuard,
    TakeoverWatch,
)

LOST = 128  # paho's reason when the connection was just closed (no DISCONNECT packet)


def test_the_brokers_session_taken_over_is_recognised_at_once_and_the_delay_grows() -> None:
    watch = TakeoverWatch()
    delays = []
    for now in (0.0, 10.0, 30.0):
        watch.connected(now)
        takeover = watch.disconnected(now + 1, SESSION_TAKEN_OVER, from_broker=True, failure=True)
        assert takeover is not None and "0x8E" in takeover.evidence
        assert takeover.first == (now == 0.0)
        delays.append(takeover.reconnect_delay_s)
    assert delays[0] < delays[1] < delays[2] <= BACKOFF_MAX_S * 1.2


def test_a_connection_closed_again_and_again_right_after_connecting_is_a_takeover() -> None:
    watch = TakeoverWatch()
    verdicts = []
    for strike in range(STRIKES):
        watch.connected(strike * 1.0)
        verdicts.append(watch.disconnected(strike * 1.0 + 0.5, LOST, from_broker=False, failure=True))
    assert verdicts[:-1] == [None] * (STRIKES - 1)
    assert (
        verdicts[-1] is not None and verdicts[-1].first and "Mosquitto before 2.0.15" in verdicts[-1].evidence
    )
    # In the episode, a connection the rival took after its own backoff counts too.
    watch.connected(10.0)
    assert watch.disconnected(19.0, LOST, from_broker=False, failure=True) is not None
    assert watch.takeovers == 2


def test_a_broker_closing_on_an_oversized_publish_again_and_again_is_no_takeover() -> None:
    """Mosquitto 2.0.11 closes the connection on a PUBLISH over message_size_limit, which paho reports
    as "Protocol error" (0x82): the publisher's Outbox finds that reading by re-sending it alone, three
    times within a second or so. Called a takeover, it was backed off 2, 4, 8 ... 60 s and delivery
    stalled (tests/faults/test_faults_broker.py, message_size_limit)."""
    watch = TakeoverWatch()
    for strike in range(3 * STRIKES):
        watch.connected(strike * 0.2)
        assert watch.disconnected(strike * 0.2 + 0.1, 0x82, from_broker=False, failure=True) is None
    assert not watch.episode


def test_holding_the_session_long_enough_ends_the_episode() -> None:
    watch = TakeoverWatch()
    watch.connected(0.0)
    takeover = watch.disconnected(0.1, SESSION_TAKEN_OVER, from_broker=True, failure=True)
    assert takeover is not None
    watch.connected(5.0)
    assert not watch.stable(5.0 + STABLE_MIN_S / 2) and watch.episode
    assert watch.stable(5.0 + max(STABLE_MIN_S, 2 * takeover.reconnect_delay_s)) and not watch.episode


@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 1000.0),  # how long the connection lived
            st.sampled_from([LOST, 0x8B, 0x8D, 0x82, 0x00]),  # no 0x8E
            st.booleans(),  # a DISCONNECT packet from the broker
            st.booleans(),  # a failure (not our own disconnect)
        ),
        max_size=50,
    )
)
def test_without_0x8e_only_repeated_quick_closes_are_called_a_takeover(events: list) -> None:
    """Network drops, broker restarts (0x8B), keepalive timeouts (0x8D), protocol errors (0x82) and our
    own disconnects are never named a takeover unless the broker closed STRIKES connections in a row
    within SHORT_S, each reported as a lost connection."""
    watch = TakeoverWatch()
    now, quick_run = 0.0, 0
    for lived, code, from_broker, failure in events:
        watch.connected(now)
        now += lived
        takeover = watch.disconnected(now, code, from_broker, failure)
        if failure and not from_broker and code == LOST and lived < SHORT_S:
            quick_run += 1
        elif failure and (from_broker or code != LOST or not watch.episode):
            quick_run = 0
        if not failure:
            assert takeover is None, "our own disconnect"
        if takeover is not None and takeover.first:
            assert quick_run >= STRIKES
        now += 0.5


class FakeClient:
    def __init__(self) -> None:
        self.delays: list[tuple[float, float]] = []

    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None:
        self.delays.append((min_delay, max_delay))


class Flags:
    def __init__(self, from_broker: bool) -> None:
        self.is_disconnect_packet_from_server = from_broker


def test_the_guard_logs_once_per_episode_counts_each_takeover_and_fails_readiness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    client: Any = FakeClient()
    advice = "give each replica its own bridge.client_id"
    guard = SessionGuard(client, "bridge-x", advice, "unit", (0.5, 10.0), clock=lambda: clock[0])
    before = sample("twinpipe_unit_session_takeovers_total")
    taken = ReasonCode(PacketTypes.DISCONNECT, identifier=SESSION_TAKEN_OVER)
    with caplog.at_level(logging.INFO, logger="twinpipe.mqtt"):
        for _ in range(4):
            guard.connected()
            clock[0] += 1
            assert guard.disconnected(taken, Flags(True))
            clock[0] += 1
        reason = guard.ready()
        assert isinstance(reason, str) and "bridge-x" in reason and "bridge.client_id" in reason
        guard.connected()
        clock[0] += 1000
        assert guard.ready() is True
        guard.disconnected(ReasonCode(PacketTypes.DISCONNECT, identifier=0), Flags(False))  # our own
    lines = [r.getMessage() for r in caplog.records if "taken over by another" in r.getMessage()]
    assert len(lines) == 1 and "'bridge-x'" in lines[0] and "bridge.client_id" in lines[0]
    assert any("no longer taken over" in r.getMessage() for r in caplog.records)
    assert sample("twinpipe_unit_session_takeovers_total") - before == 4
    assert [d for d, _ in client.delays[:4]] == sorted(d for d, _ in client.delays[:4])
    assert client.delays[-1] == (0.5, 10.0), "the usual reconnect delays once the session is held again"


def test_a_draining_stage_reconnects_with_its_usual_delays_after_a_takeover() -> None:
    """On SIGTERM the publisher drains for publisher.shutdown_timeout_s (10 s): a takeover backoff of
    up to 60 s would keep it from ever getting the session back to deliver what it holds."""
    clock = [0.0]
    client: Any = FakeClient()
    guard = SessionGuard(client, "pub-x", "advice", "unit_drain", (0.5, 10.0), clock=lambda: clock[0])
    taken = ReasonCode(PacketTypes.DISCONNECT, identifier=SESSION_TAKEN_OVER)
    for _ in range(4):
        guard.connected()
        clock[0] += 1
        assert guard.disconnected(taken, Flags(True))
    assert client.delays[-1][0] > 0.5
    before = sample("twinpipe_unit_drain_session_takeovers_total")
    guard.draining()
    assert client.delays[-1] == (0.5, 10.0)
    guard.connected()
    clock[0] += 1
    assert guard.disconnected(taken, Flags(True)), "still recognised and counted"
    assert client.delays[-1] == (0.5, 10.0), "no longer backed off"
    assert sample("twinpipe_unit_drain_session_takeovers_total") - before == 1


def test_paho_hands_a_brokers_session_taken_over_to_the_guard(caplog: pytest.LogCaptureFixture) -> None:
    """No broker installable here sends 0x8E (Debian's Mosquitto 2.0.11 does not; 2.0.15+ does), so a
    socket plays the broker for one exchange: CONNACK, then DISCONNECT with reason code 0x8E
    (MQTT 5 §3.14). Checks what paho 2 reports (reason 0x8E, packet from the server)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def broker() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(1024)  # CONNECT
            connection.sendall(bytes([0x20, 3, 0, 0, 0]))  # CONNACK: no session, success, no properties
            connection.sendall(bytes([0xE0, 2, SESSION_TAKEN_OVER, 0]))  # DISCONNECT 0x8E, no properties
            connection.recv(1024)  # until paho closes

    threading.Thread(target=broker, daemon=True).start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dup", protocol=MQTTProtocolVersion.MQTTv5)
    client.reconnect_delay_set(30, 30)  # the one exchange is all this test needs
    guard = SessionGuard(client, "dup", "give each one its own client id", "unit_paho", (30.0, 30.0))
    verdicts: list[bool] = []
    client.on_connect = lambda *_args: guard.connected()
    client.on_disconnect = lambda _c, _u, flags, reason, _p: verdicts.append(
        guard.disconnected(reason, flags)
    )
    with caplog.at_level(logging.ERROR, logger="twinpipe.mqtt"):
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            poll(lambda: verdicts, bool, 10, "the disconnect")
        finally:
            client.loop_stop()
            listener.close()
    assert verdicts == [True]
    assert "Session taken over (MQTT 5 reason code 0x8E)" in caplog.text and "'dup'" in caplog.text
    assert sample("twinpipe_unit_paho_session_takeovers_total") == 1
