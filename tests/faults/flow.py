"""Simulated boards streaming through the whole pipeline, and the books to check that every reading
produced is stored exactly once after a fault."""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devstack.process import free_port, stage_metric, stage_ready
from devstack.stages import StageProcess
from tests.harness import Pipeline, poll
from twinpipe.envelope import PROBE_DEVICE, decode

BOARDS_ONLY = f"\"device\" != '{PROBE_DEVICE}'"  # a latency probe's readings are no board's
DEVICES = 2
RATE_HZ = 50  # per device


@dataclass
class Observed:
    scenario: str
    produced: int
    stored: int
    lost: int
    duplicates: int  # Kafka records beyond one per (device, boot, seq)
    recovery_s: float
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = (
            f"{self.scenario}: produced {self.produced}, stored {self.stored}, lost {self.lost}, "
            f"duplicates {self.duplicates}, recovered in {self.recovery_s:.1f} s"
        )
        return text + "".join(f"; {note}" for note in self.notes)


class Flow:
    """Ingestion, bridge and a simulated-board publisher, each with a metrics port."""

    def __init__(
        self,
        pipeline: Pipeline,
        publisher_settings: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        """`config`: more settings for every stage's config file."""
        self.pipeline = pipeline
        self.config = config or {}
        self.ports = {name: free_port() for name in ("publisher", "mqtt_kafka_bridge", "influx_ingestion")}
        self.publisher_settings = publisher_settings or {}
        self.stages: dict[str, StageProcess] = {}
        self.boots_killed: list[int] = []  # readings counted by publishers killed with SIGKILL

    def start(self, name: str) -> StageProcess:
        override: dict[str, Any] = {**self.config, "health": {"port": self.ports[name]}}
        if name == "publisher":
            simulator = {"devices": DEVICES, "rate_hz": RATE_HZ, "seed": 7}
            override["publisher"] = {"simulator": simulator, **self.publisher_settings}
        self.stages[name] = self.pipeline.stage(name, override)
        return self.stages[name]

    def start_all(self) -> None:
        """The board starts once the bridge has subscribed, as in compose: before that, the broker
        has no session to keep readings for the bridge in."""
        self.start("influx_ingestion")
        self.start("mqtt_kafka_bridge")
        poll(lambda: stage_ready(self.ports["mqtt_kafka_bridge"]), bool, 30, "the bridge subscribed")
        self.start("publisher")
        poll(self.stored, lambda n: n > 0, 60, "the first points in InfluxDB")

    def readings(self) -> int:
        return int(stage_metric(self.ports["publisher"], "twinpipe_publisher_readings_total"))

    def stored(self) -> int:
        rows = self.pipeline.influx_rows(f'SELECT count("seq") FROM "telemetry" WHERE {BOARDS_ONLY}')
        return rows[0]["count"] if rows else 0

    def wait_recovered(self, produced_before: int, since: float, timeout_s: float = 90) -> float:
        """Seconds from `since` until InfluxDB holds at least `produced_before` readings."""
        poll(self.stored, lambda n: n >= produced_before, timeout_s, f"{produced_before} readings stored")
        return time.monotonic() - since

    def outage(self, cut: Callable[[], object], restore: Callable[[], object], seconds: float) -> float:
        """The fault itself: `cut`, `seconds` of outage, `restore`. Returns the recovery time: from the
        restore until InfluxDB holds every reading produced up to then."""
        cut()
        time.sleep(seconds)
        restore()
        restored = time.monotonic()
        return self.wait_recovered(self.readings(), restored)

    def finish(self, scenario: str, recovery_s: float, allowed_loss: int = 0) -> Observed:
        """Stop the boards (the publisher drains its buffer), wait for InfluxDB to hold what they
        produced, then check every (device, boot, seq) once and count the Kafka duplicates."""
        publisher = self.stages["publisher"]
        assert publisher.stop() == 0, publisher.log()
        produced = sum(int(n) for n in re.findall(r"stopped: (\d+) readings", publisher.log()))
        expected = produced - allowed_loss
        with contextlib.suppress(TimeoutError):  # the assertions after this say what is missing
            poll(self.stored, lambda n: n >= expected, 90, f"{expected} readings stored")
        rows = self.pipeline.influx_rows(
            f'SELECT "seq", "boot", "device" FROM "telemetry" WHERE {BOARDS_ONLY}'
        )
        keys = [(row["device"], row["boot"], row["seq"]) for row in rows]
        assert len(keys) == len(set(keys)), "one point per reading"
        records = self.pipeline.kafka_records(self.pipeline.telemetry_topic, len(keys))
        envelopes = [e for e in map(decode, (r.value for r in records)) if e.device != PROBE_DEVICE]
        in_kafka = Counter((e.device, e.boot, e.seq) for e in envelopes)
        for stage in self.stages.values():
            assert stage.stop() == 0, stage.log()
        stored_keys = set(keys)
        self.missing_in_influx = sorted(k for k in in_kafka if k not in stored_keys)
        return Observed(
            scenario,
            produced,
            len(keys),
            produced - len(keys),
            sum(n - 1 for n in in_kafka.values()),
            recovery_s,
        )

    def finish_after_kill(self, scenario: str, recovery_s: float, counted_before_kill: int) -> Observed:
        """`finish` for a run whose publisher was SIGKILLed after it had counted `counted_before_kill`
        readings: those of the killed boot count as produced, and only its tail may be missing."""
        observed = self.finish(scenario, recovery_s)
        killed_boot_stored = observed.stored - observed.produced  # `produced` counts only the clean stop
        observed.lost = max(0, counted_before_kill - killed_boot_stored)
        observed.produced += counted_before_kill
        observed.notes.append(f"killed boot: {killed_boot_stored} stored of ≥{counted_before_kill} counted")
        return observed


def gaps(pipeline: Pipeline) -> dict[tuple[str, str], list[int]]:
    """Missing seqs per (device, boot) below the highest stored one."""
    rows = pipeline.influx_rows(f'SELECT "seq", "boot", "device" FROM "telemetry" WHERE {BOARDS_ONLY}')
    seen: dict[tuple[str, str], set[int]] = {}
    for row in rows:
        seen.setdefault((row["device"], row["boot"]), set()).add(row["seq"])
    return {key: sorted(set(range(max(seqs) + 1)) - seqs) for key, seqs in seen.items()}
