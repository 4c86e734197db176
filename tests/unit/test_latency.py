"""The latency probe's pure parts: hop delays, clock judgement, device labels, quantiles, probe books."""

from __future__ import annotations

from latency_probe.prober import ProbeBook
from latency_probe.recorder import OTHER_DEVICES, DeviceLabels, HopRecorder, quantiles, summary_lines
from twinpipe.envelope import PROBE_DEVICE, Envelope, decode, encode
from twinpipe.metrics import sample
from twinpipe.trace import hop_delays, judge, stamps

MS = 1_000_000


def reading(device: str = "d1", read_ns: int = 1_000 * MS, **trace: int) -> Envelope:
    return Envelope(device, "boot", 1, read_ns, {"t": 20.0}, dict(trace))


def test_hops_between_consecutive_stamps_that_are_present() -> None:
    envelope = reading(publish=1_002 * MS)  # no bridge stamp
    hops = hop_delays(stamps(envelope, kafka_timestamp_ms=1_010))
    assert [(h.name, h.seconds) for h in hops] == [("read_to_publish", 0.002), ("publish_to_kafka", 0.008)]


def test_kafka_millisecond_stamp_up_to_1ms_early_counts_as_zero_but_not_more() -> None:
    early = hop_delays([("bridge", 1_000 * MS + 600_000), ("kafka", 1_000 * MS)])
    assert early[0].seconds == 0
    too_early = hop_delays([("bridge", 1_001 * MS + 1), ("kafka", 1_000 * MS)])
    assert too_early[0].seconds < 0


def test_judge_flags_negative_and_absurd_delays() -> None:
    assert [judge(s, 60) for s in (-0.001, 0.0, 59.0, 61.0)] == ["negative", "ok", "ok", "absurd"]


def test_recorder_counts_clock_anomalies_and_keeps_them_out_of_histograms() -> None:
    recorder = HopRecorder(device_labels=5, max_plausible_s=60)
    before = sample("twinpipe_latency_probe_clock_anomalies_total", hop="read_to_publish", kind="negative")
    count_before = sample(
        "twinpipe_latency_probe_hop_delay_seconds_count", hop="publish_to_bridge", device="skew"
    )
    # The publisher's clock is 5 ms behind the board's reader: read → publish is negative.
    accepted = recorder.record(
        reading("skew", publish=995 * MS, bridge=1_001 * MS), kafka_timestamp_ms=1_002, now_ns=1_003 * MS
    )
    assert [h.name for h in accepted] == [
        "publish_to_bridge",
        "bridge_to_kafka",
        "kafka_to_probe",
        "read_to_probe",
    ]
    assert (
        sample("twinpipe_latency_probe_clock_anomalies_total", hop="read_to_publish", kind="negative")
        == before + 1
    )
    assert (
        sample("twinpipe_latency_probe_hop_delay_seconds_count", hop="publish_to_bridge", device="skew")
        == count_before + 1
    )
    windows = recorder.take_windows()
    assert list(windows["read_to_probe"]) == [0.003] and "read_to_publish" not in windows
    assert recorder.take_windows() == {}


def test_device_labels_are_bounded() -> None:
    labels = DeviceLabels(2)
    assert [labels(d) for d in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        OTHER_DEVICES,
        "a",
        OTHER_DEVICES,
        "b",
    ]
    assert DeviceLabels(0)("a") == OTHER_DEVICES


def test_nearest_rank_quantiles_and_summary_points() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1 … 100 ms
    assert quantiles(samples) == [0.05, 0.095, 0.099]
    assert quantiles([0.5]) == [0.5, 0.5, 0.5]
    lines = summary_lines("twinpipe_latency", {"a_to_b": samples, "empty": []}, 1_700_000_000_000_000_000)
    assert lines == [
        "twinpipe_latency,hop=a_to_b count=100i,p50=0.05,p95=0.095,p99=0.099 1700000000000000000"
    ]


def test_probe_book_times_each_stage_once_and_expires_the_missing() -> None:
    book = ProbeBook("boot-1", timeout_s=1.0)
    first = book.new_probe(1_000 * MS)
    second = book.new_probe(1_500 * MS)
    assert first.device == PROBE_DEVICE and (first.seq, second.seq) == (0, 1)
    assert decode(encode(first)) == first, "a probe is a valid envelope"
    assert book.is_mine(first) and not book.is_mine(Envelope(PROBE_DEVICE, "other", 0, 1, {"probe": 1.0}))
    assert book.seen("kafka", [0], 1_020 * MS) == [0.02]
    assert book.seen("kafka", [0], 1_030 * MS) == [], "reported once"
    assert book.oldest_pending("influxdb") == 1_000 * MS
    assert book.seen("influxdb", [0, 7], 1_100 * MS) == [0.1]
    lost = book.expire(2_600 * MS)  # the second probe is 1.1 s old
    assert lost == {"kafka": [1], "influxdb": [1]}
    assert book.oldest_pending("kafka") is None


def test_replayed_readings_are_counted_and_kept_out_of_the_hop_delays() -> None:
    from types import SimpleNamespace

    from latency_probe.probe import LatencyProbe
    from twinpipe.envelope import Envelope, encode
    from twinpipe.metrics import sample

    recorded: list[Envelope] = []
    probe = SimpleNamespace(
        book=SimpleNamespace(is_mine=lambda envelope: False),
        recorder=SimpleNamespace(record=lambda envelope, *_: recorded.append(envelope)),
    )
    now_ns = 1_800_000_000 * 10**9
    year_ago = now_ns - 365 * 86400 * 10**9
    replayed = Envelope("gso", "b", 0, year_ago, {"t": 1.0}, {"read": year_ago}, origin="replay")
    live = Envelope("gso", "b", 1, now_ns - 10**6, {"t": 1.0}, {"read": now_ns - 10**6})
    before = sample("twinpipe_latency_probe_replayed_records_total")
    for envelope in (replayed, live):
        LatencyProbe.handle(probe, SimpleNamespace(value=encode(envelope), timestamp=now_ns // 10**6), now_ns)
    assert [e.seq for e in recorded] == [1]
    assert sample("twinpipe_latency_probe_replayed_records_total") - before == 1
