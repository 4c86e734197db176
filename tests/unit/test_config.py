from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_kafka_bridge.producers import librdkafka_settings
from twinpipe.__main__ import main as twinpipe_main
from twinpipe.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def errors_of(document: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, environ or {})
    return caught.value.errors


def test_defaults_are_valid() -> None:
    config = parse_config({}, {})
    assert config.kafka.bootstrap_servers == ["localhost:9092"]
    assert config.publisher.topic_template == "twin/{device}/telemetry"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"kafka": {"bootstrap_servers": "kafka"}},
            "kafka.bootstrap_servers.0: expected host:port, got 'kafka'",
        ),
        ({"kafka": {"bootstrap_servrs": ["a:1"]}}, "kafka.bootstrap_servrs: unknown key"),
        ({"mqtt": {"port": 70000}}, "mqtt.port: Input should be less than 65536, got 70000"),
        ({"mqtt": {"port": "abc"}}, "mqtt.port: Input should be a valid integer"),
        ({"influxdb": {"url": "localhost:8086"}}, "influxdb.url: expected an http:// or https:// URL"),
        (
            {"publisher": {"source": "usb"}},
            "publisher.source: Input should be 'simulator', 'serial' or 'replay', got 'usb'",
        ),
        (
            {"publisher": {"topic_template": "twin/+/x"}},
            "publisher.topic_template: an MQTT topic to publish to",
        ),
        ({"publisher": {"topic_template": "twin/{board}"}}, "publisher.topic_template: only the placeholder"),
        (
            {"publisher": {"serial": {"frame": {"layout": ">5h"}}}},
            "publisher.serial.frame: layout '>5h' holds 5",
        ),
        (
            {"publisher": {"serial": {"frame": {"layout": "6h"}}}},
            "publisher.serial.frame.layout: must start with",
        ),
        (
            {"publisher": {"serial": {"frame": {"sync_hex": "zz"}}}},
            "publisher.serial.frame.sync_hex: expected a",
        ),
        ({"bridge": {"routes": [{"mqtt_filter": "a/#/b"}]}}, "bridge.routes.0.mqtt_filter: wildcards must"),
        (
            {"bridge": {"routes": [{"mqtt_filter": "a/+", "kafka_topic": "{x}"}]}},
            "bridge.routes.0.kafka_topic",
        ),
        ({"bridge": {"routes": []}}, "bridge.routes: List should have at least 1 item"),
        ({"kafka": {"session_timeout_ms": 3000}}, "kafka: heartbeat_interval_ms must be at most a third"),
        ({"mqtt": {"password_file": "/nonexistent/secret"}}, "mqtt.password_file: cannot read file"),
        ({"mqtt": {"password": "x", "password_file": __file__}}, "mqtt: set password or password_file"),
        ({"logging": {"level": "LOUD"}}, "logging.level: Input should be"),
        (
            {"publisher": {"simulator": {"sensors": {"seq": {"mean": 1, "stddev": 0}}}}},
            "publisher.simulator.sensors.seq.[key]: expected a value name",
        ),
        (
            {"publisher": {"serial": {"frame": {"format": "csv", "fields": ["t", "boot"]}}}},
            "publisher.serial.frame.fields.1: expected a value name",
        ),
        ([1, 2], "config: expected a mapping of sections, got list"),
        (
            {"bridge": {"routes": [{"kafka_topic": "x"}]}},
            "bridge.routes.0.mqtt_filter: required key is missing",
        ),
        ({"influxdb": {"url": "ftp://db"}}, "influxdb.url: expected an http:// or https:// URL"),
        ({"influxdb": {"token_file": "/nonexistent/token"}}, "influxdb.token_file: cannot read file"),
        (
            {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}},
            "kafka: security_protocol SASL_SSL needs sasl_mechanism and sasl_username",
        ),
        (
            {
                "kafka": {
                    "security_protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "PLAIN",
                    "sasl_username": "u",
                }
            },
            "kafka: security_protocol SASL_PLAINTEXT needs a password",
        ),
        ({"kafka": {"sasl_mechanism": "PLAIN"}}, "kafka: sasl_mechanism needs security_protocol"),
        ({"kafka": {"ssl_cert_file": __file__}}, "kafka: set ssl_cert_file and ssl_key_file together"),
        ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol: Input should be"),
        ({"latency_probe": {"device_labels": -1}}, "latency_probe.device_labels: Input should be greater"),
        ({"health": {"port": "http"}}, "health.port: Input should be a valid integer"),
    ],
)
def test_bad_values_name_the_key(document: object, expected: str) -> None:
    errors = errors_of(document)
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_kafka_security_settings_reach_the_clients(tmp_path: Path) -> None:
    secret = tmp_path / "kafka_password"
    secret.write_text("s3cret\n")
    document = {
        "kafka": {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "twin",
            "sasl_password_file": str(secret),
            "ssl_ca_file": __file__,
        }
    }
    assert parse_config(document, {}).kafka.security() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "twin",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": __file__,
        "ssl_certfile": None,
        "ssl_keyfile": None,
    }
    assert parse_config({}, {}).kafka.security() == {"security_protocol": "PLAINTEXT"}
    librdkafka = librdkafka_settings(
        parse_config({**document, "bridge": {"producer": "confluent-kafka"}}, {})
    )
    assert {key: librdkafka[key] for key in librdkafka if key.startswith(("security", "sasl", "ssl"))} == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "twin",
        "sasl.password": "s3cret",
        "ssl.ca.location": __file__,
    }
    assert librdkafka["acks"] == "all" and librdkafka["enable.idempotence"] is True


def test_all_errors_are_reported_at_once() -> None:
    errors = errors_of({"kafka": {"bootstrap_servers": "kafka"}, "mqtt": {"port": 0}, "bogus": {}})
    assert len(errors) == 3


def test_env_overrides_win_and_are_named_in_errors() -> None:
    environ = {
        "TWINPIPE__KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "TWINPIPE__MQTT__PORT": "1884",
        "TWINPIPE__PUBLISHER__SIMULATOR__DEVICES": "3",
        "TWINPIPE_CONFIG": "/ignored/for/overrides",
    }
    config = parse_config({"mqtt": {"port": 1883}}, environ)
    assert config.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert config.mqtt.port == 1884
    assert config.publisher.simulator.devices == 3
    structured = parse_config(
        {}, {"TWINPIPE__INGESTION__TAGS": "{site: lab-1}", "TWINPIPE__DISPLAY__DEVICES": "[a, b]"}
    )
    assert structured.ingestion.tags == {"site": "lab-1"} and structured.display.devices == ["a", "b"]
    errors = errors_of({}, {"TWINPIPE__MQTT__PROT": "1"})
    assert errors == [
        "mqtt.prot: unknown key (check the spelling against config.yaml) (from TWINPIPE__MQTT__PROT)"
    ]


def test_secrets_come_from_env_or_file_and_are_not_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("file-token\n")
    assert parse_config({"influxdb": {"token_file": str(secret)}}, {}).influxdb.secret_token() == "file-token"
    config = parse_config({}, {"TWINPIPE__INFLUXDB__TOKEN": "env-token"})
    assert config.influxdb.secret_token() == "env-token"
    assert "env-token" not in repr(config)
    with pytest.raises(ConfigError, match="influxdb.token: required"):
        parse_config({}, {}).influxdb.secret_token()
    errors = errors_of({"mqtt": {"password": ["not", "a", "string"]}})
    assert errors[0].startswith("mqtt.password:") and "not" not in errors[0]


def test_missing_explicit_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, {})


def _keys(model: type, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        name = field.alias or name  # publisher.replay.from (from_ in Python)
        keys.add(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys |= _keys(annotation, f"{prefix}{name}.")
    return keys


def _document_keys(document: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in document.items():
        keys.add(prefix + name)
        if isinstance(value, dict) and name not in ("sensors", "tags", "device_tags"):
            keys |= _document_keys(value, f"{prefix}{name}.")
    return keys


def test_shipped_config_lists_every_key_with_its_default() -> None:
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    missing = _keys(Config) - _document_keys(shipped)
    assert not missing, f"config.yaml lacks keys: {sorted(missing)}"
    assert parse_config(shipped, {}) == Config(), "config.yaml values differ from the code defaults"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert twinpipe_main(["check-config", str(ROOT / "config.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  bootstrap_servers: kafka\nmqtt:\n  prot: 1\n")
    assert twinpipe_main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "kafka.bootstrap_servers.0: expected host:port, got 'kafka'" in err
    assert "mqtt.prot: unknown key" in err
    assert "2 error(s)" in err


def test_a_producer_that_is_not_installed_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """confluent-kafka is installed for the tests, so its absence is simulated: find_spec says so."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "confluent_kafka" else real_find_spec(name, *a),
    )
    (error,) = errors_of({"bridge": {"producer": "confluent-kafka"}})
    assert error.startswith(
        "bridge.producer: confluent-kafka is not installed (pip install 'twinpipe[confluent]')"
    )


# --- hosts: a host where a host goes, host:port where Kafka wants it, a URL only for InfluxDB ---------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"mqtt": {"host": "tcp://broker:1883"}},
            "mqtt.host: expected a host name or IP address, not a URL: write host only: broker, "
            "port 1883 in mqtt.port, got 'tcp://broker:1883'",
        ),
        (
            {"mqtt": {"host": "mqtts://broker:8883"}},
            "mqtt.host: expected a host name or IP address, not a URL: write host only: broker, "
            "port 8883 in mqtt.port, TLS with mqtt.tls",
        ),
        (
            {"mqtt": {"host": "mqtt://broker"}},
            "mqtt.host: expected a host name or IP address, not a URL: "
            "write host only: broker, port in mqtt.port",
        ),
        (
            {"mqtt": {"host": "broker:1883"}},
            "mqtt.host: expected a host name or IP address without a port: write host only: broker, "
            "port 1883 in mqtt.port",
        ),
        ({"mqtt": {"host": "[::1]"}}, "mqtt.host: write the IPv6 address without brackets: ::1"),
        ({"mqtt": {"host": "my broker"}}, "mqtt.host: expected a host name or IP address"),
        ({"mqtt": {"host": ""}}, "mqtt.host: expected a host name or IP address"),
        (
            {"kafka": {"bootstrap_servers": "http://kafka:9092"}},
            "kafka.bootstrap_servers.0: expected host:port, not a URL: write kafka:9092, got 'http://kafka:9092'",
        ),
        (
            {"kafka": {"bootstrap_servers": ["k1:9092", "PLAINTEXT://kafka:9092"]}},
            "kafka.bootstrap_servers.1: expected host:port, not a URL: write kafka:9092 "
            "(the protocol goes in kafka.security_protocol)",
        ),
        (
            {"kafka": {"bootstrap_servers": "kafka:9092/"}},
            "kafka.bootstrap_servers.0: expected host:port, got 'kafka:9092/'",
        ),
        (
            {"kafka": {"bootstrap_servers": "fe80::1:9092"}},
            "kafka.bootstrap_servers.0: expected host:port; "
            "write an IPv6 address in brackets: [fe80::1]:9092",
        ),
        (
            {"kafka": {"bootstrap_servers": "ka fka:9092"}},
            "kafka.bootstrap_servers.0: expected host:port with",
        ),
        (
            {"health": {"host": "http://0.0.0.0:8080"}},
            "health.host: expected a host name or IP address, not a URL: write host only: 0.0.0.0, "
            "port 8080 in health.port",
        ),
        (
            {"influxdb": {"url": "influxdb:8086"}},
            "influxdb.url: expected an http:// or https:// URL such as http://influxdb:8086",
        ),
        ({"influxdb": {"url": "http://influx db:8086"}}, "influxdb.url: expected a URL with a host name"),
        ({"influxdb": {"url": "http://influxdb:99999"}}, "influxdb.url: expected a URL whose port"),
    ],
)
def test_hosts_written_as_urls_or_with_ports_are_refused_with_what_to_write(
    document: object, expected: str
) -> None:
    errors = errors_of(document)
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_a_url_host_from_the_environment_names_the_variable() -> None:
    (error,) = errors_of({}, {"TWINPIPE__MQTT__HOST": "tcp://mosquitto:1883"})
    assert error.startswith(
        "mqtt.host: expected a host name or IP address, not a URL: write host only: mosquitto"
    )
    assert error.endswith("(from TWINPIPE__MQTT__HOST)")


@pytest.mark.parametrize(
    "host", ["localhost", "mosquitto", "broker.lab-1.example.org", "kafka_1", "10.0.0.7", "::1"]
)
def test_plain_hosts_pass(host: str) -> None:
    kafka = f"[{host}]:9092" if ":" in host else f"{host}:9092"
    config = parse_config(
        {"mqtt": {"host": host}, "kafka": {"bootstrap_servers": kafka}, "health": {"host": host}}, {}
    )
    assert (config.mqtt.host, config.kafka.bootstrap_servers, config.health.host) == (host, [kafka], host)
    assert parse_config(
        {"influxdb": {"url": f"http://{kafka.replace('9092', '8086')}/"}}, {}
    ).influxdb.url == (f"http://{kafka.replace('9092', '8086')}")


_LABEL = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
HOSTNAMES = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
HOSTS = st.one_of(HOSTNAMES, st.ip_addresses(v=4).map(str))
SCHEMES = st.sampled_from(["tcp", "mqtt", "mqtts", "ssl", "ws", "http", "https", "PLAINTEXT", "SASL_SSL"])


@settings(max_examples=200)
@given(host=HOSTS, port=st.integers(1, 65535), scheme=SCHEMES)
def test_any_host_passes_alone_and_any_url_is_refused_naming_the_host_and_port(
    host: str, port: int, scheme: str
) -> None:
    good = parse_config({"mqtt": {"host": host}, "kafka": {"bootstrap_servers": f"{host}:{port}"}}, {})
    assert good.mqtt.host == host and good.kafka.bootstrap_servers == [f"{host}:{port}"]
    url = f"{scheme}://{host}:{port}"
    mqtt_error, kafka_error = errors_of({"mqtt": {"host": url}, "kafka": {"bootstrap_servers": url}})
    assert f"write host only: {host}, port {port} in mqtt.port" in mqtt_error
    assert f"not a URL: write {host}:{port}" in kafka_error
    (with_port,) = errors_of({"mqtt": {"host": f"{host}:{port}"}})
    assert f"write host only: {host}, port {port} in mqtt.port" in with_port


# --- check-config -------------------------------------------------------------------------------------


def test_check_config_without_a_file_says_the_defaults_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: it printed "config OK" as if a file had been checked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWINPIPE_CONFIG", raising=False)
    assert twinpipe_main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert (
        f"no config file found ({tmp_path / 'config.yaml'} does not exist and $TWINPIPE_CONFIG is not set)"
        in out
    )
    assert "the built-in defaults apply" in out
    assert out.splitlines()[-1] == "config OK: built-in defaults"


def test_check_config_fails_when_the_given_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert twinpipe_main(["check-config", str(missing)]) == 1
    assert capsys.readouterr().err == f"{missing}: config file not found (given on the command line)\n"
    monkeypatch.setenv("TWINPIPE_CONFIG", str(missing))
    assert twinpipe_main(["check-config"]) == 1
    assert capsys.readouterr().err == f"{missing}: config file not found (given in $TWINPIPE_CONFIG)\n"


def test_check_config_names_the_file_and_the_overrides_it_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TWINPIPE__MQTT__HOST", "mosquitto")
    assert twinpipe_main(["check-config", str(ROOT / "config.yaml")]) == 0
    assert capsys.readouterr().out == (
        f"config OK: {ROOT / 'config.yaml'} with environment overrides TWINPIPE__MQTT__HOST\n"
    )
    monkeypatch.setenv("TWINPIPE__KAFKA__BOOTSTRAP_SERVERS", "http://kafka:9092")
    assert twinpipe_main(["check-config", str(ROOT / "config.yaml")]) == 1
    assert (
        "kafka.bootstrap_servers.0: expected host:port, not a URL: write kafka:9092"
        in capsys.readouterr().err
    )


# --- bridge routes: which topic level names the device ------------------------------------------------


@pytest.mark.parametrize(
    ("route", "level"),
    [
        ({"mqtt_filter": "twin/+/telemetry"}, 1),
        ({"mqtt_filter": "+/telemetry"}, 0),
        ({"mqtt_filter": "twin/#"}, 1),
        ({"mqtt_filter": "site/+/+/env", "device_level": 2}, 2),
        ({"mqtt_filter": "site/#", "device_level": 3}, 3),
        ({"mqtt_filter": "gateway/data", "check_device": False}, None),
        ({"mqtt_filter": "lab/nucleo-7/env", "device_level": 1}, 1),  # one device's own topic
        ({"mqtt_filter": "a/+/+", "check_device": False}, None),
    ],
)
def test_route_device_level(route: dict, level: int | None) -> None:
    (parsed,) = parse_config({"bridge": {"routes": [route]}}, {}).bridge.routes
    assert parsed.device_index() == level


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (
            {"mqtt_filter": "site/+/+/env"},
            "bridge.routes.0: cannot tell which level of 'site/+/+/env' names the device "
            "(it has no single '+'): set device_level (0 = first level) or check_device: false",
        ),
        ({"mqtt_filter": "gateway/data"}, "bridge.routes.0: cannot tell which level of 'gateway/data'"),
        (
            {"mqtt_filter": "twin/+/telemetry", "device_level": 2},
            "bridge.routes.0: device_level 2 is the fixed level 'telemetry' of 'twin/+/telemetry'",
        ),
        (
            {"mqtt_filter": "twin/+", "device_level": 5},
            "bridge.routes.0: device_level 5 is beyond the 2 levels of 'twin/+'",
        ),
        (
            {"mqtt_filter": "twin/+", "device_level": -1},
            "bridge.routes.0.device_level: Input should be greater",
        ),
    ],
)
def test_route_without_a_device_level_is_an_error_naming_the_keys(route: dict, expected: str) -> None:
    errors = errors_of({"bridge": {"routes": [route]}})
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_credentials_in_a_url_written_as_a_host_are_not_echoed() -> None:
    (error,) = errors_of({"mqtt": {"host": "mqtt://twin:s3cret@broker:1883"}})
    assert "s3cret" not in error and "got 'mqtt://***@broker:1883'" in error


@pytest.mark.parametrize(
    "url", ["http://influx:8086/api/v2/write", "http://influx:8086/api/v2", "http://influx:8086/?org=x"]
)
def test_an_influxdb_url_with_an_api_path_or_query_is_refused_with_the_base_url(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"influxdb": {"url": url}}, {})
    assert "influxdb.url: expected the server's base URL such as http://influx:8086" in str(error.value)


def test_a_reverse_proxy_prefix_is_still_a_base_url() -> None:
    assert (
        parse_config({"influxdb": {"url": "https://proxy/influx/"}}, {}).influxdb.url
        == "https://proxy/influx"
    )


def test_a_key_with_a_control_character_is_quoted_in_the_error() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"ingestion": {"device_tags": {"dev\n": {"site": "x"}}}}, {})
    assert "ingestion.device_tags.'dev\\n'" in str(error.value) and "\n" not in str(error.value)
