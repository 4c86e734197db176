"""One alert's state machine, as pure functions: (state, input, now) → (state, transitions).

States follow Prometheus' alerting rules (rules/alerting.go: inactive → pending → firing, `for`,
`keep_firing_for`): OK → PENDING (the condition is true, `for_s` not yet over) → FIRING → OK again,
announced as a RESOLVED transition. A PENDING whose condition turns false before `for_s` returns to
OK with an `ok` transition, so a display that showed PENDING learns it is over.

Conditions, with hysteresis after Kapacitor's warnReset/critReset (separate raise and clear levels):

* above: true once value > raise; then stays true until value < clear (clear <= raise).
* below: true once value < raise; then stays true until value > clear (clear >= raise).
* rate_of_change: the same as above on |Δvalue / Δt| (per s) between the newest reading and the
  oldest one kept within `window_s` before it (readings are kept at least window_s/120 apart, so
  that one is at most window_s/120 younger than the oldest in the window); not judged (the machine
  stays as it is) until two span at least half of window_s, also after a gap that emptied the window.
* no_data: true when at least `silence_s` passed since the latest reading (a deadman switch).
* anomaly: true from an anomaly event until `window_s` passed without another one.

Clocks. above, below and rate_of_change run on the readings' event time (`time_ns`): `for_s` means
"the board measured it this long", whatever the delivery delay, so a backlog delivered after an
outage, a restart that re-reads records or a replay reaches the same verdicts at the same instants.
A reading not newer than the latest one seen is ignored (a re-delivery after a restart, or out of
order). no_data and anomaly run on the wall clock of this stage (arrival and timer ticks): silence is
about now, and a silent board sends no event time to compare with.

All times are ns since the epoch; durations in the rule are s.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from twinpipe.config.alerting import Rule

OK, PENDING, FIRING, RESOLVED = "ok", "pending", "firing", "resolved"
EVENT_TIME_KINDS = frozenset({"above", "below", "rate_of_change"})
WALL_CLOCK_KINDS = frozenset({"no_data", "anomaly"})
# rate_of_change keeps readings at least window_s / RATE_RESOLUTION apart: the state stays small (a
# snapshot per device per commit) and the rate's start point is at most that much younger than the
# oldest reading in the window.
RATE_RESOLUTION = 120
# rate_of_change judges only a span of at least this fraction of window_s between the oldest kept and
# the newest reading: from two readings 1 s apart, noise of ±0.5 reads as 1 unit/s.
RATE_COVERAGE = 0.5
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class MachineState:
    state: str = OK  # ok | pending | firing
    active: bool = False  # the condition's latest value
    since_ns: int | None = None  # when the condition became true: the alert's start (startsAt)
    last_active_ns: int | None = None  # the latest time the condition was true (keep_firing_for)
    last_input_ns: int | None = None  # latest reading (event time) or arrival (wall-clock kinds)
    value: float | None = None  # the latest value the condition was judged on
    samples: tuple[tuple[int, float], ...] = ()  # rate_of_change: (time_ns, value) kept in the window

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "active": self.active,
            "since_ns": self.since_ns,
            "last_active_ns": self.last_active_ns,
            "last_input_ns": self.last_input_ns,
            "value": self.value,
            "samples": [list(sample) for sample in self.samples],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineState:
        return cls(
            state=data["state"],
            active=data["active"],
            since_ns=data["since_ns"],
            last_active_ns=data["last_active_ns"],
            last_input_ns=data["last_input_ns"],
            value=data["value"],
            samples=tuple((int(t), float(v)) for t, v in data.get("samples", ())),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    state: str  # pending | firing | resolved | ok (a pending alert whose condition went away)
    time_ns: int  # when it happened, on the rule's clock
    starts_ns: int  # when the condition became true
    ends_ns: int | None  # resolved / ok: when it ended
    value: float | None


def hysteresis(kind: str, was_active: bool, value: float, raise_: float, clear: float) -> bool:
    """The condition of an above/below level with a clear level: unchanged inside the band."""
    if kind == "below":
        return value <= clear if was_active else value < raise_
    return value >= clear if was_active else value > raise_


def replace(st: MachineState, **changes: Any) -> MachineState:
    """dataclasses.replace for MachineState, without its introspection (a third of the time per reading)."""
    get = changes.get
    return MachineState(
        get("state", st.state),
        get("active", st.active),
        get("since_ns", st.since_ns),
        get("last_active_ns", st.last_active_ns),
        get("last_input_ns", st.last_input_ns),
        get("value", st.value),
        get("samples", st.samples),
    )


def _time(sample: tuple[int, float]) -> int:
    return sample[0]


def window_rate(samples: tuple[tuple[int, float], ...]) -> float | None:
    """|Δvalue/Δt| per s between the oldest and the newest sample; None with fewer than two, or when
    it overflows (values near ±1.8e308 with no range in the model)."""
    if len(samples) < 2:
        return None
    (t0, v0), (t1, v1) = samples[0], samples[-1]
    if t1 <= t0:
        return None
    rate = abs(v1 - v0) * NS / (t1 - t0)
    return rate if math.isfinite(rate) else None


def advance(rule: Rule, st: MachineState, active: bool, now_ns: int) -> tuple[MachineState, list[Transition]]:
    """Move the machine given the condition's value at `now_ns` (the generic part of every kind)."""
    for_ns = round(rule.for_s * NS)
    keep_ns = round(rule.keep_firing_for_s * NS)
    last_active = now_ns if active else st.last_active_ns
    st = replace(st, active=active, last_active_ns=last_active)
    if st.state == OK:
        if not active:
            return st, []
        if for_ns <= 0:
            st = replace(st, state=FIRING, since_ns=now_ns)
            return st, [Transition(FIRING, now_ns, now_ns, None, st.value)]
        st = replace(st, state=PENDING, since_ns=now_ns)
        return st, [Transition(PENDING, now_ns, now_ns, None, st.value)]
    since = st.since_ns if st.since_ns is not None else now_ns
    if st.state == PENDING:
        if not active:
            return replace(st, state=OK, since_ns=None), [Transition(OK, now_ns, since, now_ns, st.value)]
        if now_ns - since >= for_ns:
            return replace(st, state=FIRING), [Transition(FIRING, now_ns, since, None, st.value)]
        return st, []
    # FIRING
    if active or (last_active is not None and now_ns - last_active < keep_ns):
        return st, []
    done = replace(st, state=OK, since_ns=None)
    return done, [Transition(RESOLVED, now_ns, since, now_ns, st.value)]


def on_reading(
    rule: Rule, st: MachineState, time_ns: int, value: float, arrival_ns: int
) -> tuple[MachineState, list[Transition]]:
    """A reading of the datastream: `time_ns` its event time, `arrival_ns` the wall clock now."""
    kind = rule.kind
    if kind == "anomaly":
        return st, []
    if kind == "no_data":
        previous = st.last_input_ns
        silence = (arrival_ns - previous) / NS if previous is not None else 0.0
        st = replace(st, last_input_ns=max(arrival_ns, previous or 0), value=max(silence, 0.0))
        return advance(rule, st, False, arrival_ns)
    if st.last_input_ns is not None and time_ns <= st.last_input_ns:
        return st, []  # not newer: a re-delivery or out of order
    raise_, clear = rule.raise_, rule.clear_level()
    assert raise_ is not None and clear is not None  # checked by the config (level_problem)
    if kind == "rate_of_change":
        window_ns = round(rule.window_s * NS)
        kept = st.samples[bisect_left(st.samples, time_ns - window_ns, key=_time) :]
        rate = window_rate((*kept[:1], (time_ns, value)))
        if not kept or time_ns - kept[-1][0] >= window_ns // RATE_RESOLUTION:
            kept = (*kept, (time_ns, value))
        st = replace(st, samples=kept, last_input_ns=time_ns, value=rate)
        if rate is None or time_ns - kept[0][0] < window_ns * RATE_COVERAGE:
            return st, []  # no span, or too short a one, to judge: the machine does not move
        active = hysteresis("above", st.active, rate, raise_, clear)
        return advance(rule, st, active, time_ns)
    active = hysteresis(kind, st.active, value, raise_, clear)
    return advance(rule, replace(st, last_input_ns=time_ns, value=value), active, time_ns)


def on_anomaly(
    rule: Rule, st: MachineState, arrival_ns: int, value: float
) -> tuple[MachineState, list[Transition]]:
    """An anomaly event (predictive stage) for the datastream, received at wall clock `arrival_ns`."""
    if rule.kind != "anomaly":
        return st, []
    st = replace(st, last_input_ns=max(arrival_ns, st.last_input_ns or 0), value=value)
    return advance(rule, st, True, arrival_ns)


def on_tick(rule: Rule, st: MachineState, now_ns: int) -> tuple[MachineState, list[Transition]]:
    """A timer tick at wall clock `now_ns`: wall-clock kinds judge silence; others are unchanged."""
    if rule.kind not in WALL_CLOCK_KINDS or st.last_input_ns is None:
        return st, []
    quiet_ns = now_ns - st.last_input_ns
    if rule.kind == "no_data":
        active = quiet_ns >= round(rule.silence_s * NS)
        st = replace(st, value=quiet_ns / NS)
    else:
        active = quiet_ns < round(rule.window_s * NS)
        if active == st.active and st.state == OK:
            return st, []
    return advance(rule, st, active, now_ns)


def restarted(rule: Rule, st: MachineState, now_ns: int) -> MachineState:
    """The state as restored after a restart or rebalance at wall clock `now_ns`.

    Readings sent while no replica watched are still in Kafka and will arrive, so a no_data rule
    counts its silence from the takeover, not from the last reading before it: no storm of deadman
    alerts after an outage of the stage itself. Event-time kinds are unchanged.
    """
    if rule.kind == "no_data" and st.last_input_ns is not None and st.state == OK:
        return replace(st, last_input_ns=max(st.last_input_ns, now_ns))
    return st
