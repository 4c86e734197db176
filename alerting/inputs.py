"""The records the stage reads: telemetry envelopes (twinpipe.envelope) and anomaly events.

An anomaly event (Kafka `predictive.anomaly_topic`, owned by the predictive stage; key = device):

    {"v": 1, "device": str, "datastream": "<device>:<value name>", "value_name": str, "time_ns": int,
     "value": float, "forecast": float, "lower": float, "upper": float, "horizon_s": float,
     "coverage": float, "model": str}
"""

from __future__ import annotations

import math
from typing import NamedTuple

import orjson

from twinpipe.names import device_problem, value_name_problem


class AnomalyEvent(NamedTuple):
    device: str
    value_name: str
    time_ns: int
    value: float


def parse_anomaly(payload: bytes) -> AnomalyEvent:
    """Raises ValueError naming the first problem."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise ValueError("expected a JSON object with v: 1")
    device, value_name = data.get("device"), data.get("value_name")
    if not isinstance(device, str) or device_problem(device, allow_probe=False):
        raise ValueError(f"device: {device!r:.80} is not a device id")
    if not isinstance(value_name, str) or value_name_problem(value_name):
        raise ValueError(f"value_name: {value_name!r:.80} is not a value name")
    time_ns, value = data.get("time_ns"), data.get("value")
    if type(time_ns) is not int:
        raise ValueError(f"time_ns: expected an integer of ns, got {time_ns!r:.40}")
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"value: expected a finite number, got {value!r:.40}")
    return AnomalyEvent(device, value_name, time_ns, float(value))
