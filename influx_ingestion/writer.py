"""Writing line protocol to InfluxDB 2 and sorting failures into "fix the data" and "try again"."""

from __future__ import annotations

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
