"""predictive_analysis on the real servers: readings in Kafka → forecasts with bounds in InfluxDB, an
anomaly event on Kafka for an injected spike, and a restart that continues warm from InfluxDB."""

from __future__ import annotations

import json
import math
import time

from kafka import KafkaProducer

from devstack.process import free_port, stage_metric, stage_ready
from tests.harness import Pipeline, poll
from twinpipe.envelope import Envelope, encode

DEVICE = "sim-7"  # a device of the shipped model's `simulated` thing


def test_forecasts_with_bounds_anomaly_event_and_a_warm_restart(pipeline: Pipeline) -> None:
    anomalies = f"anom-{pipeline.id}"
    override = {
        "predictive": {
            "group_id": f"predictive-{pipeline.id}",
            "anomaly_topic": anomalies,
            # 1 reading per 1 s step, the live rate of a board; no season, so the model is ready at
            # once; the shipped model of the simulated boards
            "by_thing": {
                "simulated": {"step_s": 1, "horizons_s": [1, 5], "season_s": 0, "model": "holt_winters"}
            },
            "decomposition": {"interval_s": 0},
        }
    }
    pipeline.stage("influx_ingestion")
    port = free_port()
    predictive = pipeline.stage("predictive_analysis", {**override, "health": {"port": port}})
    poll(lambda: stage_ready(port), bool, 30, "predictive_analysis ready")

    start_ns = (time.time_ns() // 10**9 - 600) * 10**9  # whole seconds, ten minutes ago
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")

    def send(first: int, last: int, spike_at: int | None = None) -> None:
        for i in range(first, last):
            value = 80.0 if i == spike_at else round(21.0 + 0.4 * math.sin(i / 5) + 0.1 * ((i * 7) % 3), 2)
            envelope = Envelope(DEVICE, "b", i, start_ns + i * 10**9, {"temperature": value})
            producer.send(pipeline.telemetry_topic, key=DEVICE.encode(), value=encode(envelope))
        producer.flush()

    send(0, 200)
    send(200, 202, spike_at=200)  # the spike, and a reading that completes its step

    # Forecasts at their future time, with conformal bounds around them.
    def bounded() -> list[dict]:
        rows = pipeline.influx_rows(
            'SELECT "forecast", "lower", "upper", "persistence" FROM "twin_forecast"'
            f" WHERE \"device\" = '{DEVICE}' AND \"horizon\" = '5'"
        )
        return [row for row in rows if row["lower"] is not None]

    # the last: made after step 200 (so reading 201 has been judged), for 205 s
    last_ns = start_ns + 205 * 10**9
    rows = poll(
        bounded,
        lambda r: len(r) >= 100 and max(row["time"] for row in r) >= last_ns,
        30,
        "bounded 5 s forecasts in InfluxDB up to the one made after the spike's step",
    )
    assert all(row["lower"] <= row["forecast"] <= row["upper"] for row in rows)
    assert max(row["time"] for row in rows) > start_ns + 200 * 10**9, "stamped at their future time"

    # The spike is one anomaly event, shaped as the interface says. With one reading per step the
    # spike is learned clipped to its bound, which moves Holt-Winters (alpha 0.5) by about q̂: the
    # reading after it may be flagged too (measured: it is, by 0.06 °C), nothing else.
    flagged = stage_metric(
        port, "twinpipe_predictive_analysis_anomalies_total", observed_property="temperature"
    )
    assert flagged in (1, 2)
    records = pipeline.kafka_records(anomalies, flagged)
    assert len(records) == flagged
    spikes = [(record, json.loads(record.value)) for record in records]
    spikes = [(record, event) for record, event in spikes if event["value"] == 80.0]
    assert len(spikes) == 1
    record, event = spikes[0]
    assert record.key == DEVICE.encode()
    assert event["time_ns"] == start_ns + 200 * 10**9
    assert event["lower"] <= event["forecast"] <= event["upper"] < 80.0
    assert (event["datastream"], event["horizon_s"], event["coverage"]) == (
        f"{DEVICE}:temperature",
        1.0,
        0.99,
    )

    # Restart: the stage warms the series up from the telemetry the ingestion stored, and its first
    # forecast after the restart already has bounds.
    poll(lambda: pipeline.influx_count(), lambda n: n >= 202, 30, "202 readings stored")
    assert predictive.stop() == 0, predictive.log()
    port2 = free_port()
    pipeline.stage("predictive_analysis", {**override, "health": {"port": port2}})
    poll(lambda: stage_ready(port2), bool, 30, "restarted predictive_analysis ready")
    send(202, 212)
    warmed = poll(
        lambda: stage_metric(port2, "twinpipe_predictive_analysis_warmup_steps_total"),
        lambda n: n > 0,
        30,
        "warm-up steps",
    )
    assert warmed >= 150, f"only {warmed} steps of history learned"
    first_after = (
        start_ns + 203 * 10**9 + 5 * 10**9
    )  # made after step 202, the first the new process completes
    row = poll(
        lambda: pipeline.influx_rows(
            f'SELECT "lower", "upper", "issued" FROM "twin_forecast" WHERE "device" = \'{DEVICE}\''
            f" AND \"horizon\" = '5' AND time = {first_after}"
        ),
        bool,
        30,
        "the first forecast after the restart",
    )[0]
    assert row["lower"] is not None and row["upper"] is not None, row
    producer.close()
