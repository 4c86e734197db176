"""Broker-side faults while boards stream through the whole pipeline on real servers: a broker that
refuses oversized packets (max_packet_size, message_size_limit) and a broker killed with SIGKILL
before it saved what it had acknowledged. Each scenario prints what it observed.

The fault durations (`time.sleep(...)` around a kill or a stopped bridge) are the faults themselves;
everything that waits for an effect polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.mosquitto import Mosquitto
from devstack.process import stage_metric, stage_ready
from tests.faults.flow import Flow, gaps
from tests.faults.test_faults import RECOVERY_BOUND_S, report
from tests.harness import Pipeline, poll

OVERSIZED_EVERY = 40  # the board's every 40th line carries 150 keys
OVERSIZED_KEYS = 150
DEVICE = "board-json"


class JsonBoard:
    """A board printing JSON lines into a pseudo-terminal at `rate_hz`; every `oversized_every`th line
    (seq 39, 79, ... when the publisher reads from the first line) carries `OVERSIZED_KEYS` values."""

    def __init__(
        self, link: Path, rate_hz: float, count: int, oversized_every: int = OVERSIZED_EVERY
    ) -> None:
        self.link = link
        self.rate_hz = rate_hz
        self.count = count
        self.oversized_every = oversized_every
        self.written = 0
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(self.slave))
        self._thread = threading.Thread(target=self._write, daemon=True)

    def oversized(self, seq: int) -> bool:
        return seq % self.oversized_every == self.oversized_every - 1

    def line(self, seq: int) -> bytes:
        if self.oversized(seq):
            values = {f"k{i:03d}": round(seq + i / 1000, 3) for i in range(OVERSIZED_KEYS)}
        else:
            values = {"temperature": round(20 + seq % 50 / 10, 2), "humidity": round(50 + seq % 7, 2)}
        return json.dumps(values).encode() + b"\n"

    def start(self) -> None:
        self._thread.start()

    def _write(self) -> None:
        next_tick = time.monotonic()
        for seq in range(self.count):
            time.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += 1 / self.rate_hz
            os.write(self.master, self.line(seq))
            self.written += 1

    def join(self) -> None:
        self._thread.join(timeout=self.count / self.rate_hz + 30)

    def close(self) -> None:
        self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def broker(pipeline: Pipeline) -> Iterator[Mosquitto]:
    """The module's Mosquitto, which a test may `reconfigure`; standard again afterwards."""
    mosquitto = pipeline.stack.mosquitto
    yield mosquitto
    if mosquitto.extra_config:
        mosquitto.reconfigure("")


def oversized_board_run(
    pipeline: Pipeline, broker: Mosquitto, limit: str, rate_hz: float, count: int
) -> None:
    broker.reconfigure(limit)
    spool = pipeline.workdir / "spool"
    link = pipeline.workdir / "ttyJSON"
    serial = {
        "port": str(link),
        "device_id": DEVICE,
        "reconnect_max_s": 0.3,
        "frame": {"format": "json", "fields": []},
    }
    board = JsonBoard(link, rate_hz, count)
    flow = Flow(
        pipeline,
        {"source": "serial", "serial": serial, "spool_dir": str(spool)},
        config={"mqtt": {"reconnect_min_s": 0.1, "reconnect_max_s": 1.0}},
    )
    try:
        flow.start("influx_ingestion")
        flow.start("mqtt_kafka_bridge")
        poll(lambda: stage_ready(flow.ports["mqtt_kafka_bridge"]), bool, 30, "the bridge subscribed")
        publisher = flow.start("publisher")
        poll(publisher.log, lambda text: f"reading {link}" in text, 30, "the publisher reading the board")
        board.start()
        board.join()
        written_at = time.monotonic()
        oversized = [seq for seq in range(count) if board.oversized(seq)]
        recovery = flow.wait_recovered(count - len(oversized), written_at, timeout_s=60)
        port = flow.ports["publisher"]
        set_aside = stage_metric(port, "twinpipe_publisher_readings_set_aside_total", kind="too_large")
        set_aside += stage_metric(port, "twinpipe_publisher_readings_set_aside_total", kind="connection_lost")
        log = publisher.log()
        observed = flow.finish(f"oversized readings, Mosquitto {limit.strip()}", recovery, len(oversized))
    finally:
        board.close()
    observed.notes.append(f"{int(set_aside)} set aside of {len(oversized)} oversized")
    report(observed, flow, pipeline)
    assert observed.produced == count
    assert set_aside == len(oversized)
    assert list(gaps(pipeline).values()) == [oversized], "the missing seqs are exactly the oversized ones"
    assert observed.lost == len(oversized), "exactly the oversized readings are not stored"
    for seq in oversized:
        assert f"set aside {DEVICE} seq {seq} " in log
    kept = [json.loads(line) for line in (spool / "rejected" / "set-aside.jsonl").read_text().splitlines()]
    assert sorted(entry["envelope"]["seq"] for entry in kept) == oversized
    assert all(len(entry["envelope"]["values"]) == OVERSIZED_KEYS for entry in kept)
    assert recovery < RECOVERY_BOUND_S


def test_readings_over_max_packet_size_are_set_aside_and_never_stall_the_board(
    pipeline: Pipeline, broker: Mosquitto
) -> None:
    """Mosquitto announces max_packet_size in CONNACK: the publisher never sends what exceeds it."""
    oversized_board_run(pipeline, broker, "max_packet_size 2048\n", rate_hz=100, count=810)


def test_readings_over_message_size_limit_are_found_and_set_aside(
    pipeline: Pipeline, broker: Mosquitto
) -> None:
    """message_size_limit is not announced: Mosquitto closes the connection (Protocol error) on the
    message, and the publisher finds it by sending the suspect alone."""
    oversized_board_run(pipeline, broker, "message_size_limit 2000\n", rate_hz=20, count=250)


AUTOSAVE_S = 5  # the broker's autosave_interval in these tests (compose: 10)
RESEND_WINDOW_S = 8  # publisher.resend_window_s: the autosave interval plus margin


def streaming_past_a_save(pipeline: Pipeline, broker: Mosquitto, window_s: float) -> Flow:
    """Boards streaming with a spool and a re-send window of `window_s`, on a broker saving every
    AUTOSAVE_S, once it has saved at least once: as in any long run, the bridge's session is in the
    broker's last save before a crash."""
    broker.reconfigure(f"autosave_interval {AUTOSAVE_S}\n")
    database = broker.workdir / "data" / "mosquitto.db"
    flow = Flow(pipeline, {"spool_dir": str(pipeline.workdir / "spool"), "resend_window_s": window_s})
    flow.start_all()
    streaming = time.time()
    poll(lambda: database.exists() and database.stat().st_mtime > streaming, bool, 2 * AUTOSAVE_S, "a save")
    return flow


@pytest.mark.parametrize(
    ("bridge_running", "window_s"),
    [(False, RESEND_WINDOW_S), (True, RESEND_WINDOW_S), (False, 0)],
    ids=["bridge-stopped", "bridge-running", "bridge-stopped-without-window"],
)
def test_mosquitto_killed_with_sigkill_loses_nothing_the_publisher_let_go(
    pipeline: Pipeline, broker: Mosquitto, bridge_running: bool, window_s: float
) -> None:
    """PUBACK is not tied to Mosquitto's disk write (mosquitto #1855, #1883): a SIGKILL loses what it
    acknowledged since its last autosave. The publisher keeps acknowledged readings for
    resend_window_s and re-sends them when the connection is lost; without the window (the control
    case) readings are lost, which shows the scenario bites."""
    flow = streaming_past_a_save(pipeline, broker, window_s)
    if not bridge_running:
        assert flow.stages["mqtt_kafka_bridge"].stop() == 0
    time.sleep(3)  # the broker queues readings for the stopped bridge, or streams them to it
    broker.stop(signal.SIGKILL)
    time.sleep(1)  # the broker is down
    broker.start()
    if not bridge_running:
        flow.start("mqtt_kafka_bridge")
    restored = time.monotonic()
    produced_before = flow.readings()
    with contextlib.suppress(TimeoutError):  # the control case never gets there; `finish` counts
        flow.wait_recovered(produced_before, restored, timeout_s=30 if window_s else 10)
    recovery = time.monotonic() - restored
    resent = stage_metric(flow.ports["publisher"], "twinpipe_publisher_readings_resent_total")
    scenario = f"Mosquitto SIGKILL, bridge {'running' if bridge_running else 'stopped'}"
    # The control case: what is missing now stays missing, so `finish` need not wait 90 s for it.
    missing = 0 if window_s else sum(len(seqs) for seqs in gaps(pipeline).values())
    observed = flow.finish(f"{scenario}, resend_window_s {window_s:g}", recovery, allowed_loss=missing)
    observed.notes.append(f"{resent:.0f} re-sent from the window, autosave_interval {AUTOSAVE_S}")
    report(observed, flow, pipeline)
    if window_s:
        assert observed.lost == 0 and not any(gaps(pipeline).values())
        assert resent > 0
        assert recovery < RECOVERY_BOUND_S
    else:
        assert observed.lost > 0, "without the window a SIGKILL loses acknowledged readings"


def test_publisher_and_mosquitto_killed_together_lose_at_most_the_spools_last_flush(
    pipeline: Pipeline, broker: Mosquitto
) -> None:
    """Both killed with SIGKILL while the bridge is stopped: the publisher's spool keeps acknowledged
    readings until they left the re-send window, so its next start sends what the broker forgot. What
    can be lost is the killed publisher's last spool flush interval (≤ 5 readings at 100/s, at the
    tail), as for a publisher killed alone."""
    flow = streaming_past_a_save(pipeline, broker, RESEND_WINDOW_S)
    assert flow.stages["mqtt_kafka_bridge"].stop() == 0
    time.sleep(3)  # the broker queues readings for the stopped bridge
    counted_before_kill = flow.readings()
    flow.stages["publisher"].kill()
    broker.stop(signal.SIGKILL)
    broker.start()
    flow.start("publisher")
    flow.start("mqtt_kafka_bridge")
    restarted = time.monotonic()
    recovery = flow.wait_recovered(counted_before_kill - 5, restarted, timeout_s=60)
    observed = flow.finish_after_kill(
        "Mosquitto and publisher SIGKILL, bridge stopped", recovery, counted_before_kill
    )
    report(observed, flow, pipeline)
    assert not any(gaps(pipeline).values()), "loss only at the killed boot's tail"
    assert observed.lost <= 5
    assert recovery < RECOVERY_BOUND_S
