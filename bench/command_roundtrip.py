"""Benchmark: a command's round trip, produced to Kafka → the board's acknowledgement back in Kafka.

Simulated boards (10 readings/s each) through publisher and bridge, with the bridge's downlink and
the publisher's command session on. One command at a time (heater on, off, on, ...) is produced to
the command topic; its time is the produce call's start, and it ends when a consumer tailing the
event topic reads its `acknowledged` event: Kafka → bridge → MQTT → publisher → simulated board →
ACK → MQTT → bridge → Kafka. Beside it, in the same run, the telemetry path: a reading's event time
(the simulated board read) → readable from the Kafka telemetry topic, for the readings published
while the commands ran. Both are read by consumers with a 5 ms fetch wait.

`python -m bench.command_roundtrip [--commands N]` runs it alone on fresh local servers;
`make bench` (bench/run.py) runs it with the others.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.common import simulated_pipeline
from devstack.process import poll
from devstack.stack import LocalStack
from latency_probe.recorder import quantiles
from twinpipe.envelope import decode

FETCH_WAIT_MS = 5
DEVICES = 2
RATE = 20  # readings/s in all


def _tail(bootstrap: str, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap],
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_WAIT_MS,
    )
    partitions = poll(lambda: consumer.partitions_for_topic(topic), bool, 30, f"topic {topic}")
    consumer.assign([TopicPartition(topic, p) for p in partitions])
    return consumer


def roundtrip(stack: LocalStack, workdir: Path, commands: int = 50) -> dict:
    run = uuid.uuid4().hex[:8]
    prefix = f"cmd{run}"
    overrides = {
        "logging": {"level": "INFO"},  # the publisher logs when its command session is subscribed
        "publisher": {
            "topic_template": prefix + "/{device}/telemetry",
            "commands": {
                "enabled": True,
                "topic_template": prefix + "/{device}/command",
                "events_topic_template": prefix + "/{device}/command/events",
                "client_id": f"commands-{run}",
            },
        },
        "bridge": {
            "routes": [{"mqtt_filter": prefix + "/+/telemetry"}],
            "downlink": {
                "enabled": True,
                "command_topic": f"cmd-{run}",
                "events_topic": f"cev-{run}",
                "group_id": f"downlink-{run}",
                "mqtt_command_topic": prefix + "/{device}/command",
                "mqtt_events_topic": prefix + "/{device}/command/events",
            },
        },
    }
    bootstrap = stack.kafka.bootstrap
    with simulated_pipeline(stack, workdir, "cmd", RATE, overrides, DEVICES) as (stages, _bucket):
        publisher = stages["publisher"]
        poll(publisher.log, lambda log: "subscribed to" in log, 30, "the publisher's command session")
        telemetry_topic = _telemetry_topic(stages)
        telemetry = _tail(bootstrap, telemetry_topic)
        telemetry_delays: list[float] = []
        stop = threading.Event()

        def read_telemetry() -> None:
            while not stop.is_set():
                for batch in telemetry.poll(timeout_ms=100).values():
                    read_ns = time.time_ns()
                    for record in batch:
                        telemetry_delays.append((read_ns - decode(record.value).time_ns) / 1e9)

        producer = KafkaProducer(bootstrap_servers=[bootstrap], acks="all", linger_ms=0)
        events = None
        delays: list[float] = []
        failed = 0
        seen: dict[tuple[str, str], int] = {}
        created: dict[str, int] = {}
        reader = threading.Thread(target=read_telemetry, daemon=True)
        try:
            for i in range(commands + 1):  # the first one warms up (topic metadata, group join)
                command_id = uuid.uuid4().hex
                now = time.time_ns()
                command = {
                    "v": 1, "id": command_id, "device": "sim-1", "settings": {"heater": i % 2 == 0},
                    "desired_version": i + 1, "created_ns": now, "expires_ns": now + 60 * 10**9,
                }  # fmt: skip
                started = time.perf_counter()
                producer.send(f"cmd-{run}", key=b"sim-1", value=json.dumps(command).encode())
                producer.flush()
                if events is None:
                    events = _tail(bootstrap, f"cev-{run}")
                state = _await_outcome(events, command_id, seen)
                created[command_id] = now
                if i == 0:
                    reader.start()
                    continue
                if state == "acknowledged":
                    delays.append(time.perf_counter() - started)
                else:
                    failed += 1
        finally:
            stop.set()
            if reader.is_alive():
                reader.join(5)
            producer.close()
            telemetry.close()
            if events is not None:
                events.close()
    result: dict = {"commands": commands, "acknowledged": len(delays), "failed": failed}
    if delays:
        p50, p99 = quantiles(delays, (0.5, 0.99))
        result |= {
            "p50_ms": round(p50 * 1e3, 1),
            "p99_ms": round(p99 * 1e3, 1),
            "max_ms": round(max(delays) * 1e3, 1),
        }
    # Where the time goes: each state's stamp (the stage's wall clock) after the command's creation.
    for state in ("sent", "delivered", "written", "acknowledged"):
        steps = [(seen[(c, state)] - t) / 1e6 for c, t in list(created.items())[1:] if (c, state) in seen]
        if steps:
            result[f"{state}_after_ms_p50"] = round(quantiles(steps, (0.5,))[0], 1)
    if telemetry_delays:
        p50, p99 = quantiles(telemetry_delays, (0.5, 0.99))
        result |= {
            "telemetry_readings": len(telemetry_delays),
            "telemetry_p50_ms": round(p50 * 1e3, 1),
            "telemetry_p99_ms": round(p99 * 1e3, 1),
        }
    return result


def _telemetry_topic(stages: dict) -> str:
    """The telemetry topic simulated_pipeline gave this run (from the stages' config file)."""
    config_path = Path(stages["publisher"].argv[stages["publisher"].argv.index("--config") + 1])
    return yaml.safe_load(config_path.read_text())["kafka"]["telemetry_topic"]


def _await_outcome(events: KafkaConsumer, command_id: str, seen: dict, timeout_s: float = 30) -> str:
    """The command's final state (acknowledged, failed or expired) as read from the event topic;
    every event's time_ns by (id, state) goes to `seen`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for batch in events.poll(timeout_ms=50).values():
            for record in batch:
                event = json.loads(record.value)
                seen[(event["id"], event["state"])] = event["time_ns"]
                if event["id"] == command_id and event["state"] in ("acknowledged", "failed", "expired"):
                    return event["state"]
    return "timeout"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.command_roundtrip", description=__doc__)
    parser.add_argument("--commands", type=int, default=50, help="commands, one at a time (default 50)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="twinpipe-bench-"))
    with LocalStack(workdir / "servers") as stack:
        print(json.dumps(roundtrip(stack, workdir, args.commands), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
