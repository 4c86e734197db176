"""Observing a running pipeline: every stage's /metrics and /readyz, the latency probe (passive and
active), Prometheus scraping them with the repository's config, and every Grafana panel's query run
against the real InfluxDB and Prometheus with its template variables substituted."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from typing import Any

from kafka import KafkaProducer

from alerting.outputs import influx_line
from devstack.process import free_port, http_get, metric_value, stage_ready
from devstack.prometheus import Prometheus
from tests.dashboards import (
    DASHBOARDS,
    INFLUX_UID,
    TWIN_DASHBOARD,
    alert_transition,
    load,
    model_readings,
    queries,
    regex_value,
    substitute,
    variable_values,
    variables,
)
from tests.harness import Pipeline, poll
from twinpipe.config import parse_config
from twinpipe.envelope import encode

STAGES = ("publisher", "mqtt_kafka_bridge", "influx_ingestion", "latency_probe", "predictive_analysis")
DEVICES = 3
RATE_HZ = 50


class Grafana:
    """Runs queries the way the provisioned datasources do: InfluxQL through the InfluxDB 2 API with
    the token, PromQL through Prometheus's HTTP API."""

    def __init__(self, pipeline: Pipeline, prometheus: Prometheus) -> None:
        self.pipeline = pipeline
        self.prometheus = prometheus

    def influx(self, influxql: str) -> list[dict[str, Any]]:
        shim = self.pipeline.stack.influx
        params = urllib.parse.urlencode({"db": self.pipeline.bucket, "q": influxql, "epoch": "ms"})
        request = urllib.request.Request(
            f"{shim.url}/query?{params}", headers={"Authorization": f"Token {shim.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.load(response)["results"][0]
        assert "error" not in result, f"{influxql}: {result['error']}"
        return result.get("series", [])

    def variable(self, variable: dict[str, Any]) -> list[str]:
        def run(query: str) -> list[str]:
            if variable["datasource"]["uid"] == INFLUX_UID:
                series = self.influx(query)
                return [
                    values[-1] if s["columns"][-1] == "value" else values[0]
                    for s in series
                    for values in s["values"]
                ]
            metric_name, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", query).groups()
            return sorted({sample["metric"][label] for sample in self.prometheus.query(metric_name)})

        return variable_values(variable, run)

    def has_data(self, uid: str, query: str) -> bool:
        if uid == INFLUX_UID:
            return any(
                any(value is not None for value in row[1:])
                for series in self.influx(query)
                for row in series["values"]
            )
        return any(math.isfinite(float(sample["value"][1])) for sample in self.prometheus.query(query))


def test_metrics_probe_and_every_dashboard_query_on_a_running_pipeline(pipeline: Pipeline) -> None:
    ports = {stage: free_port() for stage in STAGES}

    def start(stage: str, override: dict[str, Any] | None = None):
        return pipeline.stage(stage, {"health": {"port": ports[stage]}, **(override or {})})

    ingestion = start("influx_ingestion")
    # Forecasts within seconds: 1 s steps and a 4 s season, so the Forecasts dashboard has forecasts,
    # intervals, accuracy and an STL decomposition (two seasons needed) to show.
    predictive = start(
        "predictive_analysis",
        {
            "predictive": {
                "group_id": f"predictive-{pipeline.id}",
                "by_thing": {"simulated": {"step_s": 1, "horizons_s": [1, 2], "season_s": 4}},
                "decomposition": {"interval_s": 1, "seasons": 7},
                "accuracy_interval_s": 1,
            }
        },
    )
    bridge = start("mqtt_kafka_bridge")
    probe = start(
        "latency_probe",
        {
            "latency_probe": {
                "start_from": "earliest",
                "summary_interval_s": 1,
                "probe_interval_s": 0.25,
                "probe_timeout_s": 15,
            }
        },
    )

    def page(stage: str) -> str:
        return http_get(f"http://127.0.0.1:{ports[stage]}/metrics")[1]

    def ready(stage: str) -> None:
        poll(lambda: stage_ready(ports[stage]), bool, 30, f"{stage} ready")

    # Every stage becomes ready (connected to what it needs); the board starts once all others are,
    # so the delays measured are the pipeline's, not the consumers' start-up.
    for stage in STAGES[1:]:
        ready(stage)
    publisher = start("publisher", {"publisher": {"simulator": {"devices": DEVICES, "rate_hz": RATE_HZ}}})
    ready("publisher")

    targets = {stage: f"127.0.0.1:{port}" for stage, port in ports.items()}
    with Prometheus(pipeline.workdir / "prometheus", targets) as prometheus:
        # Enough for the probe's 1 min windows and the dashboards' rates: 40 probes seen in InfluxDB.
        poll(
            lambda: metric_value(
                page("latency_probe"), "twinpipe_latency_probe_probe_delay_seconds_count", at="influxdb"
            ),
            lambda n: n >= 40,
            60,
            "40 probes visible in InfluxDB",
        )
        # Rates over the dashboards' 5 s window need several scrapes of every stage.
        poll(
            lambda: {s["metric"]["job"] for s in prometheus.query("sum_over_time(up[10s]) >= 6")},
            lambda jobs: jobs == set(STAGES),
            30,
            "six successful scrapes of every stage",
        )

        # The Forecasts dashboard: accuracy exported and a decomposition written for every series.
        poll(
            lambda: prometheus.query("twinpipe_predictive_analysis_observed_coverage_ratio"),
            bool,
            60,
            "observed coverage scraped",
        )
        poll(
            lambda: pipeline.influx_rows(
                'SELECT count("trend") FROM "twin_decomposition" GROUP BY "device", "value"'
            ),
            lambda rows: len(rows) >= DEVICES,
            60,
            "decompositions in InfluxDB",
        )

        # The twin panels show every thing of the model: one reading of each of its datastreams for
        # a device of each, through Kafka and the running ingestion (the simulator covers only its own).
        twin = model_readings(parse_config(pipeline.config(), {}), time.time_ns())
        producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
        for envelope in twin:
            producer.send(pipeline.telemetry_topic, key=envelope.device.encode(), value=encode(envelope))
        producer.flush()
        producer.close()
        poll(
            lambda: pipeline.influx_rows(
                'SELECT count("seq") FROM "telemetry" WHERE "boot" = \'twin\' GROUP BY "device"'
            ),
            lambda rows: len(rows) == len(twin),
            30,
            "a reading of every thing in InfluxDB",
        )

        # An alert transition as the alerting stage writes it, for the alert table and annotations
        # (tests/integration/test_alerting.py runs the same queries on the stage's own points), for
        # every device: they are filtered by $device, and any of them may be the one chosen.
        devices = {
            row["value"]
            for row in pipeline.influx_rows('SHOW TAG VALUES FROM "telemetry" WITH KEY = "device"')
        }
        lines = [
            influx_line(alert_transition(device, time.time_ns()), "twin_alerts") for device in sorted(devices)
        ]
        pipeline.stack.influxd.write(pipeline.bucket, lines)

        grafana = Grafana(pipeline, prometheus)
        empty = []
        checked = 0
        for path in DASHBOARDS:
            if path.name == "commands.json":
                continue  # needs the twin_state stage's points: tests/test_grafana.py runs its queries
            dashboard = load(path)
            options = {v["name"]: grafana.variable(v) for v in variables(dashboard)}
            for name, values in options.items():
                assert values, f"{dashboard['title']}: variable {name} offers no values"
                assert not any(v.startswith("_") for v in values if name == "device"), (
                    "the probe is no device"
                )
            declared = {v["name"]: v for v in variables(dashboard)}
            everything = {
                name: declared[name].get("allValue")
                or regex_value(values, declared[name]["datasource"]["uid"])
                for name, values in options.items()
            }
            if "device" in options and "sensor" in options:
                # One device and one of *its* sensors: devices of different things measure different values.
                device = options["device"][0]
                row = grafana.influx(
                    f'SELECT last(*) FROM "telemetry" WHERE "device" = \'{device}\' AND time > now() - 15m'
                )[0]
                latest = zip(row["columns"], row["values"][0], strict=True)
                has = {column.removeprefix("last_") for column, value in latest if value is not None}
                options["sensor"] = [s for s in options["sensor"] if s in has]
            if "hop" in options and "device" in options:
                # The twin's readings went straight into Kafka: they have no publish or bridge hop. Once
                # Prometheus has scraped them (a race this check lost when other dashboards came
                # first), a twin device must not be the one device chosen for the first hop.
                options["device"] = [d for d in options["device"] if d not in {e.device for e in twin}]
            first = {
                name: regex_value(values[:1], declared[name]["datasource"]["uid"])
                for name, values in options.items()
            }
            for query in queries(dashboard):
                for chosen in (everything, first):
                    text = substitute(query.text, chosen)
                    checked += 1
                    if not grafana.has_data(query.datasource_uid, text):
                        empty.append(f"{query.dashboard} / {query.panel}: {text}")
        assert not empty, "panels without data:\n" + "\n".join(empty)

        # The map's shape, as its transformations see it: one table row per located device with numeric
        # latitude/longitude, and a numeric state for each of them to join on `device`.
        twin_panels = load(TWIN_DASHBOARD)["panels"]
        the_map = next(panel for panel in twin_panels if panel["type"] == "geomap")
        frames = {t["refId"]: grafana.influx(substitute(t["query"], {})) for t in the_map["targets"]}
        located = {}
        for series in frames.pop("locations"):
            assert len(series["values"]) == 1, series
            row = dict(zip(series["columns"], series["values"][0], strict=True))
            assert isinstance(row["latitude"], float) and isinstance(row["longitude"], float), row
            located[series["tags"]["device"]] = row
        states = {s["tags"]["device"]: s["values"][0][1] for frame in frames.values() for s in frame}
        assert {e.device for e in twin} <= set(located), located
        assert set(located) <= set(states) and all(isinstance(states[d], float) for d in located), states

    # What the stages counted agrees with itself, and nothing was lost on the way.
    probe_metrics, bridge_metrics = page("latency_probe"), page("mqtt_kafka_bridge")
    assert metric_value(probe_metrics, "twinpipe_latency_probe_probes_lost_total", at="kafka") == 0
    assert metric_value(probe_metrics, "twinpipe_latency_probe_probes_lost_total", at="influxdb") == 0
    assert metric_value(bridge_metrics, "twinpipe_bridge_records_delivered_total") > 0
    assert metric_value(page("publisher"), "twinpipe_publisher_buffer_dropped_total") == 0
    assert (
        metric_value(page("influx_ingestion"), "twinpipe_ingestion_consumer_lag_records") < DEVICES * RATE_HZ
    )

    # The numbers for the closing note: the probe's per-hop summaries in InfluxDB, its probes, and
    # every reading's board → InfluxDB delay as the ingestion measured it.
    report = [f"{checked} dashboard queries returned data"]
    for series in pipeline.stack.influxd.query(
        'SELECT median("p50"), max("p99"), sum("count") FROM "twinpipe_latency" GROUP BY "hop"',
        pipeline.bucket,
    ):
        _, p50, p99, count = series["values"][0]
        hop = series["tags"]["hop"]
        report.append(
            f"{hop:>18}: p50 {p50 * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms (worst interval), n={count}"
        )
        assert 0 <= p50 <= p99
    ingestion_metrics = page("influx_ingestion")
    e2e_count = metric_value(ingestion_metrics, "twinpipe_ingestion_end_to_end_delay_seconds_count")
    e2e_mean = metric_value(ingestion_metrics, "twinpipe_ingestion_end_to_end_delay_seconds_sum") / e2e_count
    report.append(
        f"every reading, board → InfluxDB acknowledged: mean {e2e_mean * 1e3:.1f} ms over {e2e_count:.0f}"
    )
    print("\n" + "\n".join(report))

    for stage in (publisher, probe, bridge, ingestion, predictive):
        assert stage.stop() == 0, stage.log()


def test_probes_that_never_arrive_are_counted_lost(pipeline: Pipeline) -> None:
    """Without the ingestion, probes reach Kafka but never InfluxDB: each is counted lost there."""
    port = free_port()
    bridge = pipeline.stage("mqtt_kafka_bridge")
    probe = pipeline.stage(
        "latency_probe",
        {
            "health": {"port": port},
            "latency_probe": {"start_from": "earliest", "probe_interval_s": 0.2, "probe_timeout_s": 2},
        },
    )
    base = f"http://127.0.0.1:{port}"
    text = poll(
        lambda: http_get(f"{base}/metrics")[1],
        lambda t: metric_value(t, "twinpipe_latency_probe_probes_lost_total", at="influxdb") >= 20,
        30,
        "probes counted lost before InfluxDB",
    )
    # Only probes sent while the consumer group was still joining can miss the Kafka deadline.
    lost_at_kafka = metric_value(text, "twinpipe_latency_probe_probes_lost_total", at="kafka")
    assert metric_value(text, "twinpipe_latency_probe_probes_lost_total", at="influxdb") >= lost_at_kafka + 10
    assert metric_value(text, "twinpipe_latency_probe_probe_delay_seconds_count", at="kafka") >= 10
    assert "counted lost" in probe.log()
    for stage in (probe, bridge):
        assert stage.stop() == 0, stage.log()
