"""Envelope → InfluxDB line protocol. Pure, so the mapping is tested without a database.

One point per envelope: tags identify the series (device + configured tags), fields are the sensor
values plus seq (integer) and boot (string), the timestamp is the event time in ns. A re-delivered
envelope produces the identical point, which InfluxDB overwrites: at-least-once in, exactly-once stored.
"""

from __future__ import annotations

from influxdb_client import Point, WritePrecision

from twinpipe.envelope import Envelope


class PointMapper:
    def __init__(
        self, measurement: str, tags: dict[str, str], device_tags: dict[str, dict[str, str]]
    ) -> None:
        self._measurement = measurement
        self._tags = tags
        self._device_tags = device_tags

    def to_line(self, envelope: Envelope) -> str:
        point = Point(self._measurement).tag("device", envelope.device)
        for key, value in (self._tags | self._device_tags.get(envelope.device, {})).items():
            point.tag(key, value)
        for name, value in envelope.values.items():
            point.field(name, float(value))
        point.field("seq", envelope.seq).field("boot", envelope.boot)
        return point.time(envelope.time_ns, WritePrecision.NS).to_line_protocol()
