"""The publisher's Prometheus metrics (served on /metrics; see README.md)."""

from prometheus_client import Counter, Gauge, Histogram

from publisher.framing import FRAME_ERROR_KINDS
from publisher.replay import ROW_ERROR_KINDS

READINGS = Counter("twinpipe_publisher_readings", "Readings taken from the board or the simulator")
PUBLISHED = Counter("twinpipe_publisher_messages_published", "Messages the MQTT broker acknowledged")
PUBLISHED_BYTES = Counter("twinpipe_publisher_bytes_published", "Payload bytes handed to MQTT")
ERRORS = Counter(
    "twinpipe_publisher_errors",
    "Errors by kind: frame (bad serial frame), publish (client refused), broker (broker rejected)",
    ["kind"],
)
FRAME_ERRORS = Counter(
    "twinpipe_publisher_frame_errors",
    "Serial frames dropped (and runs of skipped bytes) by kind; see publisher/README.md",
    ["kind"],
)
OUT_OF_RANGE = Counter(
    "twinpipe_publisher_out_of_range",
    "Readings dropped, never published, because a value was outside its datastream's plausible range "
    "(model: in config.yaml), by datastream (the value name); serial frames are also counted in "
    "frame_errors_total{kind=out_of_range}",
    ["datastream"],
)
DROPPED = Counter("twinpipe_publisher_buffer_dropped", "Readings dropped because the buffer was full")
BUFFER_DEPTH = Gauge("twinpipe_publisher_buffer_depth_readings", "Readings waiting in the buffer")
BUFFER_CAPACITY = Gauge("twinpipe_publisher_buffer_capacity_readings", "publisher.buffer_size")
INFLIGHT = Gauge("twinpipe_publisher_inflight_messages", "Messages sent to MQTT and not yet acknowledged")
SET_ASIDE_KINDS = ("too_large", "refused", "connection_lost")
SET_ASIDE = Counter(
    "twinpipe_publisher_readings_set_aside",
    "Readings the broker will never take, set aside (logged, kept in the spool's rejected/ file): "
    "too_large (over publisher.max_payload_bytes or the broker's Maximum Packet Size), refused "
    "(PUBACK with a failure reason), connection_lost (the broker closed the connection on it)",
    ["kind"],
)
RESENT = Counter(
    "twinpipe_publisher_readings_resent",
    "Acknowledged readings re-sent from the window (publisher.resend_window_s) after the broker was lost",
)
RESEND_WINDOW = Gauge(
    "twinpipe_publisher_resend_window_readings",
    "Acknowledged readings kept for a re-send after a broker crash",
)
REPLAY_SKIPPED = Counter(
    "twinpipe_publisher_replay_rows_skipped",
    "Rows of a replayed recording skipped (logged with their line number) by kind: bad_csv, bad_time,"
    " bad_value, bad_columns, bad_device, bad_json, no_values, time_backwards; see publisher/README.md",
    ["kind"],
)
MQTT_CONNECTED = Gauge("twinpipe_publisher_mqtt_connected", "1 while connected to the MQTT broker")

for kind in ("frame", "publish", "broker"):
    ERRORS.labels(kind)
for kind in FRAME_ERROR_KINDS:
    FRAME_ERRORS.labels(kind)
for kind in ROW_ERROR_KINDS:
    REPLAY_SKIPPED.labels(kind)
for kind in SET_ASIDE_KINDS:
    SET_ASIDE.labels(kind)

# Commands (publisher.commands; see README.md "Commands")
COMMAND_EVENTS = Counter(
    "twinpipe_publisher_command_events",
    "Command lifecycle events published, by state (delivered, written, acknowledged, failed, expired)",
    ["state"],
)
for _state in ("delivered", "written", "acknowledged", "failed", "expired"):
    COMMAND_EVENTS.labels(_state)
COMMANDS_WAITING = Gauge(
    "twinpipe_publisher_commands_waiting",
    "Commands received and not finished (≤ publisher.commands.max_waiting)",
)
COMMANDS_WAITED = Counter(
    "twinpipe_publisher_commands_waited_for_board", "Commands that had to wait for an unplugged board"
)
COMMANDS_OVERFLOW = Counter(
    "twinpipe_publisher_commands_overflow",
    "Commands refused (failed) because publisher.commands.max_waiting commands were already waiting",
)
COMMANDS_INVALID = Counter(
    "twinpipe_publisher_commands_invalid",
    "MQTT command messages that were no valid command (logged, dropped)",
)
COMMAND_ACKS_UNEXPECTED = Counter(
    "twinpipe_publisher_command_acks_unexpected", "ACK lines from a board for no command being written"
)
COMMAND_ACK_SECONDS = Histogram(
    "twinpipe_publisher_command_ack_seconds",
    "From writing a command to the board to its last ACK line",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
