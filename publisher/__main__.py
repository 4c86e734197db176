"""python -m publisher: read a board (or simulated boards) and publish envelopes to MQTT."""

from __future__ import annotations

from publisher.app import Publisher
from publisher.replay import RecordingError
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.health import HealthServer

DESCRIPTION = """\
Read sensor frames from an STM32/Nucleo board on a serial port (publisher.source: serial) or from
simulated boards (publisher.source: simulator) or a recording (publisher.source: replay: a CSV or
JSON lines file replayed at its recorded rhythm times publisher.replay.speed), wrap each reading in
a twinpipe envelope and publish it to MQTT at QoS 1 on publisher.topic_template (default
twin/{device}/telemetry).

While the broker is unreachable, readings wait in a buffer of publisher.buffer_size; overflow drops
the oldest and is counted and logged. A missing or unplugged port is retried until it reappears.
A reading the broker will never take (over publisher.max_payload_bytes or the broker's Maximum
Packet Size, or one it closes the connection on) is set aside, counted and logged, and does not
block the rest. Acknowledged readings of the last publisher.resend_window_s are sent again after the
connection to the broker was lost, since a crashed broker may not have saved them.

With publisher.commands.enabled, commands for its boards (MQTT twin/{device}/command, a persistent
session of its own) are written to the board (publisher.commands.line_template; simulated boards obey
heater and report_interval_s) and their outcome published on twin/{device}/command/events:
delivered, written, acknowledged (the board's ACK line), failed (no ACK within ack_timeout_s) or
expired (never written).

A replay waits for room instead of dropping, marks its readings origin=replay, skips (and logs with its
line number) every malformed row, and exits 0 once everything it read was delivered (unless looping).
"""


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("python -m publisher", DESCRIPTION)
    parser.add_argument(
        "--source", choices=["serial", "simulator", "replay"], help="override publisher.source"
    )
    parser.add_argument("--port", help="override publisher.serial.port, e.g. /dev/ttyACM0")
    parser.add_argument("--replay", metavar="FILE", help="replay FILE (sets publisher.source: replay)")
    parser.add_argument(
        "--speed", type=float, help="override publisher.replay.speed (0 = as fast as possible)"
    )
    args = parser.parse_args(argv)
    config = load_or_exit(
        args.config,
        {
            "PUBLISHER__SOURCE": "replay" if args.replay else args.source,
            "PUBLISHER__SERIAL__PORT": args.port,
            "PUBLISHER__REPLAY__PATH": args.replay,
            "PUBLISHER__REPLAY__SPEED": None if args.speed is None else str(args.speed),
        },
    )
    try:
        publisher = Publisher(config)
    except RecordingError as exc:
        raise SystemExit(f"publisher: cannot replay: {exc}") from None
    stop = stop_on_signals()
    with (
        publisher,
        HealthServer(
            config.health.host, config.health.port, publisher.health_checks(), publisher.ready_checks()
        ),
    ):
        publisher.run(stop)
    if publisher.failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
