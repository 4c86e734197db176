"""python -m publisher.simulate --pty PATH: a fake board writing real frames into a pseudo-terminal.

The publisher (publisher.source: serial, publisher.serial.port: PATH) then reads it exactly as it
reads a USB serial board, so the whole serial path runs without hardware. It also obeys commands
like a board: it reads `SET <id> <name> <value>` lines from the port, applies `heater` and
`report_interval_s` (publisher/board_commands.py), and answers `ACK <id> <name> <value>` between two
frames; a command id it has applied before is answered, not applied again. Each command line is
printed: `command <id> <name>=<value> applied` or `... repeated (ignored)`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import sys
import threading
import time
import tty
from pathlib import Path

from publisher.board_commands import BoardSettings
from publisher.framing import encode_frame
from publisher.simulator import SimulatedBoard, models_for_fields
from twinpipe.cli import CONFIG_EPILOG, load_or_exit, stop_on_signals

NOISE = b"\xff\xfe#noise#\x01\x02"  # contains no zero byte and no newline-terminated valid line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m publisher.simulate", description=__doc__, epilog=CONFIG_EPILOG
    )
    parser.add_argument("--pty", required=True, metavar="PATH", help="symlink to create for the pty's device")
    parser.add_argument(
        "--config", metavar="PATH", help="config.yaml (frame format from publisher.serial.frame)"
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, help="frames (or bursts) per second, e.g. 1 or 0.5 (default 10)"
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=1,
        metavar="N",
        help="write N frames back to back each time (a quiet gap follows each burst at low rates)",
    )
    parser.add_argument(
        "--zero",
        action="append",
        default=[],
        metavar="FIELD",
        help="this field always reads 0.00 (an unplugged sensor; repeatable)",
    )
    parser.add_argument("--count", type=int, help="stop writing after this many frames (keeps the pty open)")
    parser.add_argument(
        "--noise-every", type=int, metavar="N", help="write garbage bytes after every N frames"
    )
    parser.add_argument("--record", metavar="FILE", help="append each written reading as a JSON line")
    parser.add_argument("--seed", type=int, help="random seed for repeatable values")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.burst < 1:
        parser.error("--rate must be > 0 and --burst >= 1")
    config = load_or_exit(args.config)
    frame = config.publisher.serial.frame
    if unknown := set(args.zero) - set(frame.fields):
        parser.error(f"--zero {sorted(unknown)}: not in publisher.serial.frame.fields")
    try:
        models = models_for_fields(frame.fields, config.publisher.simulator.sensors)
    except ValueError as exc:
        parser.error(str(exc))
    board = SimulatedBoard(models, config.publisher.simulator, random.Random(args.seed))

    master, slave = os.openpty()
    # Raw like a USB CDC port: no line discipline mangling binary frames before a reader opens it.
    tty.setraw(slave)
    link = Path(args.pty)
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    print(f"writing {frame.format} frames to {link} -> {os.ttyname(slave)}", flush=True)
    stop = stop_on_signals()
    record = open(args.record, "a") if args.record else None  # noqa: SIM115 - closed below
    written = 0
    board.settings.report_interval_s = 1.0 / args.rate
    commands = CommandLines(master, board.settings)
    try:
        next_tick = time.monotonic()
        while not stop.is_set() and (args.count is None or written < args.count):
            commands.serve_until(next_tick, stop)
            next_tick += board.settings.report_interval_s
            data = b""
            for _ in range(min(args.burst, args.count - written if args.count is not None else args.burst)):
                reading = {**board.read(), **dict.fromkeys(args.zero, 0.0)}
                data += encode_frame(frame, reading)
                written += 1
                if record:
                    record.write(json.dumps(reading) + "\n")
                if args.noise_every and written % args.noise_every == 0:
                    data += NOISE
            view = memoryview(data)  # the frames of a burst go out back to back
            while view:
                view = view[os.write(master, view) :]
            if record:
                record.flush()
        print(f"wrote {written} frames", flush=True)
        while not stop.is_set():
            commands.serve_until(time.monotonic() + 0.5, stop)
    finally:
        if record:
            record.close()
        link.unlink(missing_ok=True)
        os.close(master)
        os.close(slave)


class CommandLines:
    """Command lines the publisher writes into the pty, answered between frames like firmware would."""

    def __init__(self, master: int, settings: BoardSettings) -> None:
        self._master = master
        self._settings = settings
        self._pending = b""

    def serve_until(self, deadline: float, stop: threading.Event) -> None:
        """Answer commands until `deadline` (monotonic s), when the next frame is due."""
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self._master], [], [], min(left, 0.2))
            if not readable:
                continue
            try:
                self._pending += os.read(self._master, 4096)
            except OSError:  # the other side closed (no reader): nothing to answer
                stop.wait(min(left, 0.2))
                continue
            *lines, self._pending = self._pending.split(b"\n")
            for raw in lines:
                answer = self._settings.handle(raw.decode("utf-8", "replace"))
                if answer is None:
                    continue
                _, command_id, name, *_ = raw.decode("utf-8", "replace").split()
                if answer.line is None:
                    print(f"command {command_id} {name}: refused ({answer.refusal})", flush=True)
                    continue
                state = "applied" if answer.applied else "repeated (ignored)"
                if answer.refusal:
                    state = f"refused ({answer.refusal})"
                print(f"command {command_id} {name}={self._settings.current(name)} {state}", flush=True)
                data = answer.line.encode()
                while data:
                    data = data[os.write(self._master, data) :]


if __name__ == "__main__":
    sys.exit(main())
