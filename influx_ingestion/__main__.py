"""python -m influx_ingestion: write telemetry from Kafka into InfluxDB, committing only what is written."""

from __future__ import annotations

import sys

from kafka.errors import KafkaError

from influx_ingestion.ingestion import Ingestion
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import ensure_topics, kafka_consumer, kafka_producer
from twinpipe.config import ConfigError
from twinpipe.health import HealthServer
from twinpipe.influx import InfluxWriter
from twinpipe.retry import until_connected

DESCRIPTION = """\
Consume the telemetry topic(s) in consumer group ingestion.group_id and write one InfluxDB point per
envelope (measurement ingestion.measurement; tags: device, thing for a device of model.things, plus
ingestion.tags / device_tags; fields: the sensor values, seq and boot; time: the event time), and for
a device of a located thing one point in ingestion.location_measurement per
ingestion.location_interval_s of event time (latitude, longitude, altitude, name), in the same write.
Batches of up to ingestion.batch_size records
(collected for ingestion.flush_interval_s; 0: whatever one poll returned) are written with the
InfluxDB 2 API, and offsets are committed only afterwards. InfluxDB down: retry with backoff, fetch
nothing meanwhile. Records InfluxDB rejects for their content, records that are not envelopes, and
envelopes whose event time is implausible (ingestion.earliest_event_time, max_event_age_s,
max_event_future_s) or whose value names would hide a tag go to kafka.dead_letter_topic with the
reason, and so do points older than the bucket's retention (ingestion.retention_s, or read from the
bucket), set aside before writing or named by InfluxDB's partial write. /readyz fails, naming the reason,
while every recent point is refused.
"""


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m influx_ingestion", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    try:
        writer = InfluxWriter(config.influxdb)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    stop = stop_on_signals()
    topics = config.telemetry_topics(config.ingestion.topics)
    kafka_name = f"Kafka {','.join(config.kafka.bootstrap_servers)}"

    def connect() -> tuple:
        ensure_topics(config.kafka, [*topics, config.kafka.dead_letter_topic])
        consumer = kafka_consumer(
            config.kafka,
            config.ingestion.group_id,
            auto_offset_reset="earliest",
            max_poll_records=config.ingestion.batch_size,
        )
        consumer.subscribe(topics)
        return consumer, kafka_producer(config.kafka, linger_ms=5)

    clients = until_connected(connect, kafka_name, stop, (KafkaError,))
    if clients is None:
        return 0
    consumer, dead_letters = clients
    ingestion = Ingestion(config, consumer, writer.write, dead_letters, writer.bucket_retention_s)
    try:
        with HealthServer(
            config.health.host,
            config.health.port,
            {"loop": ingestion.heartbeat.alive},
            ingestion.ready_checks(),
        ):
            ingestion.run(stop)
    finally:
        consumer.close(autocommit=False)
        dead_letters.close(timeout=5)
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
