"""Per-hop delays from an envelope's trace, and whether a delay can be trusted.

Stamps in pipeline order: board read (the event time), MQTT publish, bridge receive, Kafka (the
record's CreateTime, set when the bridge hands the record to the producer, in whole milliseconds),
then the consumer's own receive time. A hop is measured between consecutive stamps that are present.

Stamps come from different processes, possibly on different hosts, so a delay is only as good as
the clocks: a negative delay, or one above the plausible maximum, says the clocks disagree and is
reported as a clock anomaly instead of a latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from twinpipe.envelope import TRACE_BRIDGE, TRACE_PUBLISH, Envelope

KAFKA = "kafka"
MS_NS = 1_000_000

# Buckets for hop delays, in seconds: 0.1 ms … 10 s.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Hop:
    name: str  # "<from>_to_<to>", e.g. "publish_to_bridge"
    seconds: float


def stamps(envelope: Envelope, kafka_timestamp_ms: int | None) -> list[tuple[str, int]]:
    """The stamps present in pipeline order, as (stage, ns)."""
    ordered: list[tuple[str, int | None]] = [
        ("read", envelope.time_ns),
        ("publish", envelope.trace.get(TRACE_PUBLISH)),
        ("bridge", envelope.trace.get(TRACE_BRIDGE)),
        (KAFKA, kafka_timestamp_ms * MS_NS if kafka_timestamp_ms is not None else None),
    ]
    return [(stage, ns) for stage, ns in ordered if ns is not None]


def hop_delays(known: list[tuple[str, int]]) -> list[Hop]:
    """Delays between consecutive stamps.

    The Kafka stamp is cut to the millisecond, so it can read up to 1 ms early; a hop into Kafka
    that is negative by less than that counts as zero.
    """
    hops = []
    for (a, t_a), (b, t_b) in zip(known, known[1:], strict=False):
        delta = t_b - t_a
        if b == KAFKA and -MS_NS < delta < 0:
            delta = 0
        hops.append(Hop(f"{a}_to_{b}", delta / 1e9))
    return hops


Verdict = Literal["ok", "negative", "absurd"]


def judge(seconds: float, max_plausible_s: float) -> Verdict:
    if seconds < 0:
        return "negative"
    if seconds > max_plausible_s:
        return "absurd"
    return "ok"
