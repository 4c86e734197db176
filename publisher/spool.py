"""A disk spool for readings the broker has not acknowledged, so that a publisher killed with
SIGKILL (or an OOM kill, or a crash) hands them over on its next start instead of losing them.

Readings are appended in memory and written to the current segment file once per
`flush_interval_s`: by the append that finds the interval over (so the bound holds however the
sender thread is scheduled), or by the sender's `flush_due` when readings stop coming. One write
per interval, never one per reading, so a kill loses at most the readings of the last interval.
Written data sits in the page cache, which survives the process; surviving a power cut would need
fsync, which this does not do. A segment is deleted once each of its readings is done: past the
publisher's re-send window after the broker acknowledged it (publisher.resend_window_s, so a broker
crash after a publisher kill is covered too), set aside, or dropped on buffer overflow (counted).

Readings the broker will never take are appended to `rejected/set-aside.jsonl`, one JSON object per
line: {"kind": ..., "reason": ..., "envelope": {the envelope}}, written with the next flush.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson

from twinpipe.envelope import Envelope, EnvelopeError, decode, encode

log = logging.getLogger("publisher.spool")

FLUSH_INTERVAL_S = 0.02
SEGMENT_READINGS = 1_000  # smaller: less re-sent after a kill; larger: fewer files


class Spool:
    def __init__(self, directory: Path, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._unwritten: list[tuple[int, bytes]] = []  # (segment, line) not yet written
        self._rejected: list[bytes] = []  # set-aside lines not yet written
        self.rejected_path = directory / "rejected" / "set-aside.jsonl"
        self._open: dict[int, int] = {}  # segment → readings not yet done
        self._last_flush = time.monotonic()
        existing = self._segments()
        self._segment = (existing[-1] + 1) if existing else 0
        self._in_segment = 0

    def recover(self) -> list[tuple[Envelope, int]]:
        """Readings an earlier run spooled and never finished, oldest first, each with its segment."""
        recovered = []
        for segment in self._segments():
            if segment >= self._segment:
                continue
            lines = self._path(segment).read_bytes().splitlines()
            envelopes = []
            for line in lines:
                try:
                    envelopes.append(decode(line))
                except EnvelopeError:  # the line being written when the process died
                    log.warning("spool segment %d: skipped an unreadable line (%d bytes)", segment, len(line))
            if envelopes:
                self._open[segment] = len(envelopes)
                recovered += [(envelope, segment) for envelope in envelopes]
            else:
                self._path(segment).unlink()
        if recovered:
            log.info("spool: %d readings from an earlier run will be sent first", len(recovered))
        return recovered

    def append(self, envelope: Envelope) -> int:
        """Spool a reading (written now if the flush interval is over, else later); returns its
        segment for `done`."""
        line = encode(envelope) + b"\n"
        with self._lock:
            if self._in_segment >= SEGMENT_READINGS:
                self._rotate()
            self._unwritten.append((self._segment, line))
            self._in_segment += 1
            self._open[self._segment] = self._open.get(self._segment, 0) + 1
            if time.monotonic() - self._last_flush >= self._flush_interval_s:
                self._write()
            return self._segment

    def set_aside(self, envelope: Envelope, kind: str, reason: str) -> str:
        """Keep a reading the broker will never take in the rejected file (written with the next
        flush); returns where, for the log."""
        line = orjson.dumps({"kind": kind, "reason": reason, "envelope": envelope.to_dict()}) + b"\n"
        with self._lock:
            self._rejected.append(line)
        return f"kept in {self.rejected_path}"

    def flush_due(self) -> None:
        """For the quiet times when no append comes to write what is waiting."""
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        """Write what was appended since the last write: one write per segment touched. Called
        under the lock, so a segment finished meanwhile is not written again after its removal."""
        self._last_flush = time.monotonic()
        by_segment: dict[int, list[bytes]] = {}
        for segment, line in self._unwritten:
            if segment in self._open:
                by_segment.setdefault(segment, []).append(line)
        self._unwritten = []
        if self._rejected:
            self.rejected_path.parent.mkdir(exist_ok=True)
            with open(self.rejected_path, "ab") as handle:
                handle.write(b"".join(self._rejected))
            self._rejected = []
        for segment, lines in by_segment.items():
            with open(self._path(segment), "ab") as handle:
                handle.write(b"".join(lines))

    def done(self, segment: int) -> None:
        """A reading of `segment` is done (past the re-send window, set aside or dropped); the file
        goes once all of them are."""
        with self._lock:
            left = self._open.get(segment, 0) - 1
            if left > 0:
                self._open[segment] = left
                return
            self._open.pop(segment, None)
            if segment != self._segment:
                self._path(segment).unlink(missing_ok=True)

    def _rotate(self) -> None:
        finished = self._segment
        self._segment += 1
        self._in_segment = 0
        if finished not in self._open:
            self._path(finished).unlink(missing_ok=True)

    def _segments(self) -> list[int]:
        return sorted(int(path.stem.split("-")[1]) for path in self._directory.glob("segment-*.jsonl"))

    def _path(self, segment: int) -> Path:
        return self._directory / f"segment-{segment:08d}.jsonl"
