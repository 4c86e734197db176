"""python -m latency_probe: measure how long each hop of the pipeline takes, continuously."""

from __future__ import annotations

import sys

from kafka.errors import KafkaError

from latency_probe.probe import LatencyProbe
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import ensure_topics, kafka_consumer
from twinpipe.config import ConfigError
from twinpipe.health import HealthServer
from twinpipe.influx import InfluxQL, InfluxWriter
from twinpipe.retry import until_connected

DESCRIPTION = """\
Passive: read the telemetry topic(s) in consumer group latency_probe.group_id and time every hop of
every reading from its envelope trace (board read → MQTT publish → bridge → Kafka → here), as
Prometheus histograms on /metrics and as p50/p95/p99 summaries written to InfluxDB every
latency_probe.summary_interval_s (measurement latency_probe.summary_measurement, tag hop).

Active: every latency_probe.probe_interval_s, publish a probe reading (device "_probe") to MQTT and
time it until Kafka has it and until an InfluxDB query returns it: the latency a user of the twin
sees. Probes not seen within latency_probe.probe_timeout_s are counted as lost.

Negative or implausible delays (clocks that disagree across hosts) are counted, never graphed.
"""


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m latency_probe", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    try:
        writer, influxql = InfluxWriter(config.influxdb), InfluxQL(config.influxdb)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    stop = stop_on_signals()
    settings = config.latency_probe
    topics = config.telemetry_topics(settings.topics)

    def connect():
        ensure_topics(config.kafka, topics)
        consumer = kafka_consumer(config.kafka, settings.group_id, auto_offset_reset=settings.start_from)
        consumer.subscribe(topics)
        return consumer

    consumer = until_connected(
        connect, f"Kafka {','.join(config.kafka.bootstrap_servers)}", stop, (KafkaError,)
    )
    if consumer is None:
        return 0
    try:
        with (
            LatencyProbe(config, consumer, writer.write, influxql) as probe,
            HealthServer(config.health.host, config.health.port, probe.health_checks(), probe.ready_checks()),
        ):
            probe.run(stop)
    finally:
        consumer.close(autocommit=False)
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
