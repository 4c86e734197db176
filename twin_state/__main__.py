"""python -m twin_state: the twin's desired/reported state per device and its command journal, over HTTP."""

from __future__ import annotations

import logging
import sys
import threading

import uvicorn
from kafka.errors import KafkaError

from twin_state import metrics
from twin_state.app import create_app
from twin_state.influx_out import InfluxOut
from twin_state.lifecycle import Transition
from twin_state.stage import TwinStateStage, Unavailable
from twin_state.store import Twin
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.config import ENV_PREFIX, ConfigError
from twinpipe.health import HealthServer
from twinpipe.influx import InfluxWriter
from twinpipe.model import TwinModel
from twinpipe.retry import until_connected

DESCRIPTION = """\
Keep the twin's state per device (desired, reported, delta, versions, command journal) and serve it at
http://<twin_state.host>:<twin_state.port> (OpenAPI at /openapi.json, browsable at /docs):

  GET   /things/{device}/state       desired, reported, delta, versions, commands
  PATCH /things/{device}/desired     {"settings": {"heater": true}, "expires_in_s": 60} -> a command
  GET   /things/{device}/commands    the command journal
  GET   /commands/{id}?wait_s=30&after=sent   one command; waits until it leaves state `after`

Setting desired state writes a command to twin_state.command_topic (the bridge sends it to the board);
the bridge's and the publisher's events on twin_state.event_topic move it through queued -> sent ->
delivered -> written -> acknowledged -> applied, or expired / failed. The state lives in the compacted
twin_state.state_topic, which the stage reads back on start before serving. Writes need the bearer
token twin_state.token or twin_state.token_file (or set twin_state.read_only: true).

/healthz, /readyz and /metrics are served on health.port, like every stage.
"""

log = logging.getLogger("twinpipe.twin_state")


def log_closed(transitions: list[Transition]) -> None:
    """Say in the log when a command ends, and why when it did not succeed."""
    for t in transitions:
        if t.state in ("expired", "failed"):
            log.warning(
                "command %s to %s %s after %.1f s: %s", t.id, t.device, t.state, t.since_queued_s, t.detail
            )
        elif t.state == "applied":
            log.info(
                "command %s to %s applied after %.3f s: %s", t.id, t.device, t.since_queued_s, t.settings
            )


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m twin_state", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    settings = config.twin_state
    token = settings.secret_token()
    if token is None and not settings.read_only:
        print(
            f"twin_state.token: required for writes; set {ENV_PREFIX}TWIN_STATE__TOKEN or"
            " twin_state.token_file, or twin_state.read_only: true",
            file=sys.stderr,
        )
        return 2
    try:
        writer = InfluxWriter(config.influxdb)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    model = TwinModel(config.model)
    twin = Twin(
        lambda device: set(model.settings(device)), settings.journal_size, settings.readings_persist_s
    )
    stop = stop_on_signals()
    influx = InfluxOut(writer, settings.influx_measurement_commands, settings.influx_measurement_settings)
    twin.on_transitions += [metrics.count, influx.transitions, log_closed]
    twin.on_settings.append(influx.settings)
    with TwinStateStage(config, twin, model) as stage, influx:
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(stage, model, token),
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        consumer = threading.Thread(target=stage.run, args=(stop,), name="consumer", daemon=True)
        with HealthServer(
            config.health.host,
            config.health.port,
            {"consumer": lambda: stage.heartbeat.alive() or "consumer loop stuck"},
            {
                "rebuilt": lambda: stage.rebuilt.is_set() or "reading the state topic",
                "consuming": lambda: stage.consuming.is_set() or "joining the consumer group",
                "server": lambda: server.started or "not serving yet",
            },
        ):
            what = f"Kafka {','.join(config.kafka.bootstrap_servers)} (state topic {settings.state_topic})"
            if (
                until_connected(stage.open, what, stop, (KafkaError, Unavailable), action="rebuild from")
                is None
            ):
                return 0  # stopped while waiting
            consumer.start()
            log.info(
                "twin state API on http://%s:%d (%s), state in %s",
                settings.host,
                settings.port,
                "read-only" if token is None else "writes with bearer token",
                settings.state_topic,
            )
            # uvicorn handles SIGTERM/SIGINT itself and re-raises for twinpipe's handler, which sets stop.
            server.run()
            stop.set()
            consumer.join(timeout=15)
        stage.persist(everything=True)
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
