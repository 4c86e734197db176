"""Replaying a recording (publisher.source: replay): rows of a CSV or JSON-lines file, published at the
recorded rhythm (or N× faster, or as fast as the pipeline takes) through the normal path.

The pure parts come first and are tested without servers: `csv_rows` / `jsonl_rows` turn lines into
`Row`s or `RowError`s (each with its line number), `checked` applies the device map, the event-time
order and the from/to window, `schedule_s` and `time_shift_ns` give each row its send moment and event
time. `ReplaySource` is the wiring: a thread that paces the rows and hands them to the publisher, which
blocks it while its buffer is full (a replay never drops on overflow).

Time rules (so no recording is read wrongly): a time is ISO 8601 *with* a zone (`2025-01-01T00:00:00Z`,
`...+01:00`; microsecond resolution), or an epoch number when `publisher.replay.time_unit` declares
its unit (s, ms, us or ns). A number without a declared unit, or an ISO time without a zone, is refused
with its line number rather than guessed. Envelopes (what `python -m consumer_display --json` prints)
carry `time_ns`, which needs no unit.
"""

from __future__ import annotations

import csv
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TextIO

import orjson

from twinpipe.config.replay import EPOCH, ReplayConfig
from twinpipe.envelope import EnvelopeError, decode
from twinpipe.names import device_problem, value_name_problem

log = logging.getLogger("publisher.replay")

# Why a row was skipped (the `kind` label of twinpipe_publisher_replay_rows_skipped_total).
ROW_ERROR_KINDS = (
    "bad_csv",
    "bad_time",
    "bad_value",
    "bad_columns",
    "bad_device",
    "bad_json",
    "no_values",
    "time_backwards",
)
UNIT_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # 1-based line of the file (the row's last line for a quoted multi-line CSV row)
    time_ns: int  # recorded event time, ns since the epoch
    device: str
    values: dict[str, float]
    # False for envelopes (consumer_display --json): their order is Kafka's, where a re-sent reading
    # can follow later ones of its device; a board's own rows (CSV, plain JSON) come in time order.
    in_time_order: bool = True


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    kind: str  # one of ROW_ERROR_KINDS
    reason: str


class RecordingError(ValueError):
    """The recording cannot be replayed at all (its header); the message names the key or column."""


# --- pure: parsing ---


# A recorded time later than now by more than this is a typo (2099 for 2025), never replayed: it
# would also move every other row under time_shift end_now (ingestion.max_event_future_s' default).
FUTURE_SLACK_NS = 300 * 1_000_000_000


def parse_time(value: object, unit: str | None, now_ns: int | None = None) -> int:
    """ISO 8601 text with a zone, or an epoch number (int, float or numeric text) in `unit`, → ns.
    Raises ValueError with the reason, also for a time more than 5 min after `now_ns` (default: now)."""
    ns = _recorded_ns(value, unit)
    limit = (time.time_ns() if now_ns is None else now_ns) + FUTURE_SLACK_NS
    if ns > limit:
        raise ValueError(f"time {value!r:.40} is in the future (a typo?); a recording holds past readings")
    return ns


def _recorded_ns(value: object, unit: str | None) -> int:
    if isinstance(value, bool):
        raise ValueError(f"time {value!r} is not a time")
    if isinstance(value, int | float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            return _iso_ns(text)
    else:
        raise ValueError(f"time {value!r:.40} is neither ISO 8601 text nor a number")
    if unit is None:
        raise ValueError(
            f"time {value!r:.40} is a number but publisher.replay.time_unit is not set (s, ms, us or ns);"
            " an epoch number is not guessed"
        )
    if not number.is_finite():
        raise ValueError(f"time {value!r:.40} is not finite")
    ns = int(number * UNIT_NS[unit])
    if not 0 < ns <= _INT64_MAX:
        raise ValueError(f"time {value!r:.40} {unit} is outside 1970..2262")
    return ns


def _iso_ns(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"time {text!r:.40} is not ISO 8601 (e.g. 2025-01-01T00:00:00Z) nor a number"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time {text!r:.40} has no zone (add Z or an offset such as +01:00); not guessed")
    ns = (moment - EPOCH) // timedelta(microseconds=1) * 1000
    if not 0 < ns <= _INT64_MAX:
        raise ValueError(f"time {text!r:.40} is outside 1970..2262")
    return ns


def parse_value(name: str, value: object) -> float | None:
    """A finite number, None for an empty cell / JSON null (the value is missing in that row).
    Raises ValueError for anything else (text, NaN, infinity, booleans)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"value {name} = {value!r:.40} is not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"value {name} = {value!r:.40} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"value {name} = {value!r:.40} is not a finite number")
    return number


def _values(line: int, pairs: Iterable[tuple[str, object]]) -> dict[str, float] | RowError:
    values = {}
    for name, raw in pairs:
        try:
            number = parse_value(name, raw)
        except ValueError as exc:
            return RowError(line, "bad_value", str(exc))
        if number is not None:
            values[name] = number
    return values or RowError(line, "no_values", "no value in this row (every value cell empty)")


def csv_header(header: list[str], config: ReplayConfig) -> tuple[int, int | None, list[tuple[int, str]]]:
    """The header → (time column index, device column index or None, [(index, value name)]).
    Raises RecordingError naming the key or the column."""
    if config.time_column not in header:
        raise RecordingError(
            f"publisher.replay.time_column: {config.time_column!r} is not a column of {header!r:.200}"
        )
    if len(set(header)) != len(header):
        raise RecordingError(f"the header names a column twice: {header!r:.200}")
    time_index = header.index(config.time_column)
    device_index = header.index(config.device_column) if config.device_column in header else None
    if config.columns is not None:
        missing = [name for name in config.columns if name not in header]
        if missing:
            raise RecordingError(f"publisher.replay.columns: {missing} are not columns of {header!r:.200}")
        names = list(config.columns)
    else:
        names = [name for name in header if name not in (config.time_column, config.device_column)]
        for name in names:
            problem = value_name_problem(name)
            if problem:
                raise RecordingError(
                    f"column {name!r:.80} cannot be a value name ({problem}); rename it in the file or"
                    " list the value columns in publisher.replay.columns"
                )
    if not names:
        raise RecordingError(f"no value columns in the header {header!r:.200}")
    return time_index, device_index, [(header.index(name), name) for name in names]


def csv_rows(lines: Iterable[str], config: ReplayConfig) -> Iterator[Row | RowError]:
    """CSV with a header line: the time column, an optional device column, one column per value.
    Blank lines are skipped; a row of another length than the header is an error."""
    reader = csv.reader(lines, delimiter=config.csv_delimiter)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise RecordingError(f"the header line cannot be read as CSV: {exc}") from None
    if header is None:
        raise RecordingError("the recording is empty (no header line)")
    time_index, device_index, columns = csv_header([name.strip() for name in header], config)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit(); the next line reads on
            yield RowError(reader.line_num, "bad_csv", f"not readable as CSV: {exc}")
            continue
        line = reader.line_num
        if not cells:
            continue
        if len(cells) != len(header):
            yield RowError(line, "bad_columns", f"{len(cells)} columns, the header has {len(header)}")
            continue
        try:
            time_ns = parse_time(cells[time_index], config.time_unit)
        except ValueError as exc:
            yield RowError(line, "bad_time", str(exc))
            continue
        device = cells[device_index].strip() if device_index is not None else ""
        values = _values(line, ((name, cells[index]) for index, name in columns))
        yield values if isinstance(values, RowError) else Row(line, time_ns, device or config.device, values)


def jsonl_rows(lines: Iterable[str], config: ReplayConfig) -> Iterator[Row | RowError]:
    """One JSON object per line: a twinpipe envelope (`"v": 1`, as consumer_display --json prints it),
    or {"<time_column>": ..., "device": ..., "values": {...}}, or the values as top-level keys."""
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield RowError(line, "bad_json", f"not JSON: {exc}")
            continue
        if not isinstance(data, dict):
            yield RowError(line, "bad_json", f"expected a JSON object, got {type(data).__name__}")
            continue
        if "v" in data:
            try:
                envelope = decode(text.encode())
            except EnvelopeError as exc:
                yield RowError(line, "bad_json", f"not a valid envelope: {exc.reason}")
                continue
            values = envelope.values
            if config.columns is not None:
                values = {name: values[name] for name in config.columns if name in values}
                if not values:
                    yield RowError(line, "no_values", f"none of publisher.replay.columns {config.columns}")
                    continue
            yield Row(line, envelope.time_ns, envelope.device, values, in_time_order=False)
            continue
        if config.time_column not in data:
            yield RowError(line, "bad_time", f"no {config.time_column!r} key (publisher.replay.time_column)")
            continue
        try:
            time_ns = parse_time(data[config.time_column], config.time_unit)
        except ValueError as exc:
            yield RowError(line, "bad_time", str(exc))
            continue
        device = data.get(config.device_column)
        if device is not None and not isinstance(device, str):
            yield RowError(line, "bad_device", f"device {device!r:.40} is not a string")
            continue
        if "values" in data:
            pairs = data["values"].items() if isinstance(data["values"], dict) else None
        else:
            skip = {config.time_column, config.device_column}
            pairs = [(k, v) for k, v in data.items() if k not in skip]
        if pairs is None:
            yield RowError(line, "bad_value", "values must be an object of name → number")
            continue
        if config.columns is not None:
            pairs = [(k, v) for k, v in pairs if k in config.columns]
        bad_name = next((problem for name, _ in pairs if (problem := value_name_problem(name))), None)
        if bad_name:
            yield RowError(line, "bad_value", bad_name)
            continue
        values = _values(line, pairs)
        yield values if isinstance(values, RowError) else Row(line, time_ns, device or config.device, values)


def read_rows(stream: TextIO, config: ReplayConfig) -> Iterator[Row | RowError]:
    return (csv_rows if config.resolved_format() == "csv" else jsonl_rows)(stream, config)


def checked(
    items: Iterable[Row | RowError],
    device_map: dict[str, str],
    from_ns: int | None = None,
    to_ns: int | None = None,
) -> Iterator[Row | RowError]:
    """Renames devices (`device_map`, recorded id → new id; the result must be a valid device id),
    refuses a row not after its device's previous row (time going backwards, or the same time twice:
    InfluxDB keeps one point per series and time), and keeps the rows inside [from_ns, to_ns] (both
    inclusive; rows outside are not errors and are left out silently).

    Rows of *different* devices may be out of order: a recording of several Kafka partitions
    (`consumer_display --json`) interleaves devices that way. So may a device's envelopes (rows not
    `in_time_order`: a reading re-sent after a failed produce lands behind later ones); of those only
    a time already seen for the device (within the last RECENT_TIMES rows) is refused, the second
    copy of an at-least-once delivery. The pacing sends a late row as soon as it is read."""
    last_by_device: dict[str, int] = {}
    recent = _RecentTimes()
    for item in items:
        if isinstance(item, RowError):
            yield item
            continue
        device = device_map.get(item.device, item.device)
        problem = device_problem(device, allow_probe=False)
        if problem:
            yield RowError(item.line, "bad_device", problem)
            continue
        last_ns = last_by_device.get(device, 0)
        if item.in_time_order and item.time_ns <= last_ns:
            yield RowError(
                item.line,
                "time_backwards",
                f"time {item.time_ns} ns is not after device {device}'s previous row (one point per time)",
            )
            continue
        if not item.in_time_order and item.time_ns <= last_ns and recent.seen(device, item.time_ns):
            yield RowError(
                item.line,
                "time_backwards",
                f"device {device} has a row at time {item.time_ns} ns already (a second copy; one point per"
                " time)",
            )
            continue
        recent.add(device, item.time_ns)
        last_by_device[device] = max(last_ns, item.time_ns)
        if (from_ns is not None and item.time_ns < from_ns) or (to_ns is not None and item.time_ns > to_ns):
            continue
        yield (
            item
            if device == item.device
            else Row(item.line, item.time_ns, device, item.values, item.in_time_order)
        )


RECENT_TIMES = 100_000  # per generation; two are kept


class _RecentTimes:
    """The (device, time) of the last 100,000 to 200,000 rows, bounded by two dict generations."""

    def __init__(self, size: int = RECENT_TIMES) -> None:
        self._size = size
        self._current: set[tuple[str, int]] = set()
        self._previous: set[tuple[str, int]] = set()

    def seen(self, device: str, time_ns: int) -> bool:
        key = (device, time_ns)
        return key in self._current or key in self._previous

    def add(self, device: str, time_ns: int) -> None:
        if len(self._current) >= self._size:
            self._previous, self._current = self._current, set()
        self._current.add((device, time_ns))


# --- pure: pacing and time shift ---


def schedule_s(time_ns: int, first_ns: int, speed: float) -> float:
    """Seconds after the pass's start at which a row recorded at `time_ns` is sent: (t_i - t_0) / speed,
    0 for speed 0 (as fast as the pipeline takes). Measured from one start, so errors do not add up."""
    return 0.0 if speed == 0 else (time_ns - first_ns) / 1e9 / speed


def time_shift_ns(mode: str, first_ns: int, last_ns: int, start_wall_ns: int, speed: float) -> int:
    """What to add to every recorded time of a pass. keep: 0. end_now: the last row's event time is
    the wall-clock moment its send is scheduled (start + (t_last - t_0)/speed; the start itself at
    speed 0), so at speed 1 every event time is its send time and at any speed no event time is in
    the future when it is sent. Slower than recorded (0 < speed < 1) that needs the *first* row at
    the start instead: the recorded spacing is then shorter than the sending's."""
    if mode == "keep":
        return 0
    if 0 < speed < 1:
        return start_wall_ns - first_ns
    return start_wall_ns + round(schedule_s(last_ns, first_ns, speed) * 1e9) - last_ns


@dataclass
class Span:
    """What a pre-pass over the recording found: the rows to replay and their first and last times."""

    rows: int = 0
    first_ns: int = 0
    last_ns: int = 0


def span(items: Iterable[Row | RowError]) -> Span:
    """The rows, the earliest and the latest time (devices may interleave out of order)."""
    found = Span()
    for item in items:
        if isinstance(item, Row):
            if not found.rows:
                found.first_ns = found.last_ns = item.time_ns
            found.rows += 1
            found.first_ns = min(found.first_ns, item.time_ns)
            found.last_ns = max(found.last_ns, item.time_ns)
    return found


# --- wiring ---

Emit = Callable[
    [str, dict[str, float], int], bool
]  # device, values, event time (ns) → taken (False: stopping)
OnSkip = Callable[[RowError], None]


class ReplaySource:
    """Replays `config.path` once (or forever with `loop`); `finished` is set when it ended by itself."""

    def __init__(self, config: ReplayConfig, emit: Emit, on_skip: OnSkip) -> None:
        self._config = config
        self._emit = emit
        self._on_skip = on_skip
        self.finished = threading.Event()
        self.rows = 0  # rows published (handed to the buffer)
        self.passes = 0
        self.skipped: Counter[str] = Counter()
        self.skipped_lines: list[int] = []  # the first SKIPPED_LINES_KEPT, for the summary
        with self._open() as stream:  # fail at start, with the key, on a file that cannot be replayed
            self._span = span(self._rows(stream))
        if not self._span.rows:
            raise RecordingError(
                f"publisher.replay.path: {self._config.path} has no row to replay (from/to?)"
            )

    def _open(self) -> TextIO:
        try:
            # Undecodable bytes become U+FFFD: that row then fails its time, value or device check
            # and is reported with its line, rather than ending the replay.
            return open(self._config.path, encoding="utf-8-sig", errors="replace", newline="")  # noqa: SIM115
        except OSError as exc:
            raise RecordingError(f"publisher.replay.path: cannot open {self._config.path}: {exc}") from None

    def _rows(self, stream: TextIO) -> Iterator[Row | RowError]:
        config = self._config
        return checked(read_rows(stream, config), config.device_map, config.from_ns(), config.to_ns())

    def run(self, stop: threading.Event) -> None:
        config = self._config
        log.info(
            "replaying %s: %d rows from %s to %s at speed %s (%s), time_shift %s%s",
            config.path,
            self._span.rows,
            _iso(self._span.first_ns),
            _iso(self._span.last_ns),
            config.speed,
            "as fast as the pipeline takes" if config.speed == 0 else "× the recorded rhythm",
            config.time_shift,
            ", looping" if config.loop else "",
        )
        progress = Progress(self._span.rows, config.progress_interval_s)
        start = time.monotonic()
        try:
            while not stop.is_set():
                ended = self._pass(stop, start, progress)
                if not ended or not config.loop:
                    break
                # The next pass starts one mean row interval after this one's last row.
                rows = max(self._span.rows - 1, 1)
                start += schedule_s(self._span.last_ns, self._span.first_ns, config.speed) + schedule_s(
                    self._span.first_ns + (self._span.last_ns - self._span.first_ns) // rows,
                    self._span.first_ns,
                    config.speed,
                )
                progress.restart()
        finally:
            progress.close()
        if not stop.is_set():
            log.info("replay reached the end of %s; delivering what is buffered, then exiting", config.path)
            self.finished.set()

    def _pass(self, stop: threading.Event, start: float, progress: Progress) -> bool:
        """One pass over the file; False when stopped."""
        config = self._config
        first_ns = self._span.first_ns
        shift = time_shift_ns(
            config.time_shift,
            first_ns,
            self._span.last_ns,
            time.time_ns() + round((start - time.monotonic()) * 1e9),
            config.speed,
        )
        self.passes += 1
        with self._open() as stream:
            for item in self._rows(stream):
                if isinstance(item, RowError):
                    if self.passes == 1:
                        self.skipped[item.kind] += 1
                        if len(self.skipped_lines) < SKIPPED_LINES_KEPT:
                            self.skipped_lines.append(item.line)
                        self._on_skip(item)
                        progress.skip()
                    continue
                due = start + schedule_s(item.time_ns, first_ns, config.speed)
                while (wait := due - time.monotonic()) > 0:
                    if stop.wait(wait):
                        return False
                if not self._emit(item.device, item.values, item.time_ns + shift):
                    return False
                self.rows += 1
                progress.row()
                if stop.is_set():
                    return False
        return True

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.skipped.items()))
        lines = ", ".join(map(str, self.skipped_lines)) + (" …" if skipped > len(self.skipped_lines) else "")
        return (
            f"replay of {self._config.path}: {self.rows} rows handed to the publisher in "
            f"{self.passes} pass(es), "
            f"{skipped} skipped" + (f" ({kinds}; lines {lines})" if skipped else "")
        )


SKIPPED_LINES_KEPT = 20


def _iso(ns: int) -> str:
    return (EPOCH + timedelta(microseconds=ns // 1000)).isoformat()


class Progress:
    """A tqdm bar when stderr is a terminal, otherwise a log line every `interval_s`."""

    def __init__(self, total: int, interval_s: float, interactive: bool | None = None) -> None:
        self._total = total
        self._interval_s = interval_s
        self._done = 0
        self._skipped = 0
        self._next_log = time.monotonic() + interval_s
        self._bar = None
        if sys.stderr.isatty() if interactive is None else interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="row", desc="replay", dynamic_ncols=True)

    def row(self) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(1)
        elif time.monotonic() >= self._next_log:
            self._next_log = time.monotonic() + self._interval_s
            log.info(
                "replay progress: %d/%d rows (%.0f %%), %d skipped",
                self._done,
                self._total,
                100.0 * self._done / max(self._total, 1),
                self._skipped,
            )

    def skip(self) -> None:
        self._skipped += 1

    def restart(self) -> None:
        self._done = 0
        if self._bar is not None:
            self._bar.reset(total=self._total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
