"""python -m predictive_analysis: forecast every datastream from Kafka telemetry, with intervals."""

from __future__ import annotations

import sys

from kafka.errors import KafkaError

from predictive_analysis.stage import Predictive
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import ensure_topics, kafka_consumer, kafka_producer
from twinpipe.config import ConfigError
from twinpipe.health import HealthServer
from twinpipe.influx import InfluxQL, InfluxWriter
from twinpipe.retry import until_connected

DESCRIPTION = """\
Consume the telemetry topic(s) in consumer group predictive.group_id; per series (device, value)
resample the readings to one mean per step (predictive.series.step_s, per observed property in
predictive.by_property, per thing in predictive.by_thing), learn each completed step with an online
river model (SNARIMAX or Holt-Winters) and forecast predictive.series.horizons_s ahead with a
split-conformal interval at predictive.coverage. Written to InfluxDB in batches: forecasts at their
future time (predictive.forecast_measurement), MAE/RMSE of the model, persistence and seasonal
naive per horizon (predictive.accuracy_measurement), and periodically an STL decomposition
(predictive.decomposition_measurement). A reading outside its 1-step interval is an anomaly event on
predictive.anomaly_topic (key: device) and is learned clipped to the interval. A new series is
warmed up from the telemetry InfluxDB holds before it. Offsets are committed after the writes.
"""


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m predictive_analysis", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    try:
        writer = InfluxWriter(config.influxdb)
        reader = InfluxQL(config.influxdb)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    settings = config.predictive
    stop = stop_on_signals()
    topics = config.telemetry_topics(settings.topics)
    stage_holder: list[Predictive] = []

    def connect() -> tuple:
        ensure_topics(config.kafka, [*topics, settings.anomaly_topic])
        consumer = kafka_consumer(
            config.kafka,
            settings.group_id,
            auto_offset_reset="earliest",
            max_poll_records=settings.max_poll_records,
        )
        producer = kafka_producer(config.kafka, linger_ms=5)
        stage = Predictive(config, consumer, producer, writer.write, reader.rows)
        consumer.subscribe(topics, listener=stage.listener())
        stage_holder.append(stage)
        return consumer, producer

    clients = until_connected(
        connect, f"Kafka {','.join(config.kafka.bootstrap_servers)}", stop, (KafkaError,)
    )
    if clients is None:
        return 0
    consumer, producer = clients
    stage = stage_holder[-1]
    try:
        with HealthServer(
            config.health.host, config.health.port, {"loop": stage.heartbeat.alive}, stage.ready_checks()
        ):
            stage.run(stop)
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
