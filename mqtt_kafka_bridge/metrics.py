"""The bridge's Prometheus metrics (served on /metrics; see README.md)."""

from prometheus_client import Counter, Gauge, Histogram

from mqtt_kafka_bridge.producers import FATAL_KINDS

DEAD_LETTER_KINDS = (
    "not_json", "version", "invalid", "too_large", "unroutable", "device_mismatch", "reserved_device",
    "invalid_command_event",
)  # fmt: skip
IGNORED_KINDS = ("retained",)

RECEIVED = Counter("twinpipe_bridge_messages_received", "MQTT messages taken in")
RECEIVED_BYTES = Counter("twinpipe_bridge_bytes_received", "MQTT payload bytes taken in")
DELIVERED = Counter("twinpipe_bridge_records_delivered", "Records Kafka acknowledged (dead letters included)")
DELIVERED_BYTES = Counter("twinpipe_bridge_bytes_delivered", "Record value bytes Kafka acknowledged")
DEAD_LETTERS = Counter(
    "twinpipe_bridge_dead_letters",
    "Messages sent to the dead-letter topic, by kind (why they were rejected)",
    ["kind"],
)
IGNORED = Counter(
    "twinpipe_bridge_ignored_messages",
    "Messages acknowledged and not forwarded, by kind: retained (a retained message replayed on subscribing)",
    ["kind"],
)
ERRORS = Counter(
    "twinpipe_bridge_errors",
    "Errors by kind: send (Kafka refused the record, retried), delivery (delivery failed, re-sent)",
    ["kind"],
)
UNACKED = Gauge("twinpipe_bridge_unacked_messages", "MQTT messages received and not yet acknowledged")
QUEUED = Gauge("twinpipe_bridge_queue_depth_messages", "Messages waiting for the forwarding thread")
MQTT_CONNECTED = Gauge("twinpipe_bridge_mqtt_connected", "1 while connected to the MQTT broker")
PRODUCER_RECREATIONS = Counter(
    "twinpipe_bridge_producer_recreations",
    "Kafka producers replaced because they were in a fatal state, by cause",
    ["cause"],
)
KAFKA_DELIVERING = Gauge(
    "twinpipe_bridge_kafka_delivering", "1 unless the last record handed to Kafka failed (0 until one lands)"
)
RESEND_PENDING = Gauge("twinpipe_bridge_resend_pending_records", "Failed records waiting to be re-sent")

for kind in DEAD_LETTER_KINDS:
    DEAD_LETTERS.labels(kind)
for kind in IGNORED_KINDS:
    IGNORED.labels(kind)
for kind in ("send", "delivery"):
    ERRORS.labels(kind)
for kind in FATAL_KINDS:
    PRODUCER_RECREATIONS.labels(kind)

# The downlink (bridge.downlink; see README.md "Commands")
COMMAND_OUTCOMES = ("sent", "expired", "failed", "dead_letter")
COMMANDS = Counter(
    "twinpipe_bridge_commands",
    "Commands read from Kafka, by outcome: sent (the broker acknowledged it), expired (not published), "
    "failed (refused or no subscriber), dead_letter (not a valid command)",
    ["outcome"],
)
COMMAND_PUBACK_SECONDS = Histogram(
    "twinpipe_bridge_commands_puback_seconds",
    "From publishing a command to MQTT to the broker's PUBACK",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
COMMAND_EVENTS_FORWARDED = Counter(
    "twinpipe_bridge_commands_events_forwarded",
    "Command events from the publishers (MQTT .../command/events) handed to Kafka",
)
for outcome in COMMAND_OUTCOMES:
    COMMANDS.labels(outcome)
DOWNLINK_REJOINS = Counter(
    "twinpipe_bridge_downlink_rejoins",
    "Times the downlink replaced its Kafka consumer after no partition of the command topic was "
    "assigned for twice kafka.session_timeout_ms (a consumer group that did not settle)",
)
