"""Helpers for integration tests: a per-test pipeline on the session's servers and what arrived there."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devstack.process import http_get, poll
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess


class Pipeline:
    def __init__(self, stack: LocalStack, workdir: Path, run_id: str) -> None:
        self.stack = stack
        self.workdir = workdir
        self.id = run_id
        self.telemetry_topic = f"tele-{run_id}"
        self.dead_letter_topic = f"dlq-{run_id}"
        self.mqtt_prefix = f"t{run_id}"
        self.bucket = f"b{run_id}"
        stack.influx.add_bucket(self.bucket)
        self.stages: list[StageProcess] = []

    def config(self, override: dict[str, Any] | None = None) -> dict[str, Any]:
        base = merged(
            self.stack.config(),
            {
                "kafka": {
                    "telemetry_topic": self.telemetry_topic,
                    "dead_letter_topic": self.dead_letter_topic,
                },
                "influxdb": {"bucket": self.bucket},
                "publisher": {"topic_template": self.mqtt_prefix + "/{device}/telemetry"},
                "bridge": {
                    "routes": [{"mqtt_filter": f"{self.mqtt_prefix}/+/telemetry"}],
                    "client_id": f"bridge-{self.id}",
                },
                "ingestion": {"group_id": f"ingestion-{self.id}"},
                "logging": {"level": "INFO"},
                "health": {"port": 0},
            },
        )
        return merged(base, override or {})

    def write_config(self, override: dict[str, Any] | None = None, name: str = "config.yaml") -> Path:
        return write_config(self.workdir / name, self.config(override))

    def stage(
        self,
        module: str,
        override: dict[str, Any] | None = None,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> StageProcess:
        path = self.write_config(override, name=f"{module}-{len(self.stages)}.yaml")
        process = StageProcess(module, path, self.workdir, *args, env={**self.stack.env(), **(env or {})})
        self.stages.append(process)
        return process.start()

    def board(self, link: Path, *args: str) -> StageProcess:
        """A simulated board writing frames into a pty at `link` (python -m publisher.simulate)."""
        config = self.write_config(name="board.yaml")
        process = StageProcess("publisher.simulate", config, self.workdir, "--pty", str(link), *args)
        self.stages.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in self.stages:
            process.stop(timeout_s=15)

    def logs(self) -> str:
        return "\n".join(f"===== {p.module} =====\n{p.log()}" for p in self.stages)

    # --- reading what arrived ---

    def mqtt_client(self, client_id: str = "") -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.connect("127.0.0.1", self.stack.mosquitto.port)
        client.loop_start()
        return client

    def kafka_records(
        self,
        topic: str,
        expected: int,
        timeout_s: float = 30,
        distinct: Callable[[ConsumerRecord], Hashable] | None = None,
    ) -> list[ConsumerRecord]:
        """Every record of `topic` from the beginning, once at least `expected` have arrived (or, with
        `distinct`, `expected` different keys: re-sent duplicates do not count)."""
        consumer = KafkaConsumer(
            bootstrap_servers=[self.stack.kafka.bootstrap], group_id=None, enable_auto_commit=False
        )
        records: list[ConsumerRecord] = []
        try:
            partitions = poll(lambda: consumer.partitions_for_topic(topic), bool, timeout_s, f"topic {topic}")
            assigned = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)

            seen: set[Hashable] = set()

            def read() -> int:
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
                    if distinct is not None:
                        seen.update(map(distinct, batch))
                return len(records) if distinct is None else len(seen)

            poll(read, lambda n: n >= expected, timeout_s, f"{expected} records in {topic}")
            # Catch any extra (duplicate) records that are already there.
            for _ in range(3):
                read()
        finally:
            consumer.close()
        return records

    def influx_rows(self, influxql: str) -> list[dict[str, Any]]:
        return self.stack.influxd.rows(influxql, self.bucket)

    def influx_count(self, measurement: str = "telemetry") -> int:
        rows = self.influx_rows(f'SELECT count("seq") FROM "{measurement}"')
        return rows[0]["count"] if rows else 0


def assert_not_ready_naming_takeover(port: int, key: str, who: str) -> None:
    """The stage on health `port` fails /readyz naming the stolen session and the config `key` to change."""
    status, body = poll(
        lambda: http_get(f"http://127.0.0.1:{port}/readyz"),
        lambda answer: answer[0] == 503 and "taken over" in answer[1],
        30,
        f"{who} not ready, naming the takeover",
    )
    assert key in json.loads(body)["reasons"]["session"]
