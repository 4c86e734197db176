"""Recognising a stolen MQTT session: another client connected with the same client id.

MQTT 5 (§3.1.4, §4.13) has the broker send the old connection a DISCONNECT with reason code 0x8E
"Session taken over" before closing it. Mosquitto does so from 2.0.15 (eclipse-mosquitto #2340,
#2607; compose runs 2.0.20); older ones (Debian 12 ships 2.0.11) only close the connection, and paho
reports "Unspecified error" (CONNECTION_LOST). There the sign is the flap itself: the broker closes a
connection within moments of accepting it, again and again (STRIKES in a row, each within SHORT_S),
each time reported as that lost connection.

Two clients on one id take the session from each other every reconnect delay (0.5 s by default),
forever. Stopping for good would leave a stage down after a short overlap (a rolling update, a
restarted container whose old process lingers), so the stage keeps reconnecting, but with a delay
that grows per takeover (BACKOFF_INITIAL_S doubling to BACKOFF_MAX_S): the session then changes
hands about once a minute instead of twice a second, with fewer redeliveries. Each takeover is
counted; the first of an episode is logged with the client id and what to change; the stage is
not ready until a connection has held for STABLE_MIN_S (and twice the last delay), which ends the
episode. A stage shutting down (`SessionGuard.draining`) reconnects with its usual delays again: it
needs the session only until its shutdown deadline, to deliver what it holds.

`TakeoverWatch` is the rule, fed times and disconnect reasons, with no I/O; `SessionGuard` wires it
to a paho client, a log and a counter.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from prometheus_client import Counter

from twinpipe.backoff import Backoff

log = logging.getLogger("twinpipe.mqtt")

SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code
# paho's reason for a connection closed without a DISCONNECT packet ("Unspecified error"): how a
# taken-over connection ends on Mosquitto 2.0.11. Not "Protocol error" (130), which paho reports when
# Mosquitto closes on a PUBLISH over its message_size_limit: the Outbox's poison reading, which must
# be found by re-sending it soon, not mistaken for a takeover and backed off.
CONNECTION_LOST = 128
SHORT_S = 5.0  # a connection the broker closes (without a reason) this soon after accepting it ...
STRIKES = 3  # ... this many times in a row: taken over
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 60.0
STABLE_MIN_S = 20.0


@dataclass(frozen=True, slots=True)
class Takeover:
    first: bool  # the first of an episode: log it
    evidence: str
    reconnect_delay_s: float


class TakeoverWatch:
    def __init__(self, backoff: Callable[[], Backoff] = lambda: Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)):
        self._new_backoff = backoff
        self._backoff = backoff()
        self._connected_at: float | None = None
        self._strikes = 0
        self._last_delay_s = 0.0
        self.episode = False
        self.takeovers = 0  # in this episode

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float, reason_code: int, from_broker: bool, failure: bool) -> Takeover | None:
        """A disconnect: `reason_code` as reported (paho's 128 when the connection was just lost),
        `from_broker` when the broker sent a DISCONNECT packet, `failure` unless we disconnected."""
        self.stable(now)
        lived_s = math.inf if self._connected_at is None else now - self._connected_at
        self._connected_at = None
        if not failure:
            return None
        if from_broker and reason_code == SESSION_TAKEN_OVER:
            evidence = "the broker says: Session taken over (MQTT 5 reason code 0x8E)"
        elif from_broker or reason_code != CONNECTION_LOST:
            self._strikes = 0
            return None  # the broker gave another reason, or paho saw another error
        elif lived_s < SHORT_S:
            self._strikes += 1
            if self._strikes < STRIKES and not self.episode:
                return None
            evidence = (
                f"the broker closed the connection {self._strikes} times in a row within {SHORT_S:.0f} s "
                "of accepting it, without a reason (a broker that does not send MQTT 5's 'Session taken "
                "over', such as Mosquitto before 2.0.15)"
            )
        elif self.episode:
            evidence = "the broker closed the connection again, without a reason"
        else:
            self._strikes = 0
            return None
        first = not self.episode
        if first:
            self._backoff = self._new_backoff()
            self.takeovers = 0
        self.episode = True
        self.takeovers += 1
        self._last_delay_s = self._backoff.next_delay()
        return Takeover(first, evidence, self._last_delay_s)

    def stable(self, now: float) -> bool:
        """True once the current connection has held long enough to end an episode (ending it)."""
        held = self._connected_at is not None and now - self._connected_at >= max(
            STABLE_MIN_S, 2 * self._last_delay_s
        )
        if held:
            if self.episode:
                self.episode = False
            self._strikes = 0
        return held


def takeover_counter(stage: str) -> Counter:
    """`twinpipe_<stage>_session_takeovers_total`, made once per process."""
    if stage not in _COUNTERS:
        _COUNTERS[stage] = Counter(
            f"twinpipe_{stage}_session_takeovers",
            "Times another MQTT client with this stage's client id took its session over",
        )
    return _COUNTERS[stage]


_COUNTERS: dict[str, Counter] = {}


class SessionGuard:
    """Call `connected()` from on_connect (on success) and `disconnected(reason, flags)` from
    on_disconnect; add `ready` to the readiness checks."""

    def __init__(
        self,
        client: mqtt.Client,
        client_id: str,
        advice: str,
        stage: str,
        reconnect_s: tuple[float, float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`advice`: what to change, e.g. "give each replica its own bridge.client_id".
        `reconnect_s`: the client's usual reconnect delays (min, max), restored after an episode."""
        self._client = client
        self._client_id = client_id
        self._advice = advice
        self._counter = takeover_counter(stage)
        self._reconnect_s = reconnect_s
        self._clock = clock
        self._lock = threading.Lock()  # paho's thread reports, the health server's asks
        self._draining = False
        self.watch = TakeoverWatch()

    def draining(self) -> None:
        """The stage is shutting down and needs the session only until its shutdown deadline: from now
        on it reconnects with its usual delays, also after a takeover (still counted)."""
        with self._lock:
            self._draining = True
        self._client.reconnect_delay_set(*self._reconnect_s)  # type: ignore[arg-type]

    def connected(self) -> None:
        with self._lock:
            self.watch.connected(self._clock())

    def disconnected(self, reason: Any, flags: Any) -> bool:
        """True when the session was taken over (counted here, logged once per episode)."""
        with self._lock:
            was = self.watch.episode
            takeover = self.watch.disconnected(
                self._clock(),
                int(getattr(reason, "value", reason)),
                bool(getattr(flags, "is_disconnect_packet_from_server", False)),
                bool(getattr(reason, "is_failure", True)),
            )
            if takeover is None:
                self._ended(was)
                return False
        self._counter.inc()
        delay = takeover.reconnect_delay_s
        if not self._draining:
            self._client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
        if takeover.first:
            log.error(
                "MQTT session of client id '%s' taken over by another client with the same id (%s). "
                "Two clients share this id: %s. Reconnecting with a delay growing up to %.0f s while "
                "this goes on; not ready meanwhile",
                self._client_id,
                takeover.evidence,
                self._advice,
                BACKOFF_MAX_S,
            )
        return True

    def _ended(self, was_episode: bool) -> None:
        if was_episode and not self.watch.episode:
            self._client.reconnect_delay_set(*self._reconnect_s)  # type: ignore[arg-type]
            log.info("MQTT session of client id '%s' held again: no longer taken over", self._client_id)

    def ready(self) -> bool | str:
        with self._lock:
            was = self.watch.episode
            self.watch.stable(self._clock())
            self._ended(was)
            if not self.watch.episode:
                return True
            return (
                f"MQTT session of client id '{self._client_id}' taken over {self.watch.takeovers} times by "
                f"another client with the same id: {self._advice}"
            )
