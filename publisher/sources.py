"""Where readings come from: a board on a serial port, or simulated boards. Each runs in its own thread."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import serial

from publisher.framing import FrameError, make_decoder
from publisher.simulator import SimulatedBoard
from twinpipe.backoff import Backoff
from twinpipe.config import SerialConfig, SimulatorConfig, simulated_device_ids
from twinpipe.retry import until_connected

log = logging.getLogger("publisher.source")

Emit = Callable[[str, dict[str, float], int], None]  # device, values, read time (ns)
OnFrameError = Callable[[str, FrameError], None]  # device, error


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
    ) -> None:
        self._config = config
        self._ranges = ranges or {}
        self._emit = emit
        self._on_frame_error = on_frame_error

    def run(self, stop: threading.Event) -> None:
        config = self._config
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
            try:
                self._read(port, stop)
            except (serial.SerialException, OSError) as exc:
                log.warning("lost %s (%s); reconnecting", config.port, exc)
            finally:
                port.close()

    def _read(self, port: serial.Serial, stop: threading.Event) -> None:
        decoder = make_decoder(self._config.frame, self._ranges)
        device = self._config.device_id
        try:
            while not stop.is_set():
                data = port.read(max(1, port.in_waiting))
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


class SimulatorSource:
    """`devices` boards, each producing one reading every 1/rate_hz seconds."""

    def __init__(self, config: SimulatorConfig, emit: Emit) -> None:
        self._config = config
        self._emit = emit

    def run(self, stop: threading.Event) -> None:
        config = self._config
        rng = random.Random(config.seed)
        devices = simulated_device_ids(config)
        boards = {device: SimulatedBoard(config.sensors, config, rng) for device in devices}
        log.info("simulating %d board(s) at %g readings/s each", len(boards), config.rate_hz)
        interval = 1.0 / config.rate_hz
        next_tick = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now < next_tick:
                stop.wait(next_tick - now)
                continue
            read_ns = time.time_ns()
            for device, board in boards.items():
                self._emit(device, board.read(), read_ns)
            next_tick += interval
            if now - next_tick > 1.0:  # more than a second behind (machine suspended): skip, don't burst
                next_tick = now
