"""The downlink's watch over its consumer group (issue 15: two quick kill -9 of the bridge left the
group waiting on dead members; the downlink sent nothing and /readyz stayed green).
The Kafka consumer here is a stand-in (no broker): what is tested is the downlink's reaction to a
consumer that never gets a partition, which a real broker produces only by a timing accident."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_kafka_bridge.downlink import Downlink, stall_reason
from twinpipe.command_messages import Command
from twinpipe.config import parse_config


class NeverAssigned:
    """A consumer whose group join never completes: no partition, no records."""

    def __init__(self) -> None:
        self.closed = False
        self.topics: list[str] = []

    def subscribe(self, topics: list[str]) -> None:
        self.topics = topics

    def assignment(self) -> set[Any]:
        return set()

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        time.sleep(timeout_ms / 1000 / 10)
        return {}

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed = True


@given(st.floats(0, 1e6), st.none() | st.floats(0, 1e6), st.none() | st.floats(0, 1e6), st.floats(0.1, 600))
def test_stall_reason_names_a_stall_only_past_the_session_timeout(
    now: float, unassigned: float | None, failing: float | None, limit: float
) -> None:
    reason = stall_reason(now, unassigned, failing, limit)
    stalled = (unassigned is not None and now - unassigned > limit) or (
        failing is not None and now - failing > limit
    )
    assert (reason is not None) == stalled
    if unassigned is not None and now - unassigned > limit:
        assert reason is not None and "no partition" in reason


def test_a_consumer_never_assigned_makes_the_downlink_not_ready_then_replaced_and_stop_is_bounded() -> None:
    config = parse_config(
        {
            "kafka": {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300},
            "bridge": {"downlink": {"enabled": True}},
        }
    )
    consumers: list[NeverAssigned] = []

    def consumer() -> Any:
        consumers.append(NeverAssigned())
        return consumers[-1]

    downlink = Downlink(config, consumer, lambda: None)  # type: ignore[arg-type,return-value]
    downlink._connected.set()  # no MQTT broker: the connection is not what is tested
    downlink._consumer.subscribe([config.bridge.downlink.command_topic])
    downlink._thread.start()
    try:
        assert downlink.ready() is True
        deadline = time.monotonic() + 10
        while len(consumers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        reason = downlink.ready()
        assert isinstance(reason, str) and "no partition" in reason, reason
        assert len(consumers) >= 2 and consumers[0].closed, "the stuck consumer was replaced"
        assert consumers[-1].topics == [config.bridge.downlink.command_topic]
    finally:
        started = time.monotonic()
        downlink._stop.set()
        downlink._thread.join(2)
        assert not downlink._thread.is_alive() and time.monotonic() - started < 2


@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(1, 600))
def test_a_loop_blocked_longer_than_a_pass_may_take_is_a_stall(
    now: float, last_pass: float, limit: float
) -> None:
    reason = stall_reason(now, None, None, 10.0, last_pass, limit)
    assert (reason is not None) == (now - last_pass > limit)
    if reason is not None:
        assert "blocked" in reason


def test_a_blocked_loop_fails_liveness_with_the_reason() -> None:
    config = parse_config({"bridge": {"downlink": {"enabled": True}}})
    downlink = Downlink(config, NeverAssigned, lambda: None)  # type: ignore[arg-type,return-value]
    downlink._thread = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    downlink._thread.start()  # a loop that never passes: blocked inside a call
    assert downlink.alive() is True
    downlink._last_pass -= downlink._pass_limit_s + 1
    alive = downlink.alive()
    assert isinstance(alive, str) and "blocked" in alive


class PubackFirst:
    """An MQTT client whose publish waits for its network thread, which is delivering a PUBACK (the
    order paho's lock imposes: its network thread calls on_publish holding the lock publish needs).
    A stand-in for paho: the interleaving is too rare to force on a real broker (issue 15 saw it in a
    burst after two kill -9)."""

    def __init__(self) -> None:
        self.downlink: Downlink | None = None
        self.mid = 0
        self.deadlocked = False

    def publish(self, topic: str, payload: bytes, qos: int, properties: Any) -> Any:
        self.mid += 1
        assert self.downlink is not None
        network = threading.Thread(
            target=self.downlink.on_publish, args=(self.mid, ReasonCode(PacketTypes.PUBACK))
        )
        network.start()
        network.join(2)
        self.deadlocked = network.is_alive()
        return SimpleNamespace(rc=mqtt.MQTT_ERR_SUCCESS, mid=self.mid)


def test_a_puback_delivered_while_publishing_neither_deadlocks_nor_is_lost() -> None:
    config = parse_config({"bridge": {"downlink": {"enabled": True}}})
    downlink = Downlink(config, NeverAssigned, lambda: None)  # type: ignore[arg-type,return-value]
    client = PubackFirst()
    client.downlink = downlink
    downlink._client = client  # type: ignore[assignment]
    downlink._connected.set()
    now = time.time_ns()
    command = Command("c" * 32, "sim-1", {"heater": True}, 1, now, now + 60 * 10**9)
    item = downlink._publish(command, b"{}", now)
    assert not client.deadlocked, "the PUBACK callback waited for the lock held across publish"
    assert item is not None and item.reason is not None and not item.reason.is_failure
    assert downlink._await_pubacks([item])
