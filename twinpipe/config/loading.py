"""Reading config.yaml: the file, `TWINPIPE__` environment overrides, and errors that name the key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from twinpipe.config.common import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, ENV_PREFIX, ConfigError
from twinpipe.config.schema import Config, cross_section_errors

# --- loading ----------------------------------------------------------------------------------------


def resolve_path(cli_path: str | Path | None, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(cli_path or environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """`TWINPIPE__KAFKA__BOOTSTRAP_SERVERS=a:9092` → {("kafka", "bootstrap_servers"): (name, "a:9092")}.

    Values are parsed as YAML scalars/flow collections so numbers, booleans and lists work.
    """
    overrides = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        overrides[path] = (name, value)
    return overrides


def _apply(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = document
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _describe(error: Any, sources: dict[tuple[str, ...], str]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    # A key with a newline or other control character is shown quoted, so the message stays one line.
    key = ".".join(part if part.isprintable() else repr(part) for part in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (check the spelling against config.yaml)"
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if "input" in error and not isinstance(error["input"], dict):
            message += f", got {_redacted(loc, error['input'])!r}"
    origin = next((name for path, name in sources.items() if loc[: len(path)] == path), None)
    return f"{key}: {message}" + (f" (from {origin})" if origin else "")


def _redacted(loc: tuple[str, ...], value: Any) -> Any:
    if isinstance(value, str) and "://" in value:  # a URL's user:password@ part
        value = re.sub(r"(://)[^/@]*@", r"\1***@", value)
    return "***" if loc and loc[-1] in ("password", "token", "sasl_password") else value


def parse_config(document: Any, environ: Mapping[str, str] = os.environ, origin: str = "config") -> Config:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([f"{origin}: expected a mapping of sections, got {type(document).__name__}"])
    sources = {}
    for path, (name, value) in env_overrides(environ).items():
        _apply(document, path, value)
        sources[path] = name
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError([_describe(error, sources) for error in exc.errors()]) from None
    collisions = cross_section_errors(config)
    if collisions:
        raise ConfigError(collisions)
    return config


def load_config(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """Load and validate; a missing file is allowed only when no path was asked for explicitly."""
    explicit = path is not None or CONFIG_PATH_ENV in environ
    resolved = resolve_path(path, environ)
    try:
        text = resolved.read_text()
    except FileNotFoundError:
        if explicit:
            raise ConfigError([f"{resolved}: config file not found"]) from None
        text = ""
    except OSError as exc:
        raise ConfigError([f"{resolved}: cannot read config file: {exc.strerror}"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{resolved}: not valid YAML: {exc}"]) from None
    return parse_config(document, environ, origin=str(resolved))
