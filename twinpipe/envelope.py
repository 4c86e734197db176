"""The one message format that travels board → MQTT → Kafka → InfluxDB (version 1).

    {"v": 1, "device": "nucleo-1", "boot": "18c2f...", "seq": 42, "time_ns": 1732...,
     "values": {"temperature": 24.9}, "trace": {"read": 1732..., "publish": 1732...}}

`boot` changes every time a publisher starts and `seq` counts from 0 within a boot, so a gap in
`seq` under one `boot` is lost data while a new `boot` is a restart. `time_ns` is the event time
(when the frame was read). `trace` holds one wall-clock timestamp (ns) per stage that touched the
message, keyed by the stage's TRACE_* name. `origin` is optional: absent for live readings,
"replay" for readings replayed from a recording (the ingestion stores it as the tag origin=replay
and leaves such readings out of its delay figures). Which device ids and value names are allowed is defined
in `twinpipe.names` (what InfluxDB can store unchanged); a payload breaking a rule is refused with
the rule as its reason.

Compatibility within version 1 (`v`): a producer may add top-level keys without a version bump.
A consumer ignores keys it does not know (the ingestion counts them) and keeps them when it re-encodes
the envelope (`Envelope.extra`), so a newer consumer behind an older bridge still sees them. A change
that an older consumer would misread (a key removed or renamed, a meaning or unit changed, a new key
that must not be ignored) is a new version: `v: 2`, which version-1 consumers dead-letter as
"unsupported envelope version" instead of storing it wrongly. Inside `values` and `trace` every
entry is read, so there is nothing to ignore there.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field

import orjson

from twinpipe.names import (  # noqa: F401  (re-exported: the envelope's rules, defined in names)
    DEVICE_PATTERN,
    NAME_PATTERN,
    PROBE_DEVICE,
    device_problem,
    is_value_name,
    value_name_problem,
)

VERSION = 1
MAX_PAYLOAD_BYTES = 65536

TRACE_READ = "read"
TRACE_PUBLISH = "publish"
TRACE_BRIDGE = "bridge"

BOOT_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # printable: it is stored as a string field
KNOWN_KEYS = frozenset({"v", "device", "boot", "seq", "time_ns", "values", "trace", "origin"})
# `origin`: optional; absent for live readings, "replay" for readings a recording replayed
# (publisher.source: replay). Stored as the tag origin=<value> only when present.
ORIGIN_REPLAY = "replay"
ORIGINS = frozenset({ORIGIN_REPLAY})
_INT64_MAX = 2**63 - 1


class EnvelopeError(ValueError):
    """A payload that is not a valid envelope; `reason` says why in one line, `kind` classifies it
    for metrics: too_large, not_json, version or invalid."""

    def __init__(self, reason: str, kind: str = "invalid") -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)


@dataclass(slots=True)
class Envelope:
    device: str
    boot: str
    seq: int
    time_ns: int
    values: dict[str, float]
    trace: dict[str, int] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)  # top-level keys this version does not know
    origin: str | None = None  # None = live; one of ORIGINS otherwise

    def to_dict(self) -> dict:
        data = {
            **self.extra,
            "v": VERSION,
            "device": self.device,
            "boot": self.boot,
            "seq": self.seq,
            "time_ns": self.time_ns,
            "values": self.values,
            "trace": self.trace,
        }
        if self.origin is not None:
            data["origin"] = self.origin
        return data


def new_boot_id() -> str:
    """Sortable by start time, unique across restarts and hosts."""
    return f"{time.time_ns():x}-{os.urandom(3).hex()}"


def encode(envelope: Envelope) -> bytes:
    """Compact JSON (orjson: the bridge encodes every message, and the standard library took 5 % of
    its CPU). orjson would write NaN as null, so non-finite values are refused here, as JSON does."""
    if not all(map(math.isfinite, envelope.values.values())):
        raise ValueError(f"values must be finite numbers, got {envelope.values!r:.80}")
    return orjson.dumps(envelope.to_dict())


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_time(value: object, what: str) -> int:
    if not _is_int(value) or not 0 < value <= _INT64_MAX:
        raise EnvelopeError(f"{what} must be a positive 64-bit integer of nanoseconds, got {value!r:.40}")
    return value


def decode(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Envelope:
    """Parse and validate a payload; raises EnvelopeError naming the first problem."""
    if len(payload) > max_bytes:
        raise EnvelopeError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}", "too_large")
    try:
        data = orjson.loads(payload)  # strict JSON: NaN, Infinity and numbers beyond a double fail here
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}", "not_json") from None
    if not isinstance(data, dict):
        raise EnvelopeError(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if type(version) is not int or version != VERSION:  # JSON true == 1 in Python, yet no version
        raise EnvelopeError(f"unsupported envelope version {version!r:.20}, expected {VERSION}", "version")
    extra = {} if KNOWN_KEYS.issuperset(data) else {key: data[key] for key in data.keys() - KNOWN_KEYS}

    device = data.get("device")
    if not isinstance(device, str):
        raise EnvelopeError(f"device must be a string matching {DEVICE_PATTERN.pattern}, got {device!r:.80}")
    problem = device_problem(device)
    if problem:
        raise EnvelopeError(problem)
    boot = data.get("boot")
    if not isinstance(boot, str) or not BOOT_PATTERN.fullmatch(boot):
        raise EnvelopeError(f"boot must match {BOOT_PATTERN.pattern}, got {boot!r:.80}")
    seq = data.get("seq")
    if not _is_int(seq) or not 0 <= seq <= _INT64_MAX:
        raise EnvelopeError(f"seq must be a non-negative 64-bit integer, got {seq!r:.40}")
    time_ns = _check_time(data.get("time_ns"), "time_ns")
    values = data.get("values")
    if not isinstance(values, dict) or not values:
        raise EnvelopeError("values must be a non-empty object of name → number")
    for name, value in values.items():
        problem = value_name_problem(name)
        if problem:
            raise EnvelopeError(problem)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise EnvelopeError(f"value {name} must be a number, got {value!r:.40}")
        if _finite_float(value) is None:
            raise EnvelopeError(f"value {name} is out of range: {str(value):.40}")
    trace = data.get("trace", {})
    if not isinstance(trace, dict):
        raise EnvelopeError("trace must be an object of stage → ns timestamp")
    for stage, stamp in trace.items():
        if not NAME_PATTERN.fullmatch(stage):
            raise EnvelopeError(f"trace stage name {stage!r:.80} is not allowed")
        _check_time(stamp, f"trace.{stage}")
    origin = data.get("origin")
    if origin is not None and (not isinstance(origin, str) or origin not in ORIGINS):
        raise EnvelopeError(f"origin must be one of {sorted(ORIGINS)} or absent, got {origin!r:.40}")
    return Envelope(
        device, boot, seq, time_ns, {k: float(v) for k, v in values.items()}, trace, extra, origin
    )


def _finite_float(value: int | float) -> float | None:
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
