"""python -m sensorthings_api: a read-only OGC SensorThings API 1.1 over the model and InfluxDB."""

from __future__ import annotations

import logging
import sys

import uvicorn

from sensorthings_api.api import Api
from sensorthings_api.app import create_app
from sensorthings_api.store import Store
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.config import ConfigError
from twinpipe.health import HealthServer
from twinpipe.model import TwinModel

DESCRIPTION = """\
Serve the twin as an OGC SensorThings API 1.1 at http://<sensorthings.host>:<sensorthings.port>/v1.1:
Things (one per device), Locations, Datastreams, Sensors and ObservedProperties from the model
(config.yaml `model:`) and the devices InfluxDB holds points of, and Observations read from InfluxDB
(ingestion.measurement). Read-only. Query options: $top, $skip, $count, $orderby=phenomenonTime
asc|desc, $filter on time ranges, $expand, with @iot.nextLink paging.

/healthz, /readyz (fails while InfluxDB does not answer, with the reason) and /metrics are served on
health.port, like every stage.
"""


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m sensorthings_api", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    settings = config.sensorthings
    try:
        store = Store(config.influxdb, config.ingestion.measurement, settings.request_timeout_s)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    api = Api(settings, TwinModel(config.model), store)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(api),
            host=settings.host,
            port=settings.port,
            log_config=None,  # twinpipe.logs set up logging; uvicorn logs through it
            access_log=False,  # per-request counts and latency are on /metrics instead
            timeout_graceful_shutdown=5,
        )
    )
    logging.getLogger("twinpipe").info(
        "SensorThings API on http://%s:%d/v1.1 (InfluxDB %s, bucket %s)",
        settings.host,
        settings.port,
        config.influxdb.url,
        config.influxdb.bucket,
    )
    try:
        # uvicorn handles SIGTERM/SIGINT itself (stops accepting, finishes requests, returns), then
        # raises the signal again for the handler it found: twinpipe's, so the stage exits 0.
        stop_on_signals()
        with HealthServer(
            config.health.host,
            config.health.port,
            {"server": lambda: server.started or "not serving yet"},
            {"influxdb": store.ping},
        ):
            server.run()
    finally:
        store.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
