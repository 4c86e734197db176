"""The publisher's disk spool: what is not done survives the process, what is done is removed."""

from __future__ import annotations

import time
from pathlib import Path

import publisher.spool as spool_module
from publisher.spool import Spool
from twinpipe.envelope import Envelope


def reading(seq: int) -> Envelope:
    return Envelope("d1", "boot-a", seq, 1_700_000_000_000_000_000 + seq, {"t": float(seq)})


def test_unfinished_readings_come_back_in_order_after_a_restart(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    segments = [first.append(reading(seq)) for seq in range(5)]
    first.flush()
    first.done(segments[0])
    first.done(segments[1])  # two acknowledged; the process then dies
    recovered = Spool(tmp_path).recover()
    # The segment is still open, so all of it comes back: re-sending the first two is harmless
    # (same point in InfluxDB), losing the other three is not.
    assert [envelope.seq for envelope, _ in recovered] == [0, 1, 2, 3, 4]
    assert recovered[0][0] == reading(0)


def test_nothing_is_written_within_a_flush_interval_and_a_flush_is_one_write(tmp_path: Path) -> None:
    spool = Spool(tmp_path, flush_interval_s=60)
    for seq in range(3):
        spool.append(reading(seq))
    assert not list(tmp_path.iterdir()), "appending within the interval does no I/O"
    spool.flush()
    (segment_file,) = tmp_path.iterdir()
    assert len(segment_file.read_bytes().splitlines()) == 3


def test_the_first_append_after_the_interval_writes_everything_waiting(tmp_path: Path) -> None:
    """So a kill loses at most one interval of readings, whenever the sender thread gets to run."""
    spool = Spool(tmp_path, flush_interval_s=0.05)
    spool.append(reading(0))
    spool.append(reading(1))
    assert not list(tmp_path.iterdir())
    time.sleep(0.06)  # the flush interval passing is the condition under test, not a wait for it
    spool.append(reading(2))
    (segment_file,) = tmp_path.iterdir()
    assert len(segment_file.read_bytes().splitlines()) == 3


def test_finished_segments_are_deleted_and_a_partial_last_line_is_skipped(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_READINGS", 2)
    spool = Spool(tmp_path)
    segments = [spool.append(reading(seq)) for seq in range(5)]  # segments 0,0,1,1,2
    spool.flush()
    assert len(list(tmp_path.iterdir())) == 3
    for segment in segments[:4]:
        spool.done(segment)
    assert [path.name for path in sorted(tmp_path.iterdir())] == ["segment-00000002.jsonl"]
    with open(tmp_path / "segment-00000002.jsonl", "ab") as handle:
        handle.write(b'{"v":1,"device":"d1","bo')  # the process died mid-write
    recovered = Spool(tmp_path).recover()
    assert [envelope.seq for envelope, _ in recovered] == [4]


def test_a_reading_done_before_its_flush_is_never_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path, flush_interval_s=60)
    segment = spool.append(reading(0))
    spool.done(segment)  # acknowledged (or dropped) within the flush interval
    spool.flush()
    assert Spool(tmp_path).recover() == []
