"""Commands from MQTT to the board, one at a time, each with the evidence of what happened to it.

For each command: `delivered` (it reached the publisher); `expired` if its `expires_ns` has passed
(never written); else it is written to the board (`written`), waiting while the board is unplugged
— unless it expires meanwhile (`expired`) — and the board's ACK lines are awaited:
`acknowledged` with the settings the board reports, or `failed` after `ack_timeout_s`. The MQTT
message is acknowledged (`ack`) only after the outcome event was handed to the MQTT client, so a
publisher killed mid-command gets it again from its persistent session; the board ignores a
command id it has already applied.

Threads: `submit` and `on_ack` are called from the MQTT network thread and the source thread; `run`
is the command thread. Waiting commands are bounded by `max_waiting` (the MQTT session's Receive
Maximum as well); one past that is reported `failed` and acknowledged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from publisher import metrics
from publisher.command_codec import Ack, LineCodec, parse_reported
from twinpipe.command_messages import Command, CommandEvent
from twinpipe.config.publisher import CommandsConfig
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("publisher.commands")

WRITE_RETRY_S = 0.2  # how often a command waiting for an unplugged board tries again

Write = Callable[[str, bytes], bool]  # device, bytes → False while the board cannot be written
Emit = Callable[[CommandEvent, str], None]  # event, MQTT topic
AckMessage = Callable[[Any], None]  # the MQTT message's token, from submit()


@dataclass(slots=True)
class Incoming:
    command: Command
    reply_topic: str
    token: Any  # what `ack_message` needs to acknowledge the MQTT message


def no_ack_detail(timeout_s: float) -> str:
    return f"no acknowledgement within {timeout_s:g} s"


class CommandRunner:
    def __init__(
        self,
        config: CommandsConfig,
        codec: LineCodec,
        write: Write,
        emit: Emit,
        ack_message: AckMessage,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._codec = codec
        self._write = write
        self._emit = emit
        self._ack_message = ack_message
        self._clock_ns = clock_ns
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._acks: dict[tuple[str, str], Ack] = {}  # (id, name) → ACK, for the command being written
        self._current: Command | None = None
        self._acked = threading.Condition(self._lock)
        self._throttled = ThrottledLog(log)
        metrics.COMMANDS_WAITING.set_function(lambda: self._waiting)

    # --- MQTT network thread ---

    def submit(self, command: Command, reply_topic: str, token: Any) -> None:
        self._event(command, "delivered", reply_topic)
        with self._lock:
            full = self._waiting >= self._config.max_waiting
            if not full:
                self._waiting += 1
        if full:
            metrics.COMMANDS_OVERFLOW.inc()
            detail = (
                f"{self._config.max_waiting} commands already wait for the board "
                "(publisher.commands.max_waiting)"
            )
            log.warning("command %s for %s refused: %s", command.id, command.device, detail)
            self._finish(Incoming(command, reply_topic, token), "failed", detail)
            return
        self._queue.put(Incoming(command, reply_topic, token))

    # --- source thread ---

    def on_ack(self, device: str, line: str) -> None:
        """An acknowledgement line from `device`'s board."""
        ack = self._codec.parse_ack(line)
        if ack is None:
            return
        with self._lock:
            current = self._current
            if current is not None and current.device == device and ack.id == current.id:
                self._acks[(ack.id, ack.name)] = ack
                self._acked.notify_all()
                return
        metrics.COMMAND_ACKS_UNEXPECTED.inc()
        self._throttled.warning(
            "unexpected-ack", "acknowledgement from %s for no command being written: %r", device, line
        )

    # --- command thread ---

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                incoming = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._execute(incoming, stop)
            finally:
                with self._lock:
                    self._waiting -= 1

    def _execute(self, incoming: Incoming, stop: threading.Event) -> None:
        command = incoming.command
        if command.expired(self._clock_ns()):
            late_s = (self._clock_ns() - command.expires_ns) / 1e9
            self._finish(
                incoming, "expired", f"expired {late_s:.1f} s ago, before it was written; never written"
            )
            return
        lines = self._codec.encode(command)
        data = b"".join(line for _, line in lines)
        with self._lock:
            self._current, self._acks = command, {}
        try:
            waited = False
            while not self._write(command.device, data):
                if not waited:
                    waited = True
                    metrics.COMMANDS_WAITED.inc()
                    log.info("command %s waits for %s's board (not connected)", command.id, command.device)
                if command.expired(self._clock_ns()):
                    self._finish(
                        incoming, "expired", "expired while the board was not connected; never written"
                    )
                    return
                if stop.wait(WRITE_RETRY_S):
                    return  # not acknowledged: the broker gives it to the next session
            written_ns = self._clock_ns()
            self._event(
                command, "written", incoming.reply_topic, "after waiting for the board" if waited else ""
            )
            acks = self._await_acks(command, [name for name, _ in lines], stop)
        finally:
            with self._lock:
                self._current = None
        if acks is None:
            if not stop.is_set():
                self._finish(incoming, "failed", no_ack_detail(self._config.ack_timeout_s))
            return
        reported = {ack.name: parse_reported(ack.value, command.settings[ack.name]) for ack in acks}
        metrics.COMMAND_ACK_SECONDS.observe((self._clock_ns() - written_ns) / 1e9)
        self._finish(incoming, "acknowledged", "", reported)

    def _await_acks(self, command: Command, names: list[str], stop: threading.Event) -> list[Ack] | None:
        deadline = time.monotonic() + self._config.ack_timeout_s
        wanted = [(command.id, name) for name in names]
        with self._lock:
            while not all(key in self._acks for key in wanted):
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return None
                self._acked.wait(min(left, 0.2))
            return [self._acks[key] for key in wanted]

    def _finish(
        self, incoming: Incoming, state: str, detail: str, reported: dict[str, Any] | None = None
    ) -> None:
        """The outcome event, then the MQTT acknowledgement (never the other way round)."""
        self._event(incoming.command, state, incoming.reply_topic, detail, reported)
        self._ack_message(incoming.token)

    def _event(
        self,
        command: Command,
        state: str,
        topic: str,
        detail: str = "",
        reported: dict[str, Any] | None = None,
    ) -> None:
        metrics.COMMAND_EVENTS.labels(state).inc()
        if state in ("failed", "expired"):
            log.warning("command %s for %s %s: %s", command.id, command.device, state, detail)
        event = CommandEvent(
            command.id, command.device, state, self._clock_ns(), "publisher", detail, reported
        )
        self._emit(event, topic)
