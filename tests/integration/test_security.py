"""MQTT with a password file and TLS (a CA made here, client certificates required), against a real
Mosquitto; and no secret-looking value in the files the repository ships."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devstack.command_loop import command_loop
from devstack.mosquitto import Mosquitto, shipped_acl
from devstack.process import free_port
from devstack.tls import Certificates, make_certificates
from tests.harness import Pipeline, poll
from tests.integration.test_commands import Commands

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "twin", "correct-horse"


class SecureBroker:
    def __init__(self, broker: Mosquitto, tls_port: int, certificates: Certificates) -> None:
        self.broker = broker
        self.tls_port = tls_port
        self.certificates = certificates

    def mqtt(self, client_cert: bool = True) -> dict[str, Any]:
        """Config for a stage on the TLS listener; the password travels in the environment."""
        certs = self.certificates
        tls: dict[str, Any] = {"ca_file": str(certs.ca)}
        if client_cert:
            tls |= {"cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
        return {"mqtt": {"host": "127.0.0.1", "port": self.tls_port, "username": USER, "tls": tls}}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    workdir = tmp_path_factory.mktemp("secure-mqtt")
    certificates = make_certificates(workdir / "certs")
    passwords = workdir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    tls_port = free_port()
    extra = (
        f"password_file {passwords}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {certificates.ca}\ncertfile {certificates.server_cert}\nkeyfile {certificates.server_key}\n"
        "require_certificate true\n"
    )
    broker = Mosquitto(workdir / "broker", extra_config=extra, anonymous=False)
    broker.credentials = (USER, PASSWORD)
    with broker:
        yield SecureBroker(broker, tls_port, certificates)


def test_publisher_and_bridge_over_tls_with_client_certificates_and_a_password(
    pipeline: Pipeline, secure: SecureBroker
) -> None:
    env = {"TWINPIPE__MQTT__PASSWORD": PASSWORD}
    bridge = pipeline.stage("mqtt_kafka_bridge", secure.mqtt(), env=env)
    poll(bridge.log, lambda log: "connected to MQTT broker" in log, 20, "the bridge connected over TLS")
    publisher = pipeline.stage(
        "publisher", {**secure.mqtt(), "publisher": {"simulator": {"rate_hz": 50}}}, env=env
    )
    records = pipeline.kafka_records(pipeline.telemetry_topic, 50)
    assert len(records) >= 50
    assert PASSWORD not in publisher.log() + bridge.log(), "the password is never logged"
    for stage in (publisher, bridge):
        assert stage.stop() == 0, stage.log()


def test_wrong_password_is_reported_and_retried_without_crashing(
    pipeline: Pipeline, secure: SecureBroker
) -> None:
    publisher = pipeline.stage("publisher", secure.mqtt(), env={"TWINPIPE__MQTT__PASSWORD": "wrong"})
    poll(publisher.log, lambda log: "refused the connection" in log, 20, "the refusal logged")
    assert "Not authorized" in publisher.log() or "Bad user name or password" in publisher.log()
    assert publisher.running(), "a refused login is retried, not fatal"
    assert publisher.stop() == 0


def test_without_a_client_certificate_the_tls_listener_refuses(
    pipeline: Pipeline, secure: SecureBroker
) -> None:
    env = {"TWINPIPE__MQTT__PASSWORD": PASSWORD}
    settings = {**secure.mqtt(client_cert=False), "publisher": {"shutdown_timeout_s": 1}}
    publisher = pipeline.stage("publisher", settings, env=env)
    # With TLS 1.3 the server checks the client certificate after the handshake, so the client sees
    # its connection dropped rather than refused.
    poll(
        publisher.log,
        lambda log: "cannot connect to MQTT broker" in log or "disconnected from MQTT broker" in log,
        20,
        "the failed connection logged",
    )
    assert publisher.running()
    assert publisher.stop() == 0
    assert ", 0 published" in publisher.log().rsplit("stopped: ", 1)[1]


def test_the_shipped_acl_lets_only_the_bridge_publish_commands(pipeline: Pipeline, tmp_path: Path) -> None:
    """A broker with compose's password file and ACL (mosquitto/acl.template for a bridge login and
    the stages' login): the bridge (its own login) and the publisher (the stages' login) carry
    telemetry and a command to the simulated board and its evidence back; a command published with
    the stages' login on a board's command topic is refused (MQTT 5 PUBACK "not authorized") and
    never reaches the publisher."""
    stage_user, bridge_user, bridge_password = "twinpipe", "twinpipe-bridge", "bridge-horse"
    passwords, acl = tmp_path / "passwd", tmp_path / "acl"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), stage_user, PASSWORD], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), bridge_user, bridge_password], check=True)
    acl.write_text(shipped_acl(bridge_user, stage_user))
    extra = f"password_file {passwords}\nacl_file {acl}\n"
    broker = Mosquitto(tmp_path / "broker", extra_config=extra, anonymous=False)
    broker.credentials = (stage_user, PASSWORD)  # the readiness check reads $SYS/broker/version as compose's
    with broker:
        config = command_loop("twin", pipeline.id)
        del config["twin_state"]
        config["publisher"]["topic_template"] = "twin/{device}/telemetry"
        config["bridge"]["routes"] = [{"mqtt_filter": "twin/+/telemetry"}]
        login = {"host": "127.0.0.1", "port": broker.port}
        bridge = pipeline.stage(
            "mqtt_kafka_bridge",
            {**config, "mqtt": {**login, "username": bridge_user}},
            env={"TWINPIPE__MQTT__PASSWORD": bridge_password},
        )
        publisher = pipeline.stage(
            "publisher",
            {**config, "mqtt": {**login, "username": stage_user}},
            env={"TWINPIPE__MQTT__PASSWORD": PASSWORD},
        )
        commands = Commands(pipeline)
        forger = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        acks: list[int] = []
        forger.on_publish = lambda _c, _u, _mid, reason, _p: acks.append(reason.value)
        forger.username_pw_set(stage_user, PASSWORD)
        forger.connect("127.0.0.1", broker.port)
        forger.loop_start()
        try:
            poll(publisher.log, lambda log: "subscribed to 1 command topic" in log, 20, "the command session")
            now = time.time_ns()
            forged = {
                "v": 1, "id": "forged0", "device": "sim-1", "settings": {"heater": True},
                "desired_version": 1, "created_ns": now, "expires_ns": now + 60 * 10**9,
            }  # fmt: skip
            forger.publish("twin/sim-1/command", json.dumps(forged), qos=1).wait_for_publish(10)
            poll(lambda: acks, bool, 10, "the broker's PUBACK")
            assert acks == [0x87], "not authorized"
            command_id = commands.send("sim-1", {"heater": True}, life_s=60)
            assert commands.wait_for(command_id, "acknowledged")["reported"] == {"heater": True}
            assert pipeline.kafka_records(pipeline.telemetry_topic, 1), "telemetry passes the ACL"
            assert commands.states("forged0") == [] and "forged0" not in publisher.log()
        finally:
            forger.loop_stop()
            forger.disconnect()
            commands.close()
        assert publisher.stop() == 0
        assert bridge.stop() == 0


# --- no secrets in the repository ---------------------------------------------------------------

SECRET_KEY = re.compile(r"(password|passwd|token|secret|api_?key|private_?key)", re.IGNORECASE)
PLACEHOLDER = re.compile(r"^(|null|none|~|\$\{?[A-Z_][A-Z0-9_]*(:[-?][^}]*)?\}?|/run/secrets/\w+)$")
SHIPPED = ["config.yaml", "docker-compose.yml", "docker-compose.serial.yml", ".env.example"] + [
    str(path.relative_to(ROOT)) for path in (ROOT / "grafana" / "provisioning").rglob("*.yml")
]


def assignments(path: Path) -> list[tuple[str, str]]:
    """(key, value) pairs of a YAML file (nested) or a KEY=value file."""
    text = path.read_text()
    if path.name.startswith(".env"):
        return [
            tuple(line.split("=", 1))
            for line in text.splitlines()
            if "=" in line and not line.startswith("#")
        ]
    found: list[tuple[str, str]] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for child_key, value in node.items():
                walk(value, str(child_key))
        elif isinstance(node, list):
            for item in node:
                walk(item, key)
        else:
            found.append((key, "" if node is None else str(node)))

    walk(yaml.safe_load(text))
    return found


REFERENCE_KEYS = {"secrets", "source", "target"}  # compose names a secret here, it holds no value


def secret_looking(key: str, value: str) -> bool:
    bare = re.sub(r"^(Token|Bearer) ", "", value.strip())
    holds_a_value = not key.lower().endswith("_file") and key not in REFERENCE_KEYS
    if SECRET_KEY.search(key) and holds_a_value and not PLACEHOLDER.match(bare):
        return True
    # A long random-looking string is a secret wherever it stands (a secret's path is not).
    random_looking = re.fullmatch(r"[A-Za-z0-9+/=_-]{32,}", bare) and len(set(bare)) > 12
    return bool(random_looking) and not PLACEHOLDER.match(bare)


@pytest.mark.parametrize("name", SHIPPED)
def test_no_secret_looking_value_is_committed(name: str) -> None:
    leaks = [(key, value) for key, value in assignments(ROOT / name) if secret_looking(key, value)]
    assert not leaks, f"{name} holds secret-looking values: {leaks}"


def test_the_secret_check_would_catch_a_committed_secret() -> None:
    assert secret_looking("password", "hunter2")
    assert secret_looking("TWINPIPE__INFLUXDB__TOKEN", "9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c")
    assert secret_looking("httpHeaderValue1", "Token 9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4cdeadbeefcafe")
    assert not secret_looking("password_file", "/run/secrets/mqtt_password")
    assert not secret_looking("TWINPIPE__MQTT__PASSWORD_FILE", "/run/secrets/mqtt_bridge_password")
    assert not secret_looking("GF_SECURITY_ADMIN_PASSWORD", "${GRAFANA_ADMIN_PASSWORD:?set it}")
    assert not secret_looking("httpHeaderValue1", "Token ${INFLUXDB_TOKEN}")
