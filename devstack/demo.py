"""`make demo`: the whole pipeline as local processes on local servers, with the live stream on screen.

No Docker needed: Mosquitto and influxd from Debian, the Tansu Kafka-protocol broker from PyPI, the
same servers the tests use. Stages start in the order compose gives them by readiness: the publisher
(and so the board's first reading) only once the bridge's /readyz passes, i.e. once it has
subscribed, because until then Mosquitto keeps nothing for it. Ctrl-C stops everything and reports
how many points reached InfluxDB. `--check N` runs without the display and verifies that every
board's first N readings (seq 0 .. N-1) were stored.

`--replay FILE` replays a recording instead of simulating boards (publisher.source: replay), e.g. the
shipped pvlib weather year `recordings/greensboro-tmy3.csv` at `--speed 3600` (an hour per second).
The publisher exits by itself at the recording's end; the display keeps running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.alertmanager import Alertmanager
from devstack.process import free_port, poll, stage_ready
from devstack.stack import BUCKET, LocalStack, merged, write_config
from devstack.stages import StageProcess

READY_TIMEOUT_S = 90.0  # the bridge connects to Kafka and creates its topics first


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    parser.add_argument(
        "--replay", type=Path, metavar="FILE", help="replay a recording (CSV or JSON lines) instead"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="with --replay: 1 = recorded rhythm, N = N× faster, 0 = as fast as possible (default 3600)",
    )
    parser.add_argument(
        "--time-shift",
        choices=["keep", "end_now"],
        default="keep",
        help="with --replay: keep the recorded times, or shift them to end now (default keep)",
    )
    parser.add_argument(
        "--check",
        type=int,
        metavar="N",
        help="no display: wait until every board has N readings in InfluxDB, exit 0 if they are "
        "seq 0 .. N-1 (none lost at the start), 1 otherwise",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where servers, config and logs go (default: a new temp dir)"
    )
    args = parser.parse_args(argv)
    if args.rate is None:
        args.rate = 1.0 if args.serial else 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="twinpipe-demo-"))
    with LocalStack(workdir / "servers") as stack:
        alertmanager = stack.enter_context(Alertmanager(workdir / "servers" / "alertmanager"))
        return run(stack, workdir, args, alertmanager)


def run(
    stack: LocalStack, workdir: Path, args: argparse.Namespace, alertmanager: Alertmanager | None = None
) -> int:
    """The stages on `stack`'s servers, started in readiness order; the exit status of --check.
    The alerting stage forwards to `alertmanager` when one is given."""
    board_port = workdir / "ttyDEMO"
    if args.replay:
        replay = {"path": str(args.replay.resolve()), "speed": args.speed, "time_shift": args.time_shift}
        publisher: dict = {"source": "replay", "replay": replay}
    elif args.serial:
        publisher = {"source": "serial", "serial": {"port": str(board_port)}}
    else:
        # The heater warms 10x faster than config.yaml's default, so that `heater=on` typed while the
        # demo runs shows in the displayed temperature within seconds (+10 Cel in 20 s).
        simulator = {"devices": args.devices, "rate_hz": args.rate, "heater_rise_per_s": 0.5}
        publisher = {"source": "simulator", "simulator": simulator}
    config = write_config(
        workdir / "config.yaml",
        merged(
            stack.config(),
            {
                "publisher": {**publisher, "commands": {"enabled": True}},  # commands reach the boards
                "bridge": {"downlink": {"enabled": True}},
                "health": {"port": 0},
                "display": {"max_lines_per_s": 10},
                "alerting": (
                    {"alertmanager": {"enabled": True, "url": alertmanager.url}} if alertmanager else {}
                ),
            },
        ),
    )
    boards = ["nucleo-1"] if args.serial else [f"sim-{i + 1}" for i in range(args.devices)]
    bridge_health = free_port()
    stages = []
    if args.serial:
        stages.append(
            StageProcess(
                "publisher.simulate", config, workdir, "--pty", str(board_port), "--rate", str(args.rate)
            )
        )
    bridge_env = {**stack.env(), "TWINPIPE__HEALTH__PORT": str(bridge_health)}
    bridge = StageProcess("mqtt_kafka_bridge", config, workdir, env=bridge_env)
    sensorthings_port = free_port()
    sensorthings_env = {
        **stack.env(),
        "TWINPIPE__SENSORTHINGS__HOST": "127.0.0.1",
        "TWINPIPE__SENSORTHINGS__PORT": str(sensorthings_port),
    }
    # The twin state API, with a fresh bearer token in a file the command line reads.
    twin_port, token_file = free_port(), workdir / "twin-state-token"
    token_file.write_text(secrets.token_hex(16) + "\n")
    twin_env = {
        **stack.env(),
        "TWINPIPE__TWIN_STATE__HOST": "127.0.0.1",
        "TWINPIPE__TWIN_STATE__PORT": str(twin_port),
        "TWINPIPE__TWIN_STATE__TOKEN_FILE": str(token_file),
    }
    stages += [
        StageProcess("influx_ingestion", config, workdir, env=stack.env()),
        StageProcess("predictive_analysis", config, workdir, env=stack.env()),
        bridge,
        StageProcess("latency_probe", config, workdir, env=stack.env()),
        StageProcess("sensorthings_api", config, workdir, env=sensorthings_env),
        StageProcess("twin_state", config, workdir, env=twin_env),
        StageProcess("alerting", config, workdir, env=stack.env()),
    ]
    last = StageProcess("publisher", config, workdir, env=stack.env())
    print(
        f"servers: MQTT 127.0.0.1:{stack.mosquitto.port}, Kafka {stack.kafka.bootstrap}, "
        f"InfluxDB {stack.influxd.url} (v2 API {stack.influx.url})"
    )
    print(f"SensorThings API: http://127.0.0.1:{sensorthings_port}/v1.1/Things")
    print(
        f"Twin state API: http://127.0.0.1:{twin_port}/docs; set a board from another terminal:\n"
        f"  python -m twinpipe command {boards[0]} set heater=on --wait"
        f" --url http://127.0.0.1:{twin_port} --token-file {token_file}"
    )
    print(
        f"alerts: mosquitto_sub -p {stack.mosquitto.port} -t 'twin/+/alerts' -v"
        + (f"; Alertmanager {alertmanager.url}" if alertmanager is not None else "")
    )
    print(f"config and stage logs: {workdir}   — Ctrl-C stops the demo\n", flush=True)
    try:
        for stage in stages:
            stage.start()
        wait_until_ready(bridge, bridge_health)
        stages.append(last.start())
        if args.check is not None and args.replay:
            return check_replay(stack, args.check, stages[:-1])  # the publisher exits at the end
        if args.check is not None:
            return check(stack, boards, args.check, args.rate, stages)
        show(config)
    except KeyboardInterrupt:
        pass
    finally:
        for stage in reversed(stages):
            stage.stop()
        stored = stack.influxd.point_count(BUCKET)
        print(f"\nInfluxDB now holds {stored} points in bucket '{BUCKET}'. Logs: {workdir}")
    return 0


def wait_until_ready(stage: StageProcess, health_port: int) -> None:
    """Poll the stage's /readyz until 200; fail (naming its log) if it exits or time runs out."""

    def ready() -> bool:
        if not stage.running():
            raise RuntimeError(f"{stage.module} exited; see {stage.log_path}")
        return stage_ready(health_port)

    print(f"waiting for {stage.module} to be ready (subscribed) before the publisher starts ...", flush=True)
    poll(ready, bool, READY_TIMEOUT_S, f"{stage.module} /readyz on port {health_port}", interval_s=0.1)


def show(config: Path) -> None:
    display = subprocess.Popen([sys.executable, "-m", "consumer_display", "--config", str(config)])
    try:
        display.wait()
    except KeyboardInterrupt:
        display.send_signal(signal.SIGINT)
        display.wait(10)


def check(
    stack: LocalStack, boards: list[str], count: int, rate_hz: float, stages: list[StageProcess]
) -> int:
    """Wait for `count` readings of every board in InfluxDB; 0 if each board's are seq 0 .. count-1."""

    def stored() -> dict[str, set[int]]:
        for stage in stages:
            if not stage.running():
                raise RuntimeError(f"{stage.module} exited; see {stage.log_path}")
        rows = stack.influxd.rows('SELECT "device", "seq" FROM "telemetry"', BUCKET)
        seqs: dict[str, set[int]] = {board: set() for board in boards}
        for row in rows:
            if row["device"] in seqs:
                seqs[row["device"]].add(int(row["seq"]))
        return seqs

    seqs = poll(
        stored,
        lambda found: all(len(s) >= count for s in found.values()),
        READY_TIMEOUT_S + count / rate_hz,
        f"{count} readings of each of {boards} in InfluxDB",
        interval_s=0.5,
    )
    failed = 0
    for board, found in sorted(seqs.items()):
        missing = sorted(set(range(count)) - found)
        if missing:
            failed += 1
            print(f"{board}: readings {missing} of the first {count} were not stored")
        else:
            print(f"{board}: readings 0 .. {count - 1} stored")
    return 1 if failed else 0


def check_replay(stack: LocalStack, count: int, stages: list[StageProcess]) -> int:
    """Wait for `count` replayed points (tag origin=replay); 0 if each device's are seq 0 .. n-1."""

    def stored() -> list[dict]:
        for stage in stages:
            if not stage.running():
                raise RuntimeError(f"{stage.module} exited; see {stage.log_path}")
        return stack.influxd.rows(
            'SELECT "device", "seq", "origin" FROM "telemetry" WHERE "origin" = \'replay\'', BUCKET
        )

    rows = poll(stored, lambda rows: len(rows) >= count, READY_TIMEOUT_S + 60, f"{count} replayed points")
    seqs: dict[str, set[int]] = {}
    for row in rows:
        seqs.setdefault(row["device"], set()).add(int(row["seq"]))
    failed = 0
    for device, found in sorted(seqs.items()):
        if found != set(range(len(found))):
            failed += 1
            print(f"{device}: replayed readings {sorted(set(range(max(found) + 1)) - found)[:20]} missing")
        else:
            print(f"{device}: replayed readings 0 .. {len(found) - 1} stored, tagged origin=replay")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
