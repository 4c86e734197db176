"""`publisher:` — the publisher stage: its board (serial port and frame format) or simulator, and sending."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from twinpipe.config.bridge import DeviceTopic
from twinpipe.config.common import DeviceId, Positive, Section, ValueName, placeholders
from twinpipe.config.replay import ReplayConfig
from twinpipe.names import device_problem

NUCLEO_FIELDS = [
    "ambient_temperature",
    "ambient_humidity",
    "wall1_temperature",
    "wall1_humidity",
    "wall2_temperature",
    "wall2_humidity",
]


# frame.checksum → size in bytes (the layout's last item must be an unsigned integer of this size).
CHECKSUM_SIZES = {"crc16-xmodem": 2, "crc16-ccitt-false": 2, "crc32": 4, "sum8": 1, "xor8": 1}


class FrameConfig(Section):
    format: Literal["binary", "json", "csv", "kv"] = "binary"
    fields: list[ValueName] = NUCLEO_FIELDS
    csv_delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    max_line_bytes: Annotated[int, Field(ge=16)] = 4096
    sync_hex: str = "00000000"
    layout: str = ">6h"
    scale: Annotated[list[float], BeforeValidator(lambda v: v if isinstance(v, list) else [v])] = [0.01]
    checksum: Literal["crc16-xmodem", "crc16-ccitt-false", "crc32", "sum8", "xor8"] | None = None
    checksum_covers: Literal["values", "frame"] = "values"

    @field_validator("sync_hex")
    @classmethod
    def _hex(cls, value: str) -> str:
        try:
            if not bytes.fromhex(value):
                raise ValueError
        except ValueError:
            raise ValueError("expected a non-empty hex string such as '00000000'") from None
        return value

    @field_validator("layout")
    @classmethod
    def _struct(cls, value: str) -> str:
        try:
            struct.calcsize(value)
        except struct.error as exc:
            raise ValueError(f"not a struct layout ({exc})") from None
        if value[:1] not in "<>!=":
            raise ValueError("must start with a byte order: '>' (big-endian) or '<' (little-endian)")
        return value

    def sync(self) -> bytes:
        return bytes.fromhex(self.sync_hex)

    def scales(self) -> list[float]:
        """One factor per field (a single configured factor applies to all)."""
        return self.scale * len(self.fields) if len(self.scale) == 1 else self.scale

    @model_validator(mode="after")
    def _binary_shape(self) -> FrameConfig:
        if self.format == "binary":
            count = len(struct.unpack(self.layout, bytes(struct.calcsize(self.layout))))
            values = count - (self.checksum is not None)
            if values != len(self.fields):
                raise ValueError(
                    f"layout {self.layout!r} holds {values} values"
                    + (" and the checksum" if self.checksum else "")
                    + f" but fields lists {len(self.fields)}"
                )
            if len(self.scale) not in (1, values):
                raise ValueError(f"scale must be one number or {values} numbers")
            if self.checksum is not None:
                code, size = self.layout[-1], CHECKSUM_SIZES[self.checksum]
                if code not in "BHIQL" or struct.calcsize(self.layout[0] + code) != size:
                    wanted = {1: "B", 2: "H", 4: "I"}[size]
                    raise ValueError(
                        f"checksum: {self.checksum} is a {size}-byte unsigned value, so the layout must end "
                        f"with {wanted!r} (got {self.layout!r})"
                    )
        elif self.checksum is not None:
            raise ValueError("checksum: only binary frames carry a checksum")
        if self.format == "csv" and not self.fields:
            raise ValueError("csv frames need the fields list")
        return self


class SerialConfig(Section):
    device_id: DeviceId = "nucleo-1"
    port: str = "/dev/ttyACM0"
    baudrate: Annotated[int, Field(gt=0)] = 38400
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1
    read_timeout_s: Positive = 0.2
    reconnect_max_s: Positive = 10.0
    frame: FrameConfig = FrameConfig()


class SensorModel(Section):
    mean: float
    stddev: Annotated[float, Field(ge=0)]
    drift: Annotated[float, Field(ge=0)] = 0.0


DEFAULT_SENSORS = {
    "temperature": SensorModel(mean=25.0, stddev=2.0, drift=0.05),
    "humidity": SensorModel(mean=60.0, stddev=3.0, drift=0.05),
    "pressure": SensorModel(mean=1013.0, stddev=2.0, drift=0.02),
}


class Ramp(Section):
    """Drive one simulated sensor over a level and back: an offset added to its signal, rising
    linearly from 0 to `by` over `up_s`, held for `hold_s`, falling back to 0 over `down_s`,
    starting `start_s` after the first reading (times in s of readings at rate_hz)."""

    sensor: ValueName
    by: float
    start_s: Annotated[float, Field(ge=0)] = 0.0
    up_s: Annotated[float, Field(ge=0)] = 10.0
    hold_s: Annotated[float, Field(ge=0)] = 10.0
    down_s: Annotated[float, Field(ge=0)] = 10.0

    def offset(self, elapsed_s: float) -> float:
        """The offset `elapsed_s` after the first reading (a trapezoid; 0 before and after)."""
        t = elapsed_s - self.start_s
        if t < 0:
            return 0.0
        if t < self.up_s:
            return self.by * t / self.up_s
        t -= self.up_s
        if t <= self.hold_s:
            return self.by
        t -= self.hold_s
        if t < self.down_s:
            return self.by * (1 - t / self.down_s)
        return 0.0


class SimulatorConfig(Section):
    # `heater` on (a command): temperatures rise by heater_rise_per_s up to heater_max_rise (Cel),
    # and fall back at the same rate once it is off.
    heater_rise_per_s: Annotated[float, Field(ge=0)] = 0.05
    heater_max_rise: Annotated[float, Field(ge=0)] = 10.0
    devices: Annotated[int, Field(ge=1, le=10000)] = 1
    device_prefix: DeviceId = "sim"
    rate_hz: Annotated[float, Field(gt=0, le=100000)] = 1.0
    outlier_probability: Annotated[float, Field(ge=0, le=1)] = 0.001
    outlier_scale: Annotated[float, Field(ge=0)] = 6.0
    seed: int | None = None
    sensors: dict[ValueName, SensorModel] = Field(default_factory=lambda: dict(DEFAULT_SENSORS), min_length=1)
    ramp: Ramp | None = None  # e.g. {sensor: temperature, by: 15, start_s: 5}: over a threshold and back

    @model_validator(mode="after")
    def _ramp_sensor(self) -> SimulatorConfig:
        if self.ramp is not None and self.ramp.sensor not in self.sensors:
            raise ValueError(f"ramp.sensor: {self.ramp.sensor!r} is not in sensors {sorted(self.sensors)}")
        return self

    @model_validator(mode="after")
    def _device_ids_valid(self) -> SimulatorConfig:
        problem = device_problem(f"{self.device_prefix}-{self.devices}", allow_probe=False)
        if problem:
            raise ValueError(f"device_prefix makes device ids that are not allowed: {problem}")
        return self


def simulated_device_ids(config: SimulatorConfig) -> list[str]:
    """The simulated boards' device ids: <device_prefix>-1 ... -<devices>."""
    return [f"{config.device_prefix}-{i + 1}" for i in range(config.devices)]


DEFAULT_ACK_PATTERN = r"^ACK (?P<id>\S+) (?P<name>\w+) (?P<value>\S+)$"


class CommandsConfig(Section):
    """`publisher.commands`: commands from MQTT to the board, and the board's acknowledgements."""

    enabled: bool = False
    topic_template: DeviceTopic = "twin/{device}/command"
    # Events go to the command's MQTT 5 Response Topic; this one when a command carries none.
    events_topic_template: DeviceTopic = "twin/{device}/command/events"
    client_id: str | None = None  # null = twinpipe-commands-<serial.device_id or simulator.device_prefix>
    session_expiry_s: Annotated[int, Field(ge=0, le=4294967295)] = 86400
    format: Literal["line"] = "line"
    line_template: str = "SET {id} {name} {value}\n"
    ack_pattern: str = DEFAULT_ACK_PATTERN
    ack_start: Annotated[str, Field(min_length=1, max_length=16)] = "ACK "
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    max_waiting: Annotated[int, Field(ge=1, le=65535)] = 100

    @field_validator("line_template")
    @classmethod
    def _line(cls, value: str) -> str:
        if placeholders(value) != {"id", "name", "value"}:
            raise ValueError(
                "expected a line with the placeholders {id}, {name} and {value}, "
                "e.g. SET {id} {name} {value}\\n"
            )
        if not value.endswith("\n") or "\n" in value[:-1]:
            raise ValueError("expected one line ending in a newline (\\n)")
        return value

    @field_validator("ack_pattern")
    @classmethod
    def _ack(cls, value: str) -> str:
        try:
            groups = set(re.compile(value).groupindex)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        if not {"id", "name", "value"} <= groups:
            raise ValueError("expected a regular expression with the named groups id, name and value")
        return value


class PublisherConfig(Section):
    source: Literal["simulator", "serial", "replay"] = "simulator"
    topic_template: str = "twin/{device}/telemetry"
    client_id: str | None = None
    buffer_size: Annotated[int, Field(ge=1)] = 100_000
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100
    shutdown_timeout_s: Positive = 10.0
    spool_dir: Path | None = None
    # MQTT caps a packet at 268,435,455 bytes; 65536 matches bridge.max_payload_bytes' default.
    max_payload_bytes: Annotated[int, Field(ge=256, le=268_435_455)] = 65536
    # ≥ the broker's autosave_interval plus margin (compose: 10 s); 0 = keep nothing once acknowledged.
    resend_window_s: Annotated[float, Field(ge=0)] = 15.0
    serial: SerialConfig = SerialConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    replay: ReplayConfig = ReplayConfig()
    commands: CommandsConfig = CommandsConfig()

    @model_validator(mode="after")
    def _replay_needs_a_file(self) -> PublisherConfig:
        if self.source == "replay" and self.replay.path is None:
            raise ValueError("source: replay needs publisher.replay.path (the recording to replay)")
        return self

    @field_validator("topic_template")
    @classmethod
    def _topic(cls, value: str) -> str:
        if placeholders(value) - {"device"}:
            raise ValueError("only the placeholder {device} is allowed")
        if "+" in value or "#" in value or not value:
            raise ValueError("an MQTT topic to publish to cannot be empty or contain wildcards")
        return value
