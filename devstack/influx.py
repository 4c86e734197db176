"""InfluxDB for tests and the demo: Debian's influxd 1.x, fronted by a small InfluxDB 2 write shim.

Production runs InfluxDB 2, and the ingestion writes with influxdb-client's v2 API. Debian has only
1.x, which lacks /api/v2/write, so `InfluxV2Shim` accepts v2 writes, checks the token, org and bucket
like InfluxDB 2 does (401/404), forwards the line protocol to influxd's /write, and maps the answer to
InfluxDB 2's status codes and bodies: a partial write (a field type conflict, points beyond retention)
is 422 `{"code": "unprocessable entity", "message": "failure writing points to database: partial
write: ... dropped=N"}`, and the rest of the request is stored, as influxd 1.x does too. A bucket may
have a retention period (an influxd retention policy of that duration, the database's default), which
`GET /api/v2/buckets?name=` reports as InfluxDB 2 does (`retentionRules[].everySeconds`); influxd
drops older points exactly as InfluxDB 2 does (the same coordinator code). Write requests are counted
per bucket (`write_requests`) so tests can measure how many a client made. It also serves
InfluxDB 2's v1-compatible /query (InfluxQL, token auth, database = bucket), which the latency probe
and the Grafana datasource use. Tests read with InfluxQL on influxd directly: the query language
that works on InfluxDB 1.x, 2.x and 3.x alike.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.process import ServerProcess, free_port

V2_PRECISION = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}


class Influxd(ServerProcess):
    name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.rpc_port = free_port()
        self.config_path = workdir / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        data = self.workdir / "data"
        self.config_path.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{data}/meta"\n'
            f'[data]\n  dir = "{data}/data"\n  wal-dir = "{data}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
        )
        return [shutil.which("influxd") or "/usr/bin/influxd", "-config", str(self.config_path)]

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
            return response.status == 204

    def write(self, database: str, lines: list[str]) -> None:
        """Write line protocol (ns precision) with the v1 API; raises on a refusal."""
        params = urllib.parse.urlencode({"db": database, "precision": "ns"})
        request = urllib.request.Request(f"{self.url}/write?{params}", data="\n".join(lines).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204, response.status

    def query(self, influxql: str, database: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement (raises on an InfluxQL error)."""
        params = {"q": influxql, "epoch": "ns"}
        if database:
            params["db"] = database
        request = urllib.request.Request(
            f"{self.url}/query", data=urllib.parse.urlencode(params).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.load(response)["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxQL error for {influxql!r}: {result['error']}")
        return result.get("series", [])

    def rows(self, influxql: str, database: str) -> list[dict[str, Any]]:
        """The first series as a list of column → value dicts."""
        return [
            dict(zip(series["columns"], values, strict=True))
            for series in self.query(influxql, database)
            for values in series["values"]
        ]

    def point_count(self, database: str, measurement: str = "telemetry") -> int:
        rows = self.rows(f'SELECT count("seq") FROM "{measurement}"', database)
        return rows[0]["count"] if rows else 0

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')


class InfluxV2Shim:
    """An InfluxDB 2 write endpoint (token, org, buckets) in front of an influxd 1.x."""

    def __init__(
        self, influxd: Influxd, org: str, token: str, port: int | None = None, host: str = "127.0.0.1"
    ):
        self.influxd = influxd
        self.org = org
        self.token = token
        self.buckets: dict[str, int] = {}  # name → retention in seconds (0: forever)
        self.write_requests: Counter[str] = Counter()  # bucket → POST /api/v2/write requests
        self.port = port or free_port()
        self._server = ThreadingHTTPServer((host, self.port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_bucket(self, name: str, retention_s: int = 0) -> None:
        """A bucket that writes may name: the influxd database behind it, and the shim accepting it.
        `retention_s` (0: forever; else at least 3600, influxd's and InfluxDB 2's minimum) becomes the
        database's default retention policy, which drops older points on write."""
        if retention_s:
            self.influxd.query(f'CREATE DATABASE "{name}" WITH DURATION {retention_s}s NAME "retention"')
        else:
            self.influxd.create_database(name)
        self.buckets[name] = retention_s

    def set_retention(self, name: str, retention_s: int) -> None:
        """Give an existing bucket a retention period (≥ 3600 s), as `influx bucket update --retention`:
        a new default retention policy of that duration, which later writes and queries use."""
        self.influxd.query(
            f'CREATE RETENTION POLICY "retention" ON "{name}" DURATION {retention_s}s REPLICATION 1 DEFAULT'
        )
        self.buckets[name] = retention_s

    def _bucket(self, name: str) -> dict[str, Any]:
        """A bucket as InfluxDB 2's API shows it (the fields influxdb-client reads)."""
        every = self.buckets[name]
        rules = (
            [{"type": "expire", "everySeconds": every, "shardGroupDurationSeconds": 3600}] if every else []
        )
        return {"id": name, "orgID": self.org, "type": "user", "name": name, "retentionRules": rules}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="influx-v2-shim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> InfluxV2Shim:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                payload = json.dumps(body).encode() if body else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path.startswith("/health"):
                    self._reply(200, {"name": "influxdb", "status": "pass"})
                elif self.path.startswith("/ping"):
                    self._reply(204)
                elif self.path.startswith("/query"):
                    self._query(urllib.parse.urlsplit(self.path).query)
                elif urllib.parse.urlsplit(self.path).path == "/api/v2/buckets":
                    self._buckets(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query)))
                else:
                    self._reply(404, {"code": "not found", "message": "path not found"})

            def _buckets(self, params: dict[str, str]) -> None:
                """InfluxDB 2's bucket list, filtered by name and org as it does."""
                if self.headers.get("Authorization") != f"Token {shim.token}":
                    return self._reply(401, {"code": "unauthorized", "message": "unauthorized access"})
                if params.get("org", shim.org) != shim.org:
                    message = f'organization name "{params["org"]}" not found'
                    return self._reply(404, {"code": "not found", "message": message})
                names = [params["name"]] if "name" in params else sorted(shim.buckets)
                found = [shim._bucket(name) for name in names if name in shim.buckets]
                return self._reply(200, {"links": {"self": "/api/v2/buckets"}, "buckets": found})

            def _query(self, query: str) -> None:
                """InfluxDB 2's v1-compatible InfluxQL endpoint: token auth, database = bucket name."""
                if self.headers.get("Authorization") != f"Token {shim.token}":
                    return self._reply(401, {"code": "unauthorized", "message": "unauthorized access"})
                params = dict(urllib.parse.parse_qsl(query))
                if params.get("db") not in shim.buckets:
                    return self._reply(404, {"code": "not found", "message": f"bucket {params.get('db')!r}"})
                forward = f"{shim.influxd.url}/query?" + urllib.parse.urlencode(params)
                try:
                    with urllib.request.urlopen(forward, timeout=30) as response:
                        return self._reply(response.status, json.load(response))
                except urllib.error.HTTPError as exc:
                    return self._reply(exc.code, json.loads(exc.read() or b"{}"))

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if url.path == "/query":
                    return self._query(url.query + "&" + body.decode())
                if url.path != "/api/v2/write":
                    return self._reply(404, {"code": "not found", "message": "path not found"})
                if self.headers.get("Authorization") != f"Token {shim.token}":
                    return self._reply(401, {"code": "unauthorized", "message": "unauthorized access"})
                query = dict(urllib.parse.parse_qsl(url.query))
                if query.get("org") != shim.org:
                    return self._reply(
                        404, {"code": "not found", "message": f'organization "{query.get("org")}" not found'}
                    )
                bucket = query.get("bucket")
                if bucket not in shim.buckets:
                    return self._reply(404, {"code": "not found", "message": f'bucket "{bucket}" not found'})
                shim.write_requests[bucket] += 1
                precision = V2_PRECISION.get(query.get("precision", "ns"))
                if precision is None:
                    return self._reply(400, {"code": "invalid", "message": "invalid precision"})
                forward = urllib.request.Request(
                    f"{shim.influxd.url}/write?"
                    + urllib.parse.urlencode({"db": bucket, "precision": precision}),
                    data=body,
                    method="POST",
                    headers={"Content-Encoding": self.headers.get("Content-Encoding", "identity")},
                )
                try:
                    with urllib.request.urlopen(forward, timeout=30) as response:
                        return self._reply(response.status)
                except urllib.error.HTTPError as exc:
                    message = json.loads(exc.read() or b"{}").get("error", exc.reason)
                    if exc.code == 400 and "partial write" in message:
                        # InfluxDB 2's answer when it dropped some points and stored the rest.
                        body = {
                            "code": "unprocessable entity",
                            "message": f"failure writing points to database: {message}",
                        }
                        return self._reply(422, body)
                    return self._reply(exc.code, {"code": "invalid", "message": message})
                except (urllib.error.URLError, OSError) as exc:
                    return self._reply(503, {"code": "unavailable", "message": str(exc)})

        return Handler
