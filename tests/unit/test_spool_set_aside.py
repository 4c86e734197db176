"""The spool's rejected file: readings the broker will never take are kept on disk with their reason,
written with the spool's periodic flush (no write per reading), and never sent again."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.spool import Spool
from twinpipe.envelope import Envelope, decode


def reading(seq: int, values: int = 1) -> Envelope:
    return Envelope(
        "d1", "boot-a", seq, 1_700_000_000_000_000_000 + seq, {f"k{i}": float(i) for i in range(values)}
    )


def test_a_set_aside_reading_is_written_with_the_next_flush_and_not_recovered(tmp_path: Path) -> None:
    spool = Spool(tmp_path, flush_interval_s=60)
    segment = spool.append(reading(0, values=150))
    where = spool.set_aside(reading(0, values=150), "too_large", "PUBLISH of 2400 bytes exceeds 2048")
    assert str(spool.rejected_path) in where
    assert not spool.rejected_path.exists(), "no write per set-aside reading"
    spool.done(segment)
    spool.flush()
    (line,) = spool.rejected_path.read_text().splitlines()
    entry = json.loads(line)
    assert entry["kind"] == "too_large" and "2048" in entry["reason"]
    assert decode(json.dumps(entry["envelope"]).encode()) == reading(0, values=150)
    assert Spool(tmp_path).recover() == [], "set aside is not sent again by the next start"


@settings(max_examples=30, deadline=None)
@given(kinds=st.lists(st.sampled_from(["too_large", "refused", "connection_lost"]), max_size=20))
def test_every_set_aside_reading_is_kept_once_in_order(tmp_path_factory, kinds: list[str]) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, flush_interval_s=60)
    for seq, kind in enumerate(kinds):
        spool.set_aside(reading(seq), kind, "reason")
        if seq % 7 == 3:
            spool.flush()
    spool.flush()
    lines = spool.rejected_path.read_text().splitlines() if kinds else []
    assert [(json.loads(x)["envelope"]["seq"], json.loads(x)["kind"]) for x in lines] == list(
        enumerate(kinds)
    )
