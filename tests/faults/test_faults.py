"""Faults while simulated boards stream through the whole pipeline on real servers: after each one,
every (device, boot, seq) produced is in InfluxDB exactly once (by count and by set of seqs), within
the recovery time stated here. Each scenario prints what it observed.

The fault durations (`time.sleep(OUTAGE_S)` and friends) are the faults themselves, not waits for
something to happen; everything that waits for an effect polls with a deadline.
"""

from __future__ import annotations

import json
import math
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from devstack.process import free_port, stage_metric, stage_ready
from tests.faults.flow import Flow, Observed, gaps
from tests.harness import Pipeline, poll

SHORT_OUTAGE_S = 3
LONG_OUTAGE_S = 20
RECOVERY_BOUND_S = 30  # from the end of a fault until InfluxDB holds everything produced before it


def report(observed, flow=None, pipeline=None) -> None:
    print("\n" + observed.line())
    if flow is not None and observed.lost:
        print(
            "gaps",
            {k: v for k, v in gaps(pipeline).items() if v},
            "in kafka, not influx",
            flow.missing_in_influx[:20],
        )


def assert_nothing_lost(observed: Observed, flow: Flow, pipeline: Pipeline, recovery: float) -> None:
    report(observed, flow, pipeline)
    assert observed.lost == 0 and not any(gaps(pipeline).values())
    assert recovery < RECOVERY_BOUND_S


@pytest.mark.parametrize(
    ("stage", "producer"),
    [
        ("mqtt_kafka_bridge", "kafka-python"),
        ("mqtt_kafka_bridge", "confluent-kafka"),
        ("influx_ingestion", "kafka-python"),
    ],
)
def test_kill_9_and_restart_of_a_stage_loses_nothing(pipeline: Pipeline, stage: str, producer: str) -> None:
    flow = Flow(pipeline, config={"bridge": {"producer": producer}})
    flow.start_all()
    recovery = flow.outage(flow.stages[stage].kill, lambda: flow.start(stage), SHORT_OUTAGE_S)
    observed = flow.finish(f"kill -9 {stage} (bridge.producer {producer})", recovery)
    assert_nothing_lost(observed, flow, pipeline, recovery)


def test_kill_9_of_the_publisher_while_mqtt_is_down_hands_its_spool_to_the_next_start(
    pipeline: Pipeline,
) -> None:
    """The hard case: MQTT is down, so the publisher holds every reading, and then it is killed.
    Its spool (publisher.spool_dir) is on disk; the next start sends it first. What can be lost is
    what was read since the last spool flush, which is at most two 20 ms intervals apart (≤ 5
    readings at 100/s), at the tail."""
    flow = Flow(pipeline, {"spool_dir": str(pipeline.workdir / "spool")})
    flow.start_all()
    broker = pipeline.stack.mosquitto
    broker.stop(signal.SIGTERM)
    poll(flow.readings, lambda n: n > 0, 10, "readings counted")
    time.sleep(SHORT_OUTAGE_S)  # the outage: readings pile up in the publisher
    counted_before_kill = flow.readings()
    flow.stages["publisher"].kill()
    broker.start()
    flow.start("publisher")
    restarted = time.monotonic()
    recovery = flow.wait_recovered(counted_before_kill, restarted)
    observed = flow.finish_after_kill("kill -9 publisher while MQTT is down", recovery, counted_before_kill)
    report(observed, flow, pipeline)
    assert not any(gaps(pipeline).values()), "loss only at the killed boot's tail"
    assert observed.lost <= 5
    assert "readings from an earlier run will be sent first" in flow.stages["publisher"].log()


def test_mosquitto_restart_loses_nothing(pipeline: Pipeline) -> None:
    flow = Flow(pipeline)
    flow.start_all()
    broker = pipeline.stack.mosquitto
    recovery = flow.outage(lambda: broker.stop(signal.SIGTERM), broker.start, SHORT_OUTAGE_S)
    assert_nothing_lost(flow.finish("Mosquitto restart", recovery), flow, pipeline, recovery)


@pytest.mark.parametrize("producer", ["kafka-python", "confluent-kafka"])
def test_kafka_unreachable_for_20_s_loses_nothing(pipeline: Pipeline, producer: str) -> None:
    flow = Flow(pipeline, config={"bridge": {"producer": producer}})
    flow.start_all()
    proxy = pipeline.stack.kafka_proxy
    recovery = flow.outage(proxy.cut, proxy.restore, LONG_OUTAGE_S)
    observed = flow.finish(f"Kafka unreachable 20 s (bridge.producer {producer})", recovery)
    assert_nothing_lost(observed, flow, pipeline, recovery)


def test_influxdb_down_for_20_s_loses_nothing(pipeline: Pipeline) -> None:
    flow = Flow(pipeline)
    flow.start_all()
    influxd = pipeline.stack.influxd
    recovery = flow.outage(influxd.stop, influxd.start, LONG_OUTAGE_S)  # restarted on the same data dir
    retries = stage_metric(
        flow.ports["influx_ingestion"], "twinpipe_ingestion_retries_total", operation="write"
    )
    observed = flow.finish("InfluxDB down 20 s", recovery)
    observed.notes.append(f"{retries:.0f} write retries")
    assert_nothing_lost(observed, flow, pipeline, recovery)


def test_mqtt_down_longer_than_the_buffer_loses_exactly_the_counted_overflow(pipeline: Pipeline) -> None:
    buffer_size = 100
    flow = Flow(pipeline, {"buffer_size": buffer_size, "max_inflight": 10})
    flow.start_all()
    broker = pipeline.stack.mosquitto
    broker.stop(signal.SIGTERM)
    # 100 readings/s into a buffer of 100: a 5 s outage overflows it by about 400.
    time.sleep(5)
    broker.start()
    restored = time.monotonic()
    poll(
        lambda: stage_metric(flow.ports["publisher"], "twinpipe_publisher_buffer_depth_readings"),
        lambda depth: depth < 10,
        60,
        "the publisher's buffer drained",
    )
    recovery = time.monotonic() - restored
    dropped = int(stage_metric(flow.ports["publisher"], "twinpipe_publisher_buffer_dropped_total"))
    observed = flow.finish("MQTT down beyond the buffer", recovery, allowed_loss=dropped)
    observed.notes.append(f"{dropped} dropped and counted")
    report(observed, flow, pipeline)
    missing = sum(len(seqs) for seqs in gaps(pipeline).values())
    assert dropped > 0
    assert observed.lost == dropped == missing, "the loss is exactly the counted overflow, nothing else"
    assert "buffer full (100 readings" in pipeline.logs()


def port_opened_times(publisher_log: str, port: Path) -> list[float]:
    """When the publisher opened `port` (epoch seconds), from its "reading <port>" log lines."""
    return [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in publisher_log.splitlines()
        if f"reading {port} " in line
    ]


def test_board_unplugged_and_replugged_loses_only_what_it_sent_while_the_port_was_closed(
    pipeline: Pipeline,
) -> None:
    """Like a UART, a serial port keeps nothing while it is closed: frames the board wrote before the
    publisher (re)opened it are gone. Every frame after that must be stored, once, in order."""
    link = pipeline.workdir / "ttyACM0"
    records = [pipeline.workdir / "board1.jsonl", pipeline.workdir / "board2.jsonl"]
    serial = {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.3}}
    flow = Flow(pipeline, serial)
    started = [time.time()]  # each board's start, to bound what it wrote before the port was opened
    board = pipeline.board(link, "--rate", "100", "--record", str(records[0]), "--seed", "1")
    flow.start_all()
    poll(flow.stored, lambda n: n >= 100, 30, "100 frames stored")
    assert board.stop() == 0  # unplugged
    time.sleep(SHORT_OUTAGE_S)
    started.append(time.time())
    pipeline.board(link, "--rate", "100", "--count", "300", "--record", str(records[1]), "--seed", "2")
    replugged = time.monotonic()
    before = flow.stored()
    poll(flow.stored, lambda n: n > before, 30, "the replugged board's first frames stored")
    recovery = time.monotonic() - replugged

    def lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    written = [
        lines(records[0]),
        poll(lambda: lines(records[1]), lambda written: len(written) == 300, 30, "board 2's frames"),
    ]

    def rounded(values: dict) -> dict:
        return {name: round(value, 6) for name, value in values.items()}

    frames = [[rounded(json.loads(line)) for line in lines] for lines in written]
    last = frames[1][-1]
    rows = poll(
        lambda: pipeline.influx_rows('SELECT * FROM "telemetry" ORDER BY time'),
        lambda rows: rows and all(rows[-1][k] == pytest.approx(v) for k, v in last.items()),
        30,
        "board 2's last frame stored",
    )
    stored = [rounded({k: row[k] for k in frames[0][0]}) for row in rows]
    # Board 1's stored frames end where board 2's first stored frame begins.
    second_start = next(i for i, values in enumerate(stored) if values in frames[1])
    parts = [stored[:second_start], stored[second_start:]]
    opens = port_opened_times(flow.stages["publisher"].log(), link)
    opened = [min(t for t in opens if t >= board_start) for board_start in started]  # each board's open
    lost_before_open, lost_at_unplug = 0, 0
    for board_frames, part, board_start, port_open in zip(frames, parts, started, opened, strict=True):
        first = board_frames.index(part[0])
        assert part == board_frames[first : first + len(part)], "contiguous: no frame missing in between"
        written_before_open = math.ceil(100 * (port_open - board_start)) + 2  # 100 frames/s; log ms rounding
        assert first <= written_before_open, "only frames from before the port was (re)opened are missing"
        lost_before_open += first
        lost_at_unplug += len(board_frames) - first - len(part)
    assert parts[1][-1] == frames[1][-1], "the replugged board's frames all arrived"
    assert lost_at_unplug <= 10, "an unplug loses at most the frames on the wire"
    boots = list(dict.fromkeys(row["boot"] for row in rows))
    assert len(boots) == 2, "the replugged board (it has reset) has a new boot id"
    for boot in boots:
        seqs = [row["seq"] for row in rows if row["boot"] == boot]
        assert seqs == list(range(len(seqs))), f"boot {boot}: every seq from 0, once, in order"
    report_line = (
        f"board unplugged and replugged: written {sum(map(len, frames))}, stored {len(stored)}, "
        f"lost {lost_before_open} written before the port was (re)opened and {lost_at_unplug} on the wire "
        f"at the unplug, recovered in {recovery:.1f} s"
    )
    print("\n" + report_line)
    for stage in flow.stages.values():
        assert stage.stop() == 0, stage.log()


def test_sigterm_makes_every_stage_deliver_and_exit_0_within_its_bound(pipeline: Pipeline) -> None:
    """SIGTERM mid-stream: each stage flushes, commits or acknowledges what it delivered, and exits 0
    within its shutdown_timeout_s (plus start-up of the interpreter's exit); nothing is lost."""
    bound_s = 3.0
    bounds = {section: {"shutdown_timeout_s": bound_s} for section in ("bridge", "ingestion")}
    flow = Flow(pipeline, {"shutdown_timeout_s": bound_s}, bounds)
    flow.start_all()
    timings = {}
    for name in ("mqtt_kafka_bridge", "influx_ingestion"):
        started = time.monotonic()
        assert flow.stages[name].stop(timeout_s=bound_s + 5) == 0, flow.stages[name].log()
        timings[name] = time.monotonic() - started
        flow.start(name)
    probe_port = free_port()
    probe = pipeline.stage(
        "latency_probe", {"health": {"port": probe_port}, "latency_probe": {"probe_interval_s": 0.2}}
    )
    # Ready = its consumer group joined; a SIGTERM during the join waits for the join to finish (~3 s here).
    poll(lambda: stage_ready(probe_port), bool, 30, "the probe ready")
    started = time.monotonic()
    assert probe.stop(timeout_s=bound_s + 5) == 0, probe.log()
    timings["latency_probe"] = time.monotonic() - started
    started = time.monotonic()
    observed = flow.finish("SIGTERM to each stage", recovery_s=0)  # the publisher's SIGTERM is in here
    timings["publisher + drain"] = time.monotonic() - started
    report(observed, flow, pipeline)
    print("exit times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    assert observed.lost == 0 and not any(gaps(pipeline).values())
    for name in ("mqtt_kafka_bridge", "influx_ingestion", "latency_probe"):
        assert timings[name] < bound_s + 2, name
