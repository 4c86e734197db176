"""Benchmark 1, bridge throughput: msg/s from MQTT (QoS 1) into Kafka, counted by consuming the
topic (unique readings, duplicates). The broker is flooded as fast as a lean publisher can (about
200k msg/s here, far above any bridge), so each bridge drains at its own maximum. Baselines in the
same run: the naive hobby bridge, and the C pipeline `mosquitto_sub -q 1 | kcat -P`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.common import cpu_seconds, payloads, read_topic
from bench.loadgen import LeanPublisher
from devstack.process import free_port, poll, stage_metric, stage_ready
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess


@dataclass
class Running:
    """A bridge under test: its processes, and the health ports of twinpipe bridges."""

    pids: list[int]
    health_ports: list[int] = field(default_factory=list)


def _bridge_stage(stack: LocalStack, workdir: Path, name: str, settings: dict) -> tuple[StageProcess, int]:
    port = free_port()
    document = {
        "kafka": {"telemetry_topic": settings.pop("topic")},
        "bridge": {"client_id": name, **settings},
        "health": {"port": port, "host": "127.0.0.1"},
        "logging": {"level": "WARNING"},
    }
    config = write_config(workdir / f"{name}.yaml", merged(stack.config(), document))
    return StageProcess("mqtt_kafka_bridge", config, workdir).start(), port


@contextmanager
def twinpipe_bridge(
    stack: LocalStack,
    workdir: Path,
    mqtt_filter: str,
    topic: str,
    run: str,
    producer: str = "kafka-python",
    replicas: int = 1,
) -> Iterator[Running]:
    """`replicas` bridges (more than one: on one MQTT 5 shared subscription)."""
    # The load generator publishes ten devices on one topic, as a gateway would: the route allows it.
    route = {"mqtt_filter": mqtt_filter, "check_device": False}
    settings = {"topic": topic, "routes": [route], "producer": producer}
    if replicas > 1:
        settings["shared_group"] = f"g{run}"
    stages = [_bridge_stage(stack, workdir, f"bridge-{run}-{i}", dict(settings)) for i in range(replicas)]
    try:
        for _stage, port in stages:
            poll(lambda port=port: stage_ready(port), bool, 30, "the bridge subscribed")
        yield Running([stage.process.pid for stage, _port in stages], [port for _stage, port in stages])
    finally:
        for stage, _port in stages:
            stage.stop()


@contextmanager
def naive_bridge(
    stack: LocalStack, workdir: Path, mqtt_filter: str, topic: str, run: str
) -> Iterator[Running]:
    log = workdir / f"naive-{run}.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.baselines.naive_bridge", str(stack.mosquitto.port), mqtt_filter,
             stack.kafka.bootstrap, topic],
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        poll(lambda: "subscribed" in log.read_text(), bool, 30, "the naive bridge subscribed")
        yield Running([process.pid])
    finally:
        process.terminate()
        process.wait(10)


def _librdkafka_dir(workdir: Path) -> str:
    """kcat from Debian links librdkafka 2.0.2, which cannot talk to the test broker; the one in the
    confluent-kafka wheel can. The wheel renames it (librdkafka-<hash>.so.1), so link it back."""
    import confluent_kafka

    (library,) = (Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs").glob(
        "librdkafka-*.so.1"
    )
    directory = workdir / "librdkafka"
    directory.mkdir(exist_ok=True)
    link = directory / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(library)
    return str(directory)


@contextmanager
def c_pipeline(stack: LocalStack, workdir: Path, mqtt_filter: str, topic: str, run: str) -> Iterator[Running]:
    log = workdir / f"c-pipeline-{run}.log"
    env = {**os.environ, "LD_LIBRARY_PATH": _librdkafka_dir(workdir)}
    subscribe = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(stack.mosquitto.port), "-q", "1", "-c",
                 "-i", f"csub-{run}", "-t", mqtt_filter]  # fmt: skip
    # A first, short-lived subscriber creates the persistent session, so the broker queues for it
    # from then on; mosquitto_sub has no "subscribed" signal that would not go into the pipe.
    subprocess.run([*subscribe, "-W", "1"], capture_output=True)
    with open(log, "wb") as stderr:
        # Line-buffered, or the last messages would wait in mosquitto_sub's stdout buffer.
        sub = subprocess.Popen(["stdbuf", "-oL", *subscribe], stdout=subprocess.PIPE, stderr=stderr)
        kcat = subprocess.Popen(
            ["kcat", "-P", "-b", stack.kafka.bootstrap, "-t", topic], stdin=sub.stdout, env=env, stderr=stderr
        )
    try:
        yield Running([sub.pid, kcat.pid])
    finally:
        sub.terminate()
        sub.wait(10)
        kcat.wait(30)  # flushes what it has read


DEFAULT = "twinpipe bridge (kafka-python producer, the default)"
CONFLUENT = "twinpipe bridge (confluent-kafka producer)"
NAIVE = "naive bridge (baseline)"
C_PIPELINE = "C pipeline (baseline)"
BRIDGES = {
    DEFAULT: twinpipe_bridge,
    CONFLUENT: partial(twinpipe_bridge, producer="confluent-kafka"),
    "2 twinpipe bridges on one shared subscription (kafka-python)": partial(twinpipe_bridge, replicas=2),
    "2 twinpipe bridges on one shared subscription (confluent-kafka)": partial(
        twinpipe_bridge, producer="confluent-kafka", replicas=2
    ),
    NAIVE: naive_bridge,
    C_PIPELINE: c_pipeline,
}


def flood(stack: LocalStack, workdir: Path, bridge, count: int) -> dict:
    run = uuid.uuid4().hex[:8]
    topic, mqtt_filter = f"bench-{run}", f"b{run}/+/telemetry"
    messages = payloads(count)
    with bridge(stack, workdir, mqtt_filter, topic, run) as running:
        publisher = LeanPublisher(stack.mosquitto.port, f"load-{run}")
        cpu_before = sum(map(cpu_seconds, running.pids))
        started_wall = time.time()
        publisher.publish_all(f"b{run}/load/telemetry", messages)
        arrival = read_topic(stack.kafka.bootstrap, topic, count)
        cpu = sum(map(cpu_seconds, running.pids)) - cpu_before
        publisher.close()
        # What each replica delivered (twinpipe bridges only): shows how a shared subscription splits.
        split = [
            int(stage_metric(p, "twinpipe_bridge_records_delivered_total")) for p in running.health_ports
        ]
    elapsed = arrival.last_timestamp_s - started_wall
    return {
        "delivered_per_replica": split,
        "cpu_us_per_msg": round(cpu / arrival.unique * 1e6, 1) if arrival.unique else None,
        "messages": count,
        "unique": arrival.unique,
        "lost": count - arrival.unique,
        "duplicates": arrival.duplicates,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(arrival.unique / elapsed) if elapsed > 0 else None,
    }


def available(name: str) -> bool:
    if name.startswith("C pipeline") and not (shutil.which("kcat") and shutil.which("mosquitto_sub")):
        return False
    if "confluent" in name or name.startswith("C pipeline"):
        return importlib.util.find_spec("confluent_kafka") is not None
    return True
