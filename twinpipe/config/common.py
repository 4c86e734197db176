"""Value checks and types shared by the sections: hosts, URLs, names, files, secrets; the base Section."""

from __future__ import annotations

import ipaddress
import re
import string
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from twinpipe.names import (
    device_problem,
    measurement_problem,
    tag_key_problem,
    tag_value_problem,
    value_name_problem,
)

ENV_PREFIX = "TWINPIPE__"
CONFIG_PATH_ENV = "TWINPIPE_CONFIG"
DEFAULT_CONFIG_PATH = Path("config.yaml")

KAFKA_TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,249}\Z")  # \Z: "$" matches before a final newline


class ConfigError(Exception):
    """Raised with every problem found in a configuration, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


# --- value checks -----------------------------------------------------------------------------------


# A DNS name (labels of letters, digits, '-' and '_', which container names use) or an IP address.
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")
_TLS_SCHEMES = {"mqtts", "ssl", "tls", "wss", "https", "sasl_ssl"}


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_host(value: str) -> bool:
    return _is_ip(value) or (len(value) <= 253 and bool(_HOSTNAME.fullmatch(value)))


def _url_parts(value: str) -> tuple[str, str | None, str]:
    """Host, port (None if absent) and scheme of something written as `scheme://[user@]host[:port]/...`.

    Parsed by hand: urlsplit gives up on schemes such as Kafka's SASL_SSL and lowercases the host.
    """
    scheme, _, rest = value.partition("://")
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port = tail.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    return host or "HOST", port if port.isdigit() else None, scheme.lower()


def host_rule(port_key: str, tls_key: str | None = None) -> AfterValidator:
    """A host to connect to or bind on, as sockets take it: no scheme, port, path or brackets.

    Clients given `tcp://broker:1883` resolve that whole string as a name and retry forever, so the
    mistake is refused here with what to write instead.
    """

    def check(value: str) -> str:
        if "://" in value:
            host, port, scheme = _url_parts(value)
            hint = f"write host only: {host}, port " + (f"{port} in {port_key}" if port else f"in {port_key}")
            if scheme in _TLS_SCHEMES and tls_key:
                hint += f", TLS with {tls_key}"
            raise ValueError(f"expected a host name or IP address, not a URL: {hint}")
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and _is_host(host.strip("[]")) and not _is_ip(value):
            raise ValueError(
                "expected a host name or IP address without a port: "
                f"write host only: {host.strip('[]')}, port {port} in {port_key}"
            )
        if value.startswith("[") and value.endswith("]") and _is_ip(value[1:-1]):
            raise ValueError(f"write the IPv6 address without brackets: {value[1:-1]}")
        if not _is_host(value):
            raise ValueError("expected a host name or IP address (letters, digits, '.', '-', '_')")
        return value

    return AfterValidator(check)


def _host_port(value: str) -> str:
    """`host:port` for Kafka (`[v6address]:port` for IPv6), never a URL or a Kafka listener spec."""
    if "://" in value:
        host, port, scheme = _url_parts(value)
        host = f"[{host}]" if ":" in host else host
        hint = f"write {host}:{port}" if port else f"write {host}:PORT"
        if scheme.upper() in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", "HTTPS"):
            hint += " (the protocol goes in kafka.security_protocol)"
        raise ValueError(f"expected host:port, not a URL: {hint}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port")
    if host.startswith("[") and host.endswith("]"):
        valid = ":" in host and _is_ip(host[1:-1])
    elif ":" in host:
        raise ValueError(f"expected host:port; write an IPv6 address in brackets: [{host}]:{port}")
    else:
        valid = _is_host(host)
    if not valid:
        raise ValueError("expected host:port with a host name or IP address ([address] for IPv6)")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        example = f"http://{value}" if "://" not in value else "http://influxdb:8086"
        raise ValueError(f"expected an http:// or https:// URL such as {example}")
    if not _is_host(parts.hostname):
        raise ValueError(f"expected a URL with a host name or IP address, not {parts.hostname!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("expected a URL whose port is a number from 1 to 65535") from None
    if "/api/" in f"{parts.path}/" or parts.query or parts.fragment:
        base = f"{parts.scheme}://{parts.netloc}"
        raise ValueError(
            f"expected the server's base URL such as {base} (the client adds /api/v2/... itself)"
        )
    return value.rstrip("/")


def pattern_rule(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"expected {what} matching {pattern.pattern}")
        return value

    return AfterValidator(check)


def _name_rule(problem_of: Any, what: str):
    """A validator from one of twinpipe.names' rules (which InfluxDB can store unchanged)."""

    def check(value: str) -> str:
        problem = problem_of(value)
        if problem:
            raise ValueError(f"expected {what}: {problem}")
        return value

    return AfterValidator(check)


def _readable_file(value: Path) -> Path:
    try:
        with open(value, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror}") from None
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
ValueName = Annotated[str, _name_rule(value_name_problem, "a value name")]  # a name in envelope values
TagKey = Annotated[str, _name_rule(tag_key_problem, "a tag key")]
TagValue = Annotated[str, _name_rule(tag_value_problem, "a tag value")]
DeviceId = Annotated[str, _name_rule(lambda d: device_problem(d, allow_probe=False), "a device id")]
Measurement = Annotated[str, _name_rule(measurement_problem, "a measurement name")]
KafkaTopic = Annotated[str, pattern_rule(KAFKA_TOPIC_PATTERN, "a Kafka topic name")]
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
Port = Annotated[int, Field(gt=0, lt=65536)]
Positive = Annotated[float, Field(gt=0)]


def one_source(value: SecretStr | None, path: Path | None, key: str) -> None:
    if value is not None and path is not None:
        raise ValueError(f"set {key} or {key}_file, not both")


def read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """A secret given inline (usually via the environment) or as a file path (Docker/K8s secrets)."""
    if path is not None:
        return path.read_text().strip()
    return value.get_secret_value() if value is not None else None


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
