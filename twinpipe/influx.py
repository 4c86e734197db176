"""InfluxDB 2 access shared by stages: writing line protocol, and InfluxQL queries.

Writes sort failures into "fix the data" (Rejected) and "try again" (Unavailable). Queries use
InfluxQL over the v1-compatible /query endpoint with token auth, which InfluxDB 2 serves for every
bucket (database = bucket name) and InfluxDB 1.x and 3.x serve too.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError

from twinpipe.config import InfluxConfig

CONTENT_REJECTED = {400, 413, 422}  # bad line protocol, too large, schema conflict, partial write

# InfluxDB 1.x and 2.x answer a write some of whose points they dropped with a "partial write" error
# ending in dropped=N, and store the rest of the request (coordinator/points_writer.go). Seen:
#   1.x  400 {"error":"partial write: points beyond retention policy dropped=10"}
#   2.x  422 {"code":"unprocessable entity","message":"failure writing points to database: partial
#        write: points beyond retention policy dropped=1000"}
#   2.7.11+ "... partial write: dropped 550 points outside retention policy of duration 8760h0m0s -
#        oldest point ... dropped=550 for database: ... for retention policy: autogen"
#   1.x/2.x "partial write: field type conflict: input field \"v\" on measurement \"m\" is type
#        string, already exists as type float dropped=1"
_DROPPED = re.compile(r"partial write:.*?\bdropped=(\d+)", re.DOTALL)
_RETENTION = re.compile(r"points beyond retention policy|points outside retention policy", re.IGNORECASE)
# Reasons other than retention that a retention message may carry along (write window, a shard
# being deleted): those drops are not "the oldest points", so such a message is not trusted as one.
_NOT_ONLY_RETENTION = re.compile(r"write window|pending deletion|field type conflict", re.IGNORECASE)


@dataclass(frozen=True)
class PartialWrite:
    """What a "partial write" error says: `dropped` points of the request were not stored (the rest
    were), and whether the only reason was the retention period (`beyond_retention`)."""

    dropped: int
    beyond_retention: bool


def partial_write(message: str) -> PartialWrite | None:
    """The partial write an InfluxDB error message reports, or None if it reports none."""
    match = _DROPPED.search(message)
    if match is None:
        return None
    only_retention = bool(_RETENTION.search(message)) and not _NOT_ONLY_RETENTION.search(message)
    return PartialWrite(int(match.group(1)), only_retention)


class Rejected(Exception):
    """InfluxDB refused these points for their content; writing them again cannot succeed.

    `partial`: what InfluxDB reported as dropped when it stored the rest of the request (None when
    it stored nothing or did not say)."""

    def __init__(self, message: str, partial: PartialWrite | None = None) -> None:
        super().__init__(message)
        self.partial = partial


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
            body = f"{exc.body or exc.reason or ''!s}"
            message = f"HTTP {exc.status}: {body:.300}"
            if exc.status in CONTENT_REJECTED:
                raise Rejected(message, partial_write(body)) from None
            if exc.status in (401, 403, 404):
                message += " (check influxdb.token, influxdb.org and influxdb.bucket)"
            raise Unavailable(message) from None
        except (HTTPError, OSError) as exc:
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None

    def bucket_retention_s(self) -> float:
        """The bucket's retention period in seconds (0: kept forever), read with GET /api/v2/buckets
        (retentionRules[].everySeconds of the "expire" rule). Needs a token that may read buckets."""
        try:
            found = self._client.buckets_api().find_buckets(name=self._bucket, org=self._org).buckets
        except ApiException as exc:
            raise Unavailable(
                f"reading bucket {self._bucket!r}: HTTP {exc.status}: {exc.body or exc.reason or ''!s:.200}"
            ) from None
        except (HTTPError, OSError, ValueError) as exc:
            raise Unavailable(f"reading bucket {self._bucket!r}: {type(exc).__name__}: {exc}") from None
        bucket = next((b for b in found or [] if b.name == self._bucket), None)
        if bucket is None:
            raise Unavailable(f"bucket {self._bucket!r} not listed for this token (check influxdb.bucket)")
        rules = [rule for rule in bucket.retention_rules or [] if rule.type in (None, "expire")]
        return float(rules[0].every_seconds or 0) if rules else 0.0

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
