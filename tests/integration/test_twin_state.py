"""The twin state stage (python -m twin_state) on the session's real Kafka-protocol broker and InfluxDB.

The tests play the bridge and the publisher by producing their command events into Kafka directly,
so that duplicates, late and malformed evidence can be sent on purpose; tests/integration/test_loop.py
runs the real loop (bridge, publisher, board) through the stage, kill -9 of it included. Everything else is
real: the stage's HTTP API over uvicorn, Kafka topics, the consumer group, the compacted state topic it
rebuilds from, InfluxDB, and `python -m twinpipe command` as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from devstack.process import free_port, http_get, poll
from devstack.stages import StageProcess
from tests.harness import Pipeline
from twinpipe.envelope import Envelope, encode

TOKEN = "test-token-0123456789abcdef"


@dataclass
class TwinState:
    pipeline: Pipeline
    override: dict[str, Any]
    url: str
    health_port: int
    process: StageProcess

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert status in (200, 202), (method, path, status, answer)
        return answer

    def command(self, command_id: str, until: str, timeout_s: float = 20) -> dict[str, Any]:
        return poll(
            lambda: self.ok("GET", f"/commands/{command_id}?wait_s=2&after=queued"),
            lambda entry: entry["state"] == until,
            timeout_s,
            f"command {command_id} {until}",
        )

    def metric(self, name: str) -> float:
        _, text = http_get(f"http://127.0.0.1:{self.health_port}/metrics")
        lines = [
            line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")
        ]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def start(pipeline: Pipeline, override: dict[str, Any] | None = None, token: str | None = TOKEN) -> TwinState:
    port, health = free_port(), free_port()
    settings = override or {
        "twin_state": {
            "port": port,
            "host": "127.0.0.1",
            "command_topic": f"cmd-{pipeline.id}",
            "event_topic": f"evt-{pipeline.id}",
            "state_topic": f"state-{pipeline.id}",
            "group_id": f"twin-{pipeline.id}",
            "expiry_check_s": 0.2,
        },
    }
    settings["twin_state"]["port"] = port
    process = pipeline.stage(
        "twin_state",
        {**settings, "health": {"port": health}},
        env={"TWINPIPE__TWIN_STATE__TOKEN": token} if token else {},
    )
    poll(
        lambda: http_get(f"http://127.0.0.1:{health}/readyz"),
        lambda answer: answer[0] == 200 or not process.running(),
        60,
        "twin_state ready",
    )
    assert process.running(), process.log()
    return TwinState(pipeline, settings, f"http://127.0.0.1:{port}", health, process)


class Devices:
    """Plays the bridge and the publisher: command events (and readings) produced into Kafka."""

    def __init__(self, pipeline: Pipeline, event_topic: str) -> None:
        self.pipeline = pipeline
        self.event_topic = event_topic
        self.producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")

    def event(self, command: dict[str, Any], state: str, by: str, **extra: Any) -> None:
        document = {"v": 1, "id": command["id"], "device": command["device"], "state": state}
        document |= {"time_ns": time.time_ns(), "by": by, "detail": "", **extra}
        self.producer.send(
            self.event_topic, key=command["device"].encode(), value=json.dumps(document).encode()
        )
        self.producer.flush()

    def acknowledge(self, command: dict[str, Any], reported: dict[str, Any] | None = None) -> None:
        self.event(command, "acknowledged", "publisher", reported=reported or command["settings"])

    def reading(self, device: str, seq: int, values: dict[str, float]) -> None:
        envelope = Envelope(device, "boot-1", seq, time.time_ns(), values)
        self.producer.send(self.pipeline.telemetry_topic, key=device.encode(), value=encode(envelope))
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


def commands_in_kafka(pipeline: Pipeline, topic: str, expected: int) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in pipeline.kafka_records(topic, expected)]


def test_desired_to_applied_with_cli_duplicates_expiry_influx_and_metrics(pipeline: Pipeline) -> None:
    twin = start(pipeline)
    ts = twin.override["twin_state"]
    devices = Devices(pipeline, ts["event_topic"])
    try:
        # Refusals: no token, wrong token, unknown setting, wrong kind, out of range, unknown device.
        body = {"settings": {"heater": True}}
        assert twin.call("PATCH", "/things/sim-1/desired", body, token=None)[0] == 401
        assert twin.call("PATCH", "/things/sim-1/desired", body, token="wrong")[0] == 403
        status, answer = twin.call(
            "PATCH",
            "/things/sim-1/desired",
            {"settings": {"fan": 1, "heater": "yes", "report_interval_s": 0.0}},
        )
        assert status == 422
        reasons = {d["loc"][-1]: d["msg"] for d in answer["detail"]}
        assert "no setting 'fan'" in reasons["fan"]
        assert "true or false" in reasons["heater"]
        assert "below the minimum 0.1 s" in reasons["report_interval_s"]
        assert twin.call("PATCH", "/things/greensboro/desired", body)[0] == 404
        assert twin.call("GET", "/things/no-such-device/state")[0] == 404
        assert twin.call("GET", "/openapi.json")[1]["paths"]["/things/{device}/desired"]["patch"]

        # The CLI sets two settings and follows the command while the bridge and publisher answer.
        cli = subprocess.Popen(
            [sys.executable, "-m", "twinpipe", "command", "sim-1", "set", "heater=on", "report_interval_s=2",
             "--wait", "--url", twin.url, "--expires-in", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**twin.process.env, "TWINPIPE__TWIN_STATE__TOKEN": TOKEN},
        )  # fmt: skip
        (command,) = commands_in_kafka(pipeline, ts["command_topic"], 1)
        assert command["settings"] == {"heater": True, "report_interval_s": 2}
        assert command["desired_version"] == 1 and command["expires_ns"] > command["created_ns"]
        state = twin.ok("GET", "/things/sim-1/state")
        assert state["desired"] == state["delta"] == {"heater": True, "report_interval_s": 2}
        devices.event(command, "sent", "bridge")
        twin.command(command["id"], "sent")
        devices.event(command, "delivered", "publisher")
        devices.event(command, "written", "publisher")
        devices.acknowledge(command, {"heater": True, "report_interval_s": 2.0})
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 0, (out, err)
        assert out.splitlines()[0].split()[2] == "queued" and out.splitlines()[-1].split()[2] == "applied", (
            out
        )

        entry = twin.ok("GET", f"/commands/{command['id']}")
        assert [h["state"] for h in entry["history"]] == [
            "queued", "sent", "delivered", "written", "acknowledged", "applied"
        ]  # fmt: skip
        devices.reading("sim-1", 0, {"temperature": 0.0, "humidity": 41.5})
        state = poll(
            lambda: twin.ok("GET", "/things/sim-1/state"),
            lambda s: "temperature" in s["reported"],
            15,
            "reading in reported",
        )
        assert state["desired"] == {} and state["delta"] == {}
        assert state["reported"] == {
            "heater": True,
            "report_interval_s": 2.0,
            "temperature": 0.0,
            "humidity": 41.5,
        }
        assert state["desired_version"] == 1 and state["reported_version"] == 2

        # Duplicates and out-of-order evidence change nothing.
        devices.acknowledge(command, {"heater": True, "report_interval_s": 2.0})
        devices.event(command, "sent", "bridge")
        devices.reading("sim-1", 1, {"temperature": 0.5})
        poll(
            lambda: twin.ok("GET", "/things/sim-1/state"),
            lambda s: s["reported"]["temperature"] == 0.5,
            15,
            "2nd",
        )
        again = twin.ok("GET", f"/commands/{command['id']}")
        assert again == entry

        # A command nobody acknowledges expires; late evidence is recorded and does not revive it.
        late = twin.ok("PATCH", "/things/sim-1/desired", {"settings": {"heater": False}, "expires_in_s": 0.5})
        assert late["command"]["state"] == "queued" and late["command"]["desired_version"] == 2
        expired = twin.command(late["id"], "expired", timeout_s=15)
        assert expired["history"][-1]["by"] == "twin_state"
        late_command = {**late["command"], "device": "sim-1"}
        devices.acknowledge(late_command)
        entry = poll(
            lambda: twin.ok("GET", f"/commands/{late['id']}"),
            lambda e: e["history"][-1].get("late"),
            15,
            "late ack recorded",
        )
        assert entry["state"] == "expired"
        assert twin.ok("GET", "/things/sim-1/state")["reported"]["heater"] is False  # what the board has

        # A malformed event goes to the dead-letter topic with its reason; the stage goes on.
        devices.producer.send(ts["event_topic"], key=b"sim-1", value=b'{"v": 1, "id": "x", "state": "done"}')
        devices.producer.flush()
        (dead,) = pipeline.kafka_records(pipeline.dead_letter_topic, 1)
        headers = dict(dead.headers)
        assert (
            headers["twinpipe.stage"] == b"twin_state"
            and b"state: expected one of sent" in headers["twinpipe.reason"]
        )
        assert headers["twinpipe.source"].startswith(ts["event_topic"].encode() + b"/")
        assert twin.metric('twinpipe_twin_state_dead_letters_total{kind="event"}') == 1

        assert twin.metric('twinpipe_twin_state_commands_total{state="applied"}') == 1
        assert twin.metric('twinpipe_twin_state_commands_total{state="expired"}') == 1
        assert twin.metric("twinpipe_twin_state_commands_unacknowledged") == 0
        rows = poll(
            lambda: pipeline.influx_rows(
                'SELECT "id", "since_queued_s" FROM "twin_commands" WHERE "state" = \'applied\''
            ),
            bool,
            15,
            "journal in InfluxDB",
        )
        assert rows[0]["id"] == command["id"] and rows[0]["since_queued_s"] >= 0
        settings = poll(
            lambda: pipeline.influx_rows('SELECT "value" FROM "twin_settings" WHERE "setting" = \'heater\''),
            lambda r: len(r) >= 3,
            15,
            "settings in InfluxDB",
        )
        assert [r["value"] for r in settings][:2] == [1.0, 1.0]  # desired on, then reported on
    finally:
        devices.close()


def test_refuses_to_start_without_a_token_unless_read_only(pipeline: Pipeline) -> None:
    path = pipeline.write_config({"twin_state": {"port": free_port()}}, name="no-token.yaml")
    run = subprocess.run(
        [sys.executable, "-m", "twin_state", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "twin_state.token: required" in run.stderr
    override = {"twin_state": {"read_only": True, "state_topic": f"state-ro-{pipeline.id}"}}
    reader = start(pipeline, override, token=None)
    status, answer = reader.call("PATCH", "/things/sim-1/desired", {"settings": {"heater": True}})
    assert status == 403 and "read-only" in answer["detail"]
    assert reader.call("GET", "/things/sim-1/state")[1]["desired"] == {}
