"""The small pure pieces of the stages: simulator, sequencing, buffer, routing, acks, points, rendering."""

from __future__ import annotations

import logging
import random
import statistics
import time
from types import SimpleNamespace

import pytest

from consumer_display.render import Redeliveries, Throttle, format_line, hop_delays_ms
from influx_ingestion.ingestion import Batch, observe_write_delays
from influx_ingestion.points import PointMapper
from mqtt_kafka_bridge.acks import InOrderAcks
from mqtt_kafka_bridge.routing import Router, RoutingError
from publisher.buffer import DropOldestBuffer
from publisher.sequencer import Sequencer
from publisher.simulator import SimulatedBoard, models_for_fields
from twinpipe.config import DEFAULT_SENSORS, NUCLEO_FIELDS, Route, SensorModel, SimulatorConfig
from twinpipe.envelope import Envelope
from twinpipe.metrics import sample
from twinpipe.ratelog import RepeatFilter


def test_simulated_sensor_statistics_follow_the_model() -> None:
    config = SimulatorConfig(outlier_probability=0.0)
    board = SimulatedBoard({"t": SensorModel(mean=25, stddev=2, drift=0.0)}, config, random.Random(1))
    values = [board.read()["t"] for _ in range(5000)]
    assert statistics.fmean(values) == pytest.approx(25, abs=0.15)
    assert statistics.stdev(values) == pytest.approx(2, rel=0.05)


def test_outliers_appear_at_the_configured_rate() -> None:
    config = SimulatorConfig(outlier_probability=0.05, outlier_scale=10)
    board = SimulatedBoard({"t": SensorModel(mean=0, stddev=1)}, config, random.Random(2))
    outliers = sum(abs(board.read()["t"]) > 6 for _ in range(4000))
    assert 120 < outliers < 280


def test_same_seed_same_values() -> None:
    def run() -> list[dict[str, float]]:
        board = SimulatedBoard(DEFAULT_SENSORS, SimulatorConfig(), random.Random(7))
        return [board.read() for _ in range(10)]

    assert run() == run()


def test_frame_fields_find_their_models_by_suffix() -> None:
    models = models_for_fields(NUCLEO_FIELDS, DEFAULT_SENSORS)
    assert models["wall2_humidity"] == DEFAULT_SENSORS["humidity"]
    with pytest.raises(ValueError, match="no model for frame field 'co2'"):
        models_for_fields(["co2"], DEFAULT_SENSORS)


def test_sequencer_counts_and_keeps_event_times_distinct() -> None:
    sequencer = Sequencer("d", "boot-1")
    first, second = sequencer.stamp({"t": 1.0}, 1000), sequencer.stamp({"t": 2.0}, 1000)
    assert (first.seq, second.seq) == (0, 1)
    assert second.time_ns == 1001


def test_buffer_drops_oldest_and_counts() -> None:
    buffer: DropOldestBuffer[int] = DropOldestBuffer(3)
    assert [buffer.put(i) for i in range(5)] == [None, None, None, 0, 1]
    assert buffer.dropped == 2
    assert [buffer.get(0), buffer.get(0), buffer.get(0), buffer.get(0)] == [2, 3, 4, None]


def test_routing_templates_and_shared_subscriptions() -> None:
    router = Router(
        [Route(mqtt_filter="lab/+/env", kafka_topic="lab.{1}"), Route(mqtt_filter="twin/#")],
        "twin.telemetry",
        shared_group="bridges",
    )
    assert router.subscriptions() == ["$share/bridges/lab/+/env", "$share/bridges/twin/#"]
    assert router.kafka_topic("lab/room7/env", "room7") == "lab.room7"
    assert router.kafka_topic("twin/d1/telemetry", "d1") == "twin.telemetry"
    with pytest.raises(RoutingError, match="no route matches"):
        router.kafka_topic("other/x", "d1")
    with pytest.raises(RoutingError, match="invalid Kafka topic"):
        router.kafka_topic("lab/bad name/env", "d1")


def test_acks_are_sent_in_arrival_order_once_delivered() -> None:
    sent: list[int] = []
    acks = InOrderAcks(sent.append)
    first, second, third = acks.received(1), acks.received(2), acks.received(3)
    acks.delivered(second)
    acks.delivered(third)
    assert sent == []  # message 1 is not in Kafka yet: acknowledging 2 and 3 must wait
    acks.delivered(first)
    assert sent == [1, 2, 3] and len(acks) == 0


def test_acks_of_a_lost_connection_are_never_sent_on_the_next() -> None:
    sent: list[int] = []
    acks = InOrderAcks(sent.append)
    old = acks.received(5)
    acks.reset()  # disconnected: the broker redelivers message 5 and may reuse id 5
    reused = acks.received(5)
    acks.delivered(old)
    assert sent == []
    acks.delivered(reused)
    assert sent == [5]


def test_point_mapping_uses_event_time_and_tags() -> None:
    mapper = PointMapper("telemetry", {"site": "lab"}, {"dev 1": {"location": "wall"}})
    envelope = Envelope("dev 1", "b1", 42, 1_700_000_000_123_456_789, {"temperature": 24.5, "humidity": 60.0})
    assert mapper.to_line(envelope) == (
        "telemetry,device=dev\\ 1,location=wall,site=lab "
        'boot="b1",humidity=60,seq=42i,temperature=24.5 1700000000123456789'
    )


def test_hop_delays_and_line_format() -> None:
    envelope = Envelope(
        "d", "b", 5, 1_000_000_000, {"t": 21.0}, {"publish": 1_002_000_000, "bridge": 1_003_000_000}
    )
    delays = hop_delays_ms(envelope, kafka_timestamp_ms=1_005, now_ns=1_010_000_000)
    assert delays == {"read→publish": 2.0, "publish→bridge": 1.0, "bridge→kafka": 2.0, "kafka→here": 5.0}
    line = format_line(envelope, delays)
    assert "d #5 t=21.00" in line and "bridge→kafka 2.0ms" in line


def test_throttle_summarises_what_it_did_not_show() -> None:
    now = [0.0]
    throttle = Throttle(max_lines_per_s=2, clock=lambda: now[0])
    shown = [throttle.admit(f"d{i % 3}") for i in range(10)]
    assert shown.count(True) == 2
    assert throttle.summary() is None
    now[0] = 1.0
    assert throttle.summary() == "… 8 more messages from 3 device(s) in 1.0 s (10 msg/s)"
    assert throttle.admit("d0")


def test_the_display_shows_a_redelivered_reading_once_and_counts_it() -> None:
    def reading(device: str, seq: int, boot: str) -> Envelope:
        return Envelope(device=device, boot=boot, seq=seq, time_ns=10, values={"temperature": 0.0})

    redelivered = Redeliveries(memory=3)
    stream = [reading("sim-1", 0, "a"), reading("sim-1", 0, "a"), reading("sim-2", 0, "a")]
    stream += [reading("sim-1", 0, "b")]  # a restarted publisher: new boot, seq from 0 again
    assert [redelivered.is_repeat(e) for e in stream] == [False, True, False, False]
    assert redelivered.repeats == 1
    for seq in range(1, 4):  # pushes sim-1 #0 out of the memory of 3
        redelivered.is_repeat(reading("sim-1", seq, "a"))
    assert not redelivered.is_repeat(reading("sim-1", 0, "a")), "forgotten beyond its memory"


def test_client_library_repeats_pass_once_per_interval_ours_always() -> None:
    repeat = RepeatFilter(("kafka",), interval_s=60)

    def record(name: str, msg: str, arg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (arg,), None)

    passed = [repeat.filter(record("kafka.net", "Connection lost: %s", str(i))) for i in range(5)]
    assert passed == [True, False, False, False, False]
    assert repeat.filter(record("kafka.net", "Metadata refresh failed: %s", "x")), "another kind passes"
    assert all(repeat.filter(record("mqtt_kafka_bridge", "Connection lost: %s", "x")) for _ in range(3))


@pytest.mark.parametrize(("points", "observed"), [(0, 0), (5, 5), (100, 100), (1000, 100), (1001, 91)])
def test_write_delays_are_observed_for_an_even_sample_of_each_batch(points: int, observed: int) -> None:
    now_ns = time.time_ns()
    batch = Batch(
        sources=[SimpleNamespace(timestamp=now_ns // 1_000_000 - 5) for _ in range(points)],
        event_times=[now_ns - 10_000_000] * points,
        replayed=[False] * points,
    )
    before = sample("twinpipe_ingestion_end_to_end_delay_seconds_count")
    observe_write_delays(batch, now_ns)
    assert sample("twinpipe_ingestion_end_to_end_delay_seconds_count") - before == observed
