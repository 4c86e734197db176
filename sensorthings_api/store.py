"""Reading observations and devices from InfluxDB with InfluxQL (v1-compatible /query, token auth).

InfluxQL is what InfluxDB 1.x, 2.x (database = bucket) and 3.x all answer. Several statements go in
one HTTP request (`;`-separated), so the latest observation of every datastream on a page costs one
round trip of `ORDER BY time DESC LIMIT 1` statements, each of which InfluxDB answers from the end
of one series' index without scanning it. A pooled urllib3 connection avoids a TCP handshake per
query (urllib3 comes with influxdb-client).

Storage (influx_ingestion/points.py): one point per envelope in `ingestion.measurement`, tag
`device`, one field per value name. A datastream is (device, field); its observations are the
points where that field is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import urllib3

from sensorthings_api.options import TimeBound
from twinpipe.config import InfluxConfig
from twinpipe.names import DEVICE_TAG


class StoreUnavailable(Exception):
    """InfluxDB did not answer, or answered with an error (HTTP 503 to the client, with this reason)."""


def ident(name: str) -> str:
    """An InfluxQL identifier, double-quoted."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(text: str) -> str:
    """An InfluxQL string literal, single-quoted."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True, slots=True)
class Page:
    """(time_ns, value) pairs in the order asked for, and whether more follow after them."""

    rows: list[tuple[int, Any]]
    more: bool


def observations_query(
    measurement: str,
    device: str,
    field: str,
    bounds: tuple[TimeBound, ...],
    descending: bool,
    limit: int | None,
    offset: int,
) -> str:
    """The InfluxQL for one datastream's observations (pure, so tests can read it)."""
    where = [f"{ident(DEVICE_TAG)} = {literal(device)}"] + [f"time {b.op} {b.time_ns}" for b in bounds]
    query = (
        f"SELECT {ident(field)} FROM {ident(measurement)} WHERE {' AND '.join(where)} "
        f"ORDER BY time {'DESC' if descending else 'ASC'}"
    )
    if limit is not None:
        query += f" LIMIT {limit}"
    if offset:
        query += f" OFFSET {offset}"
    return query


def count_query(measurement: str, device: str, field: str, bounds: tuple[TimeBound, ...]) -> str:
    where = [f"{ident(DEVICE_TAG)} = {literal(device)}"] + [f"time {b.op} {b.time_ns}" for b in bounds]
    return f"SELECT COUNT({ident(field)}) FROM {ident(measurement)} WHERE {' AND '.join(where)}"


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Store:
    def __init__(self, config: InfluxConfig, measurement: str, timeout_s: float) -> None:
        self._url = f"{config.url.rstrip('/')}/query"
        self._database = config.bucket
        self._headers = {"Authorization": f"Token {config.secret_token()}"}
        self._measurement = measurement
        self._timeout = urllib3.Timeout(total=timeout_s)
        self._http = urllib3.PoolManager(maxsize=8, retries=False)

    def _results(self, query: str) -> list[dict[str, Any]]:
        """POST one request of ';'-separated statements; the `results` list, one entry per statement."""
        try:
            response = self._http.request(
                "POST",
                self._url,
                fields={"db": self._database, "q": query, "epoch": "ns"},
                encode_multipart=False,
                headers=self._headers,
                timeout=self._timeout,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise StoreUnavailable(
                f"InfluxDB at {self._url} unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if response.status != 200:
            hint = " (check influxdb.token and influxdb.bucket)" if response.status in (401, 403, 404) else ""
            raise StoreUnavailable(f"InfluxDB answered HTTP {response.status}{hint}: {response.data[:200]!r}")
        try:
            results = json.loads(response.data)["results"]
        except (ValueError, KeyError) as exc:
            raise StoreUnavailable(f"InfluxDB answered something that is not a query result: {exc}") from None
        for result in results:
            if "error" in result:
                raise StoreUnavailable(f"InfluxQL {query!r:.120} failed: {result['error']}")
        return results

    def statements(self, queries: list[str]) -> list[list[dict[str, Any]]]:
        """Run `queries` in one request; one list of rows (column → value, time in ns) per query."""
        if not queries:
            return []
        results = self._results(";".join(queries))
        if len(results) != len(queries):
            raise StoreUnavailable(f"InfluxDB answered {len(results)} of {len(queries)} statements")
        return [
            [
                dict(zip(series["columns"], values, strict=True))
                for series in result.get("series", [])
                for values in series["values"]
            ]
            for result in results
        ]

    def ping(self) -> bool | str:
        """A readiness check: True, or why InfluxDB cannot serve this stage's queries."""
        try:
            self.statements(
                [f"SHOW TAG VALUES FROM {ident(self._measurement)} WITH KEY = {ident(DEVICE_TAG)} LIMIT 1"]
            )
        except StoreUnavailable as exc:
            return str(exc)
        return True

    def devices(self) -> list[str]:
        """Device ids InfluxDB holds series of (the `device` tag's values: read from the index)."""
        query = f"SHOW TAG VALUES FROM {ident(self._measurement)} WITH KEY = {ident(DEVICE_TAG)}"
        return [row["value"] for row in self.statements([query])[0]]

    def numeric_fields(self) -> list[str]:
        """Field keys of the measurement holding numbers (from the index, not the data)."""
        rows = self.statements([f"SHOW FIELD KEYS FROM {ident(self._measurement)}"])[0]
        return [row["fieldKey"] for row in rows if row.get("fieldType") in ("float", "integer")]

    def present(self, streams: list[tuple[str, str]], chunk: int = 500) -> set[tuple[str, str]]:
        """Which (device, field) pairs have at least one point: one `ORDER BY time DESC LIMIT 1`
        statement each, which InfluxDB answers from the end of the series without scanning it
        (`LAST(*)` would read every point), `chunk` statements per request."""
        found = set()
        for start in range(0, len(streams), chunk):
            part = streams[start : start + chunk]
            queries = [observations_query(self._measurement, d, f, (), True, 1, 0) for d, f in part]
            found |= {stream for stream, rows in zip(part, self.statements(queries), strict=True) if rows}
        return found

    def observations(
        self,
        streams: list[tuple[str, str]],
        bounds: tuple[TimeBound, ...],
        descending: bool,
        top: int,
        skip: int,
    ) -> list[Page]:
        """A page of observations of each (device, field) in one request (one statement each)."""
        queries = [
            observations_query(self._measurement, device, field, bounds, descending, top + 1, skip)
            for device, field in streams
        ]
        pages = []
        for (_, field), rows in zip(streams, self.statements(queries), strict=True):
            # InfluxDB's JSON writes a float field's 20.0 as 20: results of a measurement are floats.
            pairs = [(row["time"], _number(row[field])) for row in rows]
            pages.append(Page(pairs[:top], top > 0 and len(pairs) > top))  # $top=0: a count, no next page
        return pages

    def observation(self, device: str, field: str, time_ns: int) -> Any | None:
        bound = (TimeBound(">=", time_ns), TimeBound("<=", time_ns))
        rows = self.statements([observations_query(self._measurement, device, field, bound, False, 1, 0)])[0]
        return _number(rows[0][field]) if rows else None

    def count(self, device: str, field: str, bounds: tuple[TimeBound, ...]) -> int:
        rows = self.statements([count_query(self._measurement, device, field, bounds)])[0]
        return int(rows[0]["count"]) if rows else 0

    def close(self) -> None:
        self._http.clear()
