"""A Kafka outage longer than the bridge's delivery timeout (issue 11, section 1): the records the
producer holds time out, and an idempotent librdkafka producer is left refusing every record with
PRODUCER_FENCED. The bridge must re-send with a backoff (never spin), replace a producer in a fatal
state, fail readiness meanwhile, and lose nothing. Same books as tests/faults/test_faults.py.

The outage (`time.sleep`) is the fault itself; everything that waits for an effect polls.
"""

from __future__ import annotations

import os
import time

import pytest

from devstack.process import stage_metric, stage_ready
from mqtt_kafka_bridge.producers import FATAL_KINDS
from tests.faults.flow import Flow, gaps
from tests.harness import Pipeline, poll

DELIVERY_TIMEOUT_S = 5
OUTAGE_S = 12
MAX_INFLIGHT = 1000  # bridge.max_inflight's default: what the broker lets the bridge hold unacknowledged
RECOVERY_BOUND_S = 30


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("producer", ["kafka-python", "confluent-kafka"])
def test_kafka_unreachable_longer_than_the_delivery_timeout_loses_nothing_and_never_spins(
    pipeline: Pipeline, producer: str
) -> None:
    settings = {"producer": producer, "delivery_timeout_s": DELIVERY_TIMEOUT_S}
    flow = Flow(pipeline, config={"bridge": settings})
    flow.start_all()
    port = flow.ports["mqtt_kafka_bridge"]
    bridge = flow.stages["mqtt_kafka_bridge"]
    assert bridge.process is not None
    proxy = pipeline.stack.kafka_proxy
    assert proxy is not None
    cpu_before = cpu_seconds(bridge.process.pid)
    cut = time.monotonic()
    proxy.cut()
    poll(lambda: stage_ready(port), lambda ready: not ready, DELIVERY_TIMEOUT_S + 10, "the bridge not ready")
    not_ready_after_s = time.monotonic() - cut
    time.sleep(max(0.0, OUTAGE_S - not_ready_after_s))  # the rest of the outage
    failures_in_outage = stage_metric(port, "twinpipe_bridge_errors_total", kind="delivery")
    cpu_in_outage = cpu_seconds(bridge.process.pid) - cpu_before
    proxy.restore()
    restored = time.monotonic()
    recovery = flow.wait_recovered(flow.readings(), restored)
    poll(lambda: stage_ready(port), bool, 30, "the bridge ready again")
    failures = stage_metric(port, "twinpipe_bridge_errors_total", kind="delivery")
    recreations = {
        kind: n
        for kind in FATAL_KINDS
        if (n := stage_metric(port, "twinpipe_bridge_producer_recreations_total", cause=kind))
    }
    log = bridge.log()
    observed = flow.finish(
        f"Kafka unreachable {OUTAGE_S} s > delivery_timeout_s {DELIVERY_TIMEOUT_S} (producer {producer})",
        recovery,
    )
    observed.notes += [
        f"not ready {not_ready_after_s:.1f} s after the cut",
        f"{failures_in_outage:.0f} failed deliveries during the outage, {failures:.0f} in all",
        f"{cpu_in_outage:.2f} CPU-s in {OUTAGE_S} s of outage",
        f"producers replaced: {recreations or 'none'}",
    ]
    print("\n" + observed.line())
    assert observed.lost == 0 and not any(gaps(pipeline).values())
    assert recovery < RECOVERY_BOUND_S
    # Without backoff the failures ran at ~15,000/s. With it each record the broker lets the bridge
    # hold fails at most once per delivery timeout, plus once at the recovery.
    assert failures <= MAX_INFLIGHT * (OUTAGE_S / DELIVERY_TIMEOUT_S + 2), observed.line()
    assert cpu_in_outage < 0.5 * OUTAGE_S, observed.line()
    fatal_lines = log.count("Kafka producer in a fatal state")
    assert fatal_lines == sum(recreations.values()) <= 3, log[-3000:]
    if producer == "confluent-kafka":
        # librdkafka's state after timed-out records (reproduced against Tansu): replaced, not hammered.
        assert recreations, log[-3000:]
