"""InfluxDB 2 access shared by stages: writing line protocol, and InfluxQL queries.

Writes sort failures into "fix the data" (Rejected) and "try again" (Unavailable). Queries use
InfluxQL over the v1-compatible /query endpoint with token auth, which InfluxDB 2 serves for every
bucket (database = bucket name) and InfluxDB 1.x and 3.x serve too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError

from twinpipe.config import InfluxConfig

CONTENT_REJECTED = {400, 413, 422}  # bad line protocol, too large, schema conflict


class Rejected(Exception):
    """InfluxDB refused these points for their content; writing them again cannot succeed."""


class Unavailable(Exception):
    """InfluxDB could not take the write now (down, slow, overloaded, or misconfigured credentials)."""


class InfluxWriter:
    def __init__(self, config: InfluxConfig) -> None:
        self._bucket = config.bucket
        self._org = config.org
        self._client = InfluxDBClient(
            url=config.url, token=config.secret_token(), org=config.org, timeout=int(config.timeout_s * 1000)
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        try:
            self._api.write(self._bucket, self._org, record=lines, write_precision=WritePrecision.NS)
        except ApiException as exc:
            message = f"HTTP {exc.status}: {(exc.body or exc.reason or '')!s:.300}"
            if exc.status in CONTENT_REJECTED:
                raise Rejected(message) from None
            if exc.status in (401, 403, 404):
                message += " (check influxdb.token, influxdb.org and influxdb.bucket)"
            raise Unavailable(message) from None
        except (HTTPError, OSError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._client.close()


class InfluxQL:
    """Runs InfluxQL against a bucket; each call returns rows as column → value dicts (times in ns)."""

    def __init__(self, config: InfluxConfig) -> None:
        self._url = f"{config.url}/query"
        self._bucket = config.bucket
        self._headers = {"Authorization": f"Token {config.secret_token()}"}
        self._timeout_s = config.timeout_s

    def rows(self, query: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"db": self._bucket, "q": query, "epoch": "ns"})
        request = urllib.request.Request(f"{self._url}?{params}", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                result = json.load(response)["results"][0]
        except urllib.error.HTTPError as exc:
            raise Unavailable(f"HTTP {exc.code} for InfluxQL {query!r:.100}: {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as exc:
            raise Unavailable(f"InfluxQL {query!r:.100} failed: {exc}") from None
        if "error" in result:
            raise Unavailable(f"InfluxQL {query!r:.100}: {result['error']}")
        return [
            dict(zip(series["columns"], values, strict=True))
            for series in result.get("series", [])
            for values in series["values"]
        ]
