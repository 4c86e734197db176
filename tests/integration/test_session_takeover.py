"""Two publishers on one MQTT client id (issue 11, section 4; the bridges' case is in test_bridge.py),
against Debian's Mosquitto 2.0.11, which closes the old connection without MQTT 5's 0x8E: the flap
rule of twinpipe/takeover.py names it."""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord

from devstack.process import free_port, stage_metric, stage_ready
from devstack.stages import StageProcess
from tests.harness import Pipeline, assert_not_ready_naming_takeover, poll
from twinpipe.envelope import decode


def reading(record: ConsumerRecord) -> tuple[str, str, int]:
    envelope = decode(record.value)
    return envelope.device, envelope.boot, envelope.seq


def own_stage(pipeline: Pipeline, name: str, override: dict) -> tuple[StageProcess, int]:
    """A stage with its own health port and its own log file (two of a kind otherwise share one)."""
    port = free_port()
    logs = pipeline.workdir / name
    logs.mkdir()
    config = pipeline.write_config({**override, "health": {"port": port}}, name=f"{name}.yaml")
    process = StageProcess(name.split("-")[0], config, logs, env=pipeline.stack.env()).start()
    pipeline.stages.append(process)
    return process, port


def test_two_publishers_on_one_client_id_name_the_stolen_session_once_and_lose_nothing(
    pipeline: Pipeline,
) -> None:
    metric = "twinpipe_publisher_session_takeovers_total"
    bridge_port = free_port()
    bridge = pipeline.stage("mqtt_kafka_bridge", {"health": {"port": bridge_port}})
    poll(lambda: stage_ready(bridge_port), bool, 30, "the bridge subscribed")
    publishers = {
        name: own_stage(
            pipeline,
            f"publisher-{name}",
            {
                "publisher": {
                    "client_id": f"pub-{pipeline.id}",
                    "simulator": {"rate_hz": 20, "devices": 1, "device_prefix": f"board{name}"},
                }
            },
        )
        for name in ("a", "b")
    }
    for name, (_process, port) in publishers.items():
        poll(lambda port=port: stage_metric(port, metric), bool, 30, f"publisher {name}'s takeover counted")
        assert_not_ready_naming_takeover(port, "publisher.client_id", f"publisher {name}")
    published = 0
    for process, _port in publishers.values():
        assert process.stop() == 0, process.log()
        text = process.log()
        assert text.count("taken over by another client with the same id") == 1, text[-3000:]
        assert f"client id 'pub-{pipeline.id}'" in text
        published += int(text.rsplit("stopped: ", 1)[1].split()[0])
    records = pipeline.kafka_records(pipeline.telemetry_topic, published, timeout_s=60, distinct=reading)
    keys = set(map(reading, records))
    assert len(keys) == published, "every reading of both publishers reached Kafka"
    assert bridge.stop() == 0
