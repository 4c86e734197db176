"""Benchmark: a command's round trip, through the API (PATCH → `applied` seen by the long poll) and
from Kafka (produced → the board's acknowledgement back in Kafka).

Simulated boards (10 readings/s each) through publisher and bridge, with the bridge's downlink, the
publisher's command session and the twin state stage on. Two phases, one command at a time (heater
on, off, on, ...), each after a warm-up command:
- Kafka: a command produced to the command topic; its time is the produce call's start, and it ends
  when a consumer tailing the event topic reads its `acknowledged` event: Kafka → bridge → MQTT →
  publisher → simulated board → ACK → MQTT → bridge → Kafka.
- API: `PATCH /things/sim-1/desired` to the twin state stage, then `GET /commands/{id}?wait_s=&after=`
  (the long poll `python -m twinpipe command --wait` uses) until the command is closed; its time ends
  when the poll returns `applied`: the Kafka path above, plus the API, the state stage's produce and
  its consumption of the events. The journal's stamps say where the time went.
Beside them, in the same run, the telemetry path: a reading's event time (the simulated board read)
→ readable from the Kafka telemetry topic, for the readings published while the commands ran. Kafka
is read by consumers with a 5 ms fetch wait.

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

from bench.common import delay_figures, simulated_pipeline
from devstack.command_loop import command_loop
from devstack.process import free_port, poll
from devstack.stack import LocalStack
from latency_probe.recorder import quantiles
from twinpipe.command import CommandError, request
from twinpipe.command_messages import encode_command, new_command
from twinpipe.envelope import decode

FETCH_WAIT_MS = 5
DEVICES = 2
RATE = 20  # readings/s in all
CLOSED = ("applied", "expired", "failed")


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
    token, port = uuid.uuid4().hex, free_port()
    overrides = command_loop(prefix, run)
    overrides["twin_state"] |= {"host": "127.0.0.1", "port": port, "token": token}
    overrides["logging"] = {"level": "INFO"}  # the publisher logs when its command session is subscribed
    overrides["publisher"]["topic_template"] = prefix + "/{device}/telemetry"
    overrides["bridge"]["routes"] = [{"mqtt_filter": prefix + "/+/telemetry"}]
    api = f"http://127.0.0.1:{port}"
    bootstrap = stack.kafka.bootstrap
    also = ("twin_state",)
    with simulated_pipeline(stack, workdir, "cmd", RATE, overrides, DEVICES, also) as (stages, _bucket):
        publisher = stages["publisher"]
        # This run's session (the log file is shared by the runs): commands sent before it subscribed
        # are dropped by the broker and reported failed.
        session = f"command session commands-{run} connected"
        poll(
            publisher.log,
            lambda log: session in log and "subscribed to" in log.split(session, 1)[1],
            30,
            "the publisher's command session",
        )
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
                now = time.time_ns()
                command = new_command("sim-1", {"heater": i % 2 == 0}, i + 1, now, now + 60 * 10**9)
                command_id = command.id
                started = time.perf_counter()
                producer.send(f"cmd-{run}", key=b"sim-1", value=encode_command(command))
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
            # The state stage has read the Kafka phase's commands (it consumes the command topic too):
            # the API's commands come after them in its journal, not mixed in and pruned among them.
            poll(lambda: _desired_version(api), lambda v: v >= commands + 1, 60, "the twin caught up")
            api_delays, journal = _api_commands(api, token, commands)
        finally:
            stop.set()
            if reader.is_alive():
                reader.join(5)
            producer.close()
            telemetry.close()
            if events is not None:
                events.close()
    result: dict = {"commands": commands, "acknowledged": len(delays), "failed": failed}
    result |= delay_figures(delays, digits=1)
    # Where the time goes: each state's stamp (the stage's wall clock) after the command's creation.
    for state in ("sent", "delivered", "written", "acknowledged"):
        steps = [(seen[(c, state)] - t) / 1e6 for c, t in list(created.items())[1:] if (c, state) in seen]
        if steps:
            result[f"{state}_after_ms_p50"] = round(quantiles(steps, (0.5,))[0], 1)
    applied = [d for d, entry in zip(api_delays, journal, strict=True) if entry["state"] == "applied"]
    result |= {"api_applied": len(applied), "api_not_applied": len(journal) - len(applied)}
    result |= delay_figures(applied, "api_", digits=1, with_max=False)
    # The journal's stamps (each stage's wall clock) after the command's creation by the state stage.
    for state in ("sent", "delivered", "written", "acknowledged", "applied"):
        steps = [
            (next(h["time_ns"] for h in entry["history"] if h["state"] == state) - entry["created_ns"]) / 1e6
            for entry in journal
            if any(h["state"] == state for h in entry["history"])
        ]
        if steps:
            result[f"api_{state}_after_ms_p50"] = round(quantiles(steps, (0.5,))[0], 1)
    if telemetry_delays:
        p50, p99 = quantiles(telemetry_delays, (0.5, 0.99))
        result |= {
            "telemetry_readings": len(telemetry_delays),
            "telemetry_p50_ms": round(p50 * 1e3, 1),
            "telemetry_p99_ms": round(p99 * 1e3, 1),
        }
    return result


def _desired_version(api: str) -> int:
    try:
        return request("GET", f"{api}/things/sim-1/state", timeout_s=2)["desired_version"]
    except CommandError:  # not up yet
        return -1


def _api_commands(api: str, token: str, commands: int) -> tuple[list[float], list[dict]]:
    """`commands` commands (after a warm-up one) through the API, one at a time: each one's seconds
    from the PATCH to the long poll returning it closed, and its journal entry."""
    delays: list[float] = []
    journal: list[dict] = []
    for i in range(commands + 1):
        started = time.perf_counter()
        body = {"settings": {"heater": i % 2 == 0}}
        entry = request("PATCH", f"{api}/things/sim-1/desired", token, body)["command"]
        while entry["state"] not in CLOSED:
            query = f"wait_s=10&after={entry['state']}"
            entry = request("GET", f"{api}/commands/{entry['id']}?{query}", timeout_s=30)
        if i > 0:
            delays.append(time.perf_counter() - started)
            journal.append(entry)
    return delays, journal


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
