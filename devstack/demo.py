"""`make demo`: the whole pipeline as local processes on local servers, with the live stream on screen.

No Docker needed: Mosquitto and influxd from Debian, the Tansu Kafka-protocol broker from PyPI, the
same servers the tests use. Ctrl-C stops everything and reports how many points reached InfluxDB.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__)
    parser.add_argument("--devices", type=int, default=3, help="simulated boards (default 3)")
    parser.add_argument(
        "--rate",
        type=float,
        help="readings per second per board (default 2; with --serial 1, as a typical Nucleo sketch sends)",
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="one board writing Nucleo binary frames into a pseudo-terminal, read by the serial path",
    )
    args = parser.parse_args(argv)
    if args.rate is None:
        args.rate = 1.0 if args.serial else 2.0

    workdir = Path(tempfile.mkdtemp(prefix="twinpipe-demo-"))
    with LocalStack(workdir / "servers") as stack:
        board_port = workdir / "ttyDEMO"
        publisher = (
            {"source": "serial", "serial": {"port": str(board_port)}}
            if args.serial
            else {"source": "simulator", "simulator": {"devices": args.devices, "rate_hz": args.rate}}
        )
        config = write_config(
            workdir / "config.yaml",
            merged(
                stack.config(),
                {
                    "publisher": publisher,
                    "health": {"port": 0},
                    "display": {"max_lines_per_s": 10},
                },
            ),
        )
        stages = []
        if args.serial:
            stages.append(
                StageProcess(
                    "publisher.simulate", config, workdir, "--pty", str(board_port), "--rate", str(args.rate)
                )
            )
        stages += [
            StageProcess(module, config, workdir, env=stack.env())
            for module in ("influx_ingestion", "mqtt_kafka_bridge", "latency_probe", "publisher")
        ]
        for stage in stages:
            stage.start()
        print(
            f"servers: MQTT 127.0.0.1:{stack.mosquitto.port}, Kafka {stack.kafka.bootstrap}, "
            f"InfluxDB {stack.influxd.url} (v2 API {stack.influx.url})"
        )
        print(f"config and stage logs: {workdir}   — Ctrl-C stops the demo\n", flush=True)
        display = subprocess.Popen([sys.executable, "-m", "consumer_display", "--config", str(config)])
        try:
            display.wait()
        except KeyboardInterrupt:
            display.send_signal(signal.SIGINT)
            display.wait(10)
        finally:
            for stage in reversed(stages):
                stage.stop()
        stored = stack.influxd.point_count("twin")
        print(f"\nInfluxDB now holds {stored} points in bucket 'twin'. Logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
