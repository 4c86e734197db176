"""Which points of a batch InfluxDB refused, in few write requests. Pure apart from `write`.

Rules used, from InfluxDB's own write path (1.x and 2.x `coordinator/points_writer.go`):

* A "partial write" error means the rest of the request *was* stored; `dropped=N` counts what was not.
* Points beyond retention are dropped by time alone: a point is dropped when it is older than
  now − retention and no shard group of a newer point of the same request holds it. Which points
  survive is therefore closed upwards in time, so the N dropped ones are the N *oldest* of the
  request. A retention error is only returned when no other error happened, so its N is exact.
  One request settles any number of old points, interleaved or not.
* Any other refusal (field type conflict, line protocol, too large) does not say which points: the
  group is split in halves and each half written again (writes are idempotent, so rewriting points
  already stored is harmless). Its dropped=N is not trusted to be complete — a shard error hides the
  retention drops of the same request — except that N equal to the group's size means all of them.
  Splitting stops after `max_requests` requests for the batch; a group still refused then is
  dead-lettered whole, with a reason saying so, rather than writing on without a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from twinpipe.influx import Rejected

BEYOND_RETENTION = "beyond_retention"
REJECTED = "rejected"


class Refused(NamedTuple):
    index: int  # into the batch's lines
    reason: str
    kind: str  # BEYOND_RETENTION or REJECTED


class Outcome(NamedTuple):
    refused: list[Refused]
    requests: int


def oldest_dropped(indices: Sequence[int], times: Sequence[int], dropped: int) -> list[int] | None:
    """The `dropped` oldest of `indices` by event time, or None when that set is not well defined
    (more dropped than written, or a tie in time across the cut, which retention cannot produce)."""
    if not 0 < dropped <= len(indices):
        return None
    order = sorted(indices, key=times.__getitem__)
    if dropped < len(order) and times[order[dropped - 1]] >= times[order[dropped]]:
        return None
    return order[:dropped]


def write_isolating(
    lines: Sequence[str],
    times: Sequence[int],
    write: Callable[[list[str]], None],
    max_requests: int,
) -> Outcome:
    """Write `lines` (event times `times`, ns) and return the points InfluxDB did not store, each
    with InfluxDB's reason, and the number of write requests made. Every other point is stored.
    `Unavailable` from `write` propagates: the caller retries the whole batch."""
    refused: list[Refused] = []
    requests = 0

    def attempt(indices: list[int]) -> Rejected | None:
        nonlocal requests
        requests += 1
        try:
            write([lines[i] for i in indices])
        except Rejected as exc:
            return exc
        return None

    def settle(indices: list[int], exc: Rejected) -> None:
        reason = f"rejected by InfluxDB: {exc}"
        partial = exc.partial
        if partial is not None and partial.beyond_retention:
            old = oldest_dropped(indices, times, partial.dropped)
            if old is not None:
                refused.extend(Refused(i, reason, BEYOND_RETENTION) for i in old)
                return
        if len(indices) == 1 or (partial is not None and partial.dropped == len(indices)):
            refused.extend(Refused(i, reason, REJECTED) for i in indices)
            return
        if requests >= max_requests:
            note = (
                f" (one of {len(indices)} points refused together; not split further after"
                f" {requests} write requests for this batch)"
            )
            refused.extend(Refused(i, reason + note, REJECTED) for i in indices)
            return
        middle = len(indices) // 2
        for half in (indices[:middle], indices[middle:]):
            failure = attempt(half)
            if failure is not None:
                settle(half, failure)

    everything = list(range(len(lines)))
    if everything:
        failure = attempt(everything)
        if failure is not None:
            settle(everything, failure)
    refused.sort()
    return Outcome(refused, requests)
