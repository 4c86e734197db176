"""TEST STAND-IN for influxdb:2.7: influxd 1.x behind the repository's InfluxDB 2 shim, one container.

Set up like the upstream image's DOCKER_INFLUXDB_INIT_MODE=setup: the organisation, bucket and admin
token come from DOCKER_INFLUXDB_INIT_ORG / _BUCKET / _ADMIN_TOKEN (missing ones stop the container,
as upstream refuses to set up without them). influxd keeps its data in /var/lib/influxdb2 (the
volume) and listens on loopback only; the shim serves InfluxDB 2's API on :8086.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from devstack.influx import Influxd, InfluxV2Shim

SETUP = ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN")


def main() -> int:
    if os.environ.get("DOCKER_INFLUXDB_INIT_MODE") != "setup":
        print("influxdb stand-in: only DOCKER_INFLUXDB_INIT_MODE=setup is implemented", file=sys.stderr)
        return 1
    missing = [
        f"DOCKER_INFLUXDB_INIT_{key}" for key in SETUP if not os.environ.get(f"DOCKER_INFLUXDB_INIT_{key}")
    ]
    if missing:
        print(f"influxdb stand-in: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    influxd = Influxd(Path("/var/lib/influxdb2"), port=8087)
    influxd.start(timeout_s=60)
    try:
        shim = InfluxV2Shim(
            influxd,
            org=os.environ["DOCKER_INFLUXDB_INIT_ORG"],
            token=os.environ["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"],
            port=8086,
            host="0.0.0.0",
        )
        shim.add_bucket(os.environ["DOCKER_INFLUXDB_INIT_BUCKET"])
        with shim:
            print("influxdb stand-in: InfluxDB 2 API on :8086 (influxd 1.x behind the shim)", flush=True)
            stop.wait()
    finally:
        influxd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
