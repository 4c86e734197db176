"""Where readings come from: a board on a serial port, or simulated boards. Each runs in its own thread."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import serial

from publisher.command_codec import AckExtractor
from publisher.framing import FrameError, make_decoder
from publisher.simulator import SimulatedBoard
from twinpipe.backoff import Backoff
from twinpipe.config import SerialConfig, SimulatorConfig, simulated_device_ids
from twinpipe.retry import until_connected

log = logging.getLogger("publisher.source")

Emit = Callable[[str, dict[str, float], int], None]  # device, values, read time (ns)
OnFrameError = Callable[[str, FrameError], None]  # device, error
OnAck = Callable[[str, str], None]  # device, an acknowledgement line the board sent (no newline)


class PortBusy(serial.SerialException):
    """Another process holds the port: two readers would each get part of the byte stream."""


def open_serial(config: SerialConfig) -> serial.Serial:
    """Opens the port exclusively (an advisory flock on POSIX; Windows ports are exclusive anyway), so a
    second publisher, or any other program that locks it, cannot read half of the frames."""
    try:
        return serial.Serial(
            port=config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
            timeout=config.read_timeout_s,
            exclusive=True,
        )
    except serial.SerialException as exc:
        if "exclusively lock" in str(exc):
            raise PortBusy(
                f"{config.port} is already open in another process (another publisher?); "
                "a serial port is read by one process only"
            ) from None
        raise


class SerialSource:
    """Reads one board. A missing or unplugged port is logged once and retried with backoff, forever."""

    def __init__(
        self,
        config: SerialConfig,
        emit: Emit,
        on_frame_error: OnFrameError,
        ranges: dict[str, tuple[float, float]] | None = None,
        acks: tuple[Callable[[], AckExtractor], OnAck] | None = None,
        on_reopen: Callable[[str], None] = lambda device: None,
    ) -> None:
        """`acks`: (a new ACK extractor per connection, where ACK lines go), with commands on.
        `on_reopen(device)`: the port was open before, was lost and is open again (a replug), called
        in the reading thread before the first byte is read."""
        self._config = config
        self._on_reopen = on_reopen
        self._ranges = ranges or {}
        self._emit = emit
        self._on_frame_error = on_frame_error
        self._acks = acks
        self._port: serial.Serial | None = None  # open, for write()
        self._write_lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        config = self._config
        opened_before = False
        while not stop.is_set():
            port = until_connected(
                lambda: open_serial(config),
                config.port,
                stop,
                (serial.SerialException, OSError),
                action="open",
                backoff=Backoff(0.2, config.reconnect_max_s),
            )
            if port is None:
                return
            log.info("reading %s at %d baud (%s frames)", config.port, config.baudrate, config.frame.format)
            if opened_before:
                self._on_reopen(config.device_id)
            opened_before = True
            self._port = port
            try:
                self._read(port, stop)
            except (serial.SerialException, OSError) as exc:
                log.warning("lost %s (%s); reconnecting", config.port, exc)
            finally:
                with self._write_lock:
                    self._port = None
                port.close()

    def write(self, device: str, data: bytes) -> bool:
        """Write a command to the board; False while the port is not open (unplugged) or the write
        failed (then the reader notices the lost port too)."""
        with self._write_lock:
            port = self._port
            if port is None or device != self._config.device_id:
                return False
            try:
                port.write(data)
                port.flush()
            except (serial.SerialException, OSError) as exc:
                log.warning("cannot write a command to %s (%s)", self._config.port, exc)
                return False
            return True

    def _read(self, port: serial.Serial, stop: threading.Event) -> None:
        decoder = make_decoder(self._config.frame, self._ranges)
        device = self._config.device_id
        extractor, on_ack = (self._acks[0](), self._acks[1]) if self._acks else (None, None)
        try:
            while not stop.is_set():
                data = port.read(max(1, port.in_waiting))
                if extractor is not None and on_ack is not None:
                    # ACK lines leave the stream here, so the frame decoder never counts them as bad.
                    data, acks = extractor.feed(data) if data else (extractor.idle(), [])
                    for line in acks:
                        on_ack(device, line)
                # Each reading carries the arrival time of the read that completed its bytes, also when
                # the decoder held it while it proved the alignment (or until a quiet gap).
                for item in decoder.feed(data, time.time_ns()) if data else decoder.idle():
                    if isinstance(item, FrameError):
                        self._on_frame_error(device, item)
                    else:
                        self._emit(device, dict(item), item.read_ns)
        finally:
            for error in decoder.close():
                self._on_frame_error(device, error)


def reschedule(
    due: dict[str, float],
    intervals: dict[str, float],
    current: dict[str, float],
    now: float,
    common_tick: float | None,
) -> dict[str, float]:
    """The next reading time (monotonic s) of each simulated board after a command: a board whose
    interval changed (`intervals` → `current`, s) reads next one new interval from `now`; every
    other board keeps its own schedule (`common_tick`: the shared tick it followed, if any), so a
    command to one board never moves another's readings."""
    return {
        device: now + current[device]
        if current[device] != intervals[device]
        else (common_tick if common_tick is not None else due[device])
        for device in due
    }


class SimulatorSource:
    """`devices` boards, each producing one reading every 1/rate_hz seconds."""

    def __init__(self, config: SimulatorConfig, emit: Emit, on_ack: OnAck | None = None) -> None:
        self._config = config
        self._emit = emit
        self._on_ack = on_ack
        rng = random.Random(config.seed)
        self.boards = {
            device: SimulatedBoard(config.sensors, config, rng) for device in simulated_device_ids(config)
        }
        self._lock = threading.Lock()  # the boards' settings: written by the command thread
        self._changed = threading.Event()  # a board's report_interval_s changed: reschedule

    def write(self, device: str, data: bytes) -> bool:
        """A command line to a simulated board: applied, answered with an ACK line like firmware."""
        board = self.boards.get(device)
        if board is None:
            return False
        for line in data.decode("utf-8", "replace").splitlines():
            with self._lock:
                answer = board.settings.handle(line)
            if answer is not None and answer.line is not None and self._on_ack is not None:
                self._on_ack(device, answer.line.rstrip("\n"))
        self._changed.set()
        return True

    def run(self, stop: threading.Event) -> None:
        config, boards = self._config, self.boards
        log.info("simulating %d board(s) at %g readings/s each", len(boards), config.rate_hz)
        start = time.monotonic()
        uniform = True  # every board at the configured rate: one tick for all, until a rate changes
        next_tick = start
        due = dict.fromkeys(boards, start)
        intervals = dict.fromkeys(boards, 1.0 / config.rate_hz)
        while not stop.is_set():
            now = time.monotonic()
            if self._changed.is_set():
                self._changed.clear()
                with self._lock:
                    current = {device: board.settings.report_interval_s for device, board in boards.items()}
                due = reschedule(due, intervals, current, now, next_tick if uniform else None)
                uniform = uniform and current == intervals
                intervals = current
            if uniform:
                next_tick = self._tick_all(now, next_tick, stop)
                continue
            upcoming = min(due.values())
            if now < upcoming:
                self._changed.wait(min(upcoming - now, 0.5))
                continue
            read_ns = time.time_ns()
            for device, at in due.items():
                if at <= now:
                    self._emit(device, boards[device].read(), read_ns)
                    interval = boards[device].settings.report_interval_s
                    due[device] = at + interval if now - at < 1.0 else now + interval

    def _tick_all(self, now: float, next_tick: float, stop: threading.Event) -> float:
        if now < next_tick:
            if self._on_ack is None:
                stop.wait(next_tick - now)
            else:  # also woken by a command that changes a board's rate
                self._changed.wait(min(next_tick - now, 0.5))
            return next_tick
        read_ns = time.time_ns()
        for device, board in self.boards.items():
            self._emit(device, board.read(), read_ns)
        next_tick += 1.0 / self._config.rate_hz
        if now - next_tick > 1.0:  # more than a second behind (machine suspended): skip, don't burst
            next_tick = now
        return next_tick
