"""The SensorThings API stage as a client uses it: a real `python -m sensorthings_api` (uvicorn on a
free loopback port) over the session's real InfluxDB, every response checked against the JSON
encoding of OGC 18-088 (tests/sensorthings_schemas.py)."""

from __future__ import annotations

import json
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.process import free_port, http_get, poll
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess
from tests.sensorthings_schemas import ERROR, check
from twinpipe.config import NUCLEO_FIELDS

T0 = 1_796_000_000_000_000_000  # 2026-11-30T00:53:20Z in ns
STEP = 1_000_000_000  # one reading per second, as the board sends them
POINTS = 2_500


def nucleo_value(field: str, i: int) -> float:
    """0.00 on the first reading (a real board reads 0.00), then distinct values per field and time."""
    return 0.0 if i == 0 else round(NUCLEO_FIELDS.index(field) * 10 + i * 0.001, 3)


@dataclass
class Server:
    url: str  # http://127.0.0.1:<port>/v1.1
    health_port: int
    process: StageProcess

    def get(self, path_or_url: str, **params: str) -> tuple[int, Any]:
        url = path_or_url if path_or_url.startswith("http") else f"{self.url}/{path_or_url}"
        if params:
            url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        status, body = http_get(url)
        return status, json.loads(body) if body else None

    def ok(self, path_or_url: str, **params: str) -> Any:
        status, body = self.get(path_or_url, **params)
        assert status == 200, (path_or_url, params, status, body)
        return body


def write_lines(stack: LocalStack, bucket: str, lines: list[str]) -> None:
    for start in range(0, len(lines), 5000):
        request = urllib.request.Request(
            f"{stack.influxd.url}/write?db={bucket}&precision=ns",
            data="\n".join(lines[start : start + 5000]).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 204


def start_server(stack: LocalStack, workdir: Path, override: dict[str, Any]) -> Server:
    port, health_port = free_port(), free_port()
    config = merged(
        stack.config(),
        merged(
            {
                "sensorthings": {"host": "127.0.0.1", "port": port},
                "health": {"host": "127.0.0.1", "port": health_port},
            },
            override,
        ),
    )
    path = write_config(workdir / f"sensorthings-{port}.yaml", config)
    process = StageProcess("sensorthings_api", path, workdir, env=stack.env()).start()
    server = Server(f"http://127.0.0.1:{port}/v1.1", health_port, process)
    poll(lambda: http_get(server.url)[0], lambda s: s == 200 or not process.running(), 30, "API answering")
    assert process.running(), process.log()
    return server


@pytest.fixture(scope="module")
def sta(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bucket = "sta" + str(free_port())
    stack.influx.add_bucket(bucket)
    lines = []
    for i in range(POINTS):
        fields = ",".join(f"{f}={nucleo_value(f, i)}" for f in NUCLEO_FIELDS)
        lines.append(f'telemetry,device=nucleo-1 {fields},seq={i}i,boot="b1" {T0 + i * STEP}')
    for i in range(10):
        lines.append(
            f"telemetry,device=sim-1 temperature={20 + i},humidity=50,pressure=1000,seq={i}i {T0 + i * STEP}"
        )
        lines.append(f"telemetry,device=sim-2 temperature={30 + i},humidity=40,seq={i}i {T0 + i * STEP}")
        lines.append(f"telemetry,device=stray-9 temperature=1,seq={i}i {T0 + i * STEP}")  # no thing matches
    # A replayed reading (record/replay tags them origin=replay) is one more observation of sim-1.
    lines.append(f"telemetry,device=sim-1,origin=replay temperature=99,seq=0i {T0 + 20 * STEP}")
    write_lines(stack, bucket, lines)
    workdir = tmp_path_factory.mktemp("sensorthings")
    server = start_server(stack, workdir, {"influxdb": {"bucket": bucket}, "sensorthings": {"max_top": 1000}})
    yield server
    assert server.process.stop() == 0, server.process.log()


def test_service_root_lists_every_collection(sta: Server) -> None:
    root = sta.ok("")
    names = {entry["name"]: entry["url"] for entry in root["value"]}
    assert set(names) == {
        "Things",
        "Locations",
        "HistoricalLocations",
        "Datastreams",
        "Sensors",
        "ObservedProperties",
        "Observations",
    }
    assert names["Things"] == f"{sta.url}/Things"
    assert any("datamodel" in c for c in root["serverSettings"]["conformance"])


def test_one_thing_per_model_device_and_per_device_influxdb_knows_that_a_glob_matches(sta: Server) -> None:
    things = sta.ok("Things", **{"$expand": "Locations,Datastreams", "$count": "true"})
    check(things, "Thing", True)
    by_id = {t["@iot.id"]: t for t in things["value"]}
    assert set(by_id) == {"nucleo-1", "greensboro", "sand-point", "sim-1", "sim-2"}  # not stray-9
    assert things["@iot.count"] == 5
    assert {d["@iot.id"] for d in by_id["nucleo-1"]["Datastreams"]} == {
        f"nucleo-1:{f}" for f in NUCLEO_FIELDS
    }
    assert {d["@iot.id"] for d in by_id["sim-1"]["Datastreams"]} == {
        "sim-1:humidity",
        "sim-1:pressure",
        "sim-1:temperature",
    }
    assert {d["@iot.id"] for d in by_id["sim-2"]["Datastreams"]} == {"sim-2:humidity", "sim-2:temperature"}
    assert by_id["sim-1"]["name"] == "Simulated board sim-1"
    [where] = by_id["greensboro"]["Locations"]
    assert where["location"] == {"type": "Point", "coordinates": [-79.95, 36.1, 273.0]}
    assert {d["@iot.id"] for d in by_id["greensboro"]["Datastreams"]} == {
        f"greensboro:{v}" for v in ("temperature", "humidity", "pressure")
    }  # declared, before any data


def test_datastream_carries_unit_observed_property_and_sensor_from_the_model(sta: Server) -> None:
    stream = sta.ok(
        "Datastreams('nucleo-1:wall1_temperature')", **{"$expand": "Thing,Sensor,ObservedProperty"}
    )
    check(stream, "Datastream", False)
    assert stream["name"] == "Wall 1 temperature"
    assert stream["unitOfMeasurement"] == {
        "name": "degree Celsius",
        "symbol": "°C",
        "definition": "https://ucum.org/ucum#Cel",
    }
    assert stream["observationType"].endswith("OM_Measurement")
    assert stream["Thing"]["@iot.id"] == "nucleo-1"
    assert stream["Sensor"]["@iot.id"] == "nucleo-sensors"
    assert stream["ObservedProperty"]["definition"] == "https://qudt.org/vocab/quantitykind/Temperature"
    humidity = sta.ok("Datastreams('sim-2:humidity')")
    assert humidity["unitOfMeasurement"]["symbol"] == "%"


# entity type of each navigation property (None: a collection of that type)
TO_ONE = {"Thing", "Sensor", "ObservedProperty", "Datastream"}
TYPE_OF = {
    "Things": "Thing",
    "Locations": "Location",
    "HistoricalLocations": "HistoricalLocation",
    "Datastreams": "Datastream",
    "Sensors": "Sensor",
    "ObservedProperties": "ObservedProperty",
    "Observations": "Observation",
    "Thing": "Thing",
    "Sensor": "Sensor",
    "ObservedProperty": "ObservedProperty",
    "Datastream": "Datastream",
}


def test_every_collection_entity_and_navigation_link_answers_in_the_standard_encoding(sta: Server) -> None:
    followed = 0
    for collection in (
        "Things",
        "Locations",
        "HistoricalLocations",
        "Datastreams",
        "Sensors",
        "ObservedProperties",
    ):
        page = sta.ok(collection, **{"$top": "1000"})
        check(page, TYPE_OF[collection], True)
        assert collection == "HistoricalLocations" or page["value"], collection
        for entity in page["value"]:
            assert sta.ok(entity["@iot.selfLink"]) == entity
            for key, link in entity.items():
                if not key.endswith("@iot.navigationLink"):
                    continue
                name = key.removesuffix("@iot.navigationLink")
                body = sta.ok(link, **({"$top": "3"} if name == "Observations" else {}))
                check(body, TYPE_OF[name], name not in TO_ONE)
                followed += 1
    assert followed > 50


def test_paging_follows_next_link_through_every_observation_once_in_order(sta: Server) -> None:
    field = "wall2_humidity"
    url = f"{sta.url}/Datastreams('nucleo-1:{field}')/Observations?$top=1000&$count=true"
    seen: list[dict[str, Any]] = []
    pages = 0
    while url:
        page = sta.ok(url)
        check(page, "Observation", True)
        assert page["@iot.count"] == POINTS
        seen.extend(page["value"])
        url = page.get("@iot.nextLink")
        pages += 1
    assert pages == 3
    assert [o["@iot.id"] for o in seen] == [f"nucleo-1:{field}:{T0 + i * STEP}" for i in range(POINTS)]
    assert [o["result"] for o in seen] == [nucleo_value(field, i) for i in range(POINTS)]
    assert all(isinstance(o["result"], float) for o in seen)  # 0.0 stays a float, not JSON 0
    assert seen[0]["phenomenonTime"] == "2026-11-30T00:53:20Z" and seen[0]["result"] == 0.0
    descending = sta.ok(
        f"Datastreams('nucleo-1:{field}')/Observations",
        **{"$orderby": "phenomenonTime desc", "$top": "2", "$skip": "1"},
    )
    assert [o["result"] for o in descending["value"]] == [
        nucleo_value(field, POINTS - 2),
        nucleo_value(field, POINTS - 3),
    ]


def test_filter_selects_a_time_range(sta: Server) -> None:
    path = "Datastreams('nucleo-1:ambient_temperature')/Observations"
    start, end = "2026-11-30T00:55:00Z", "2026-11-30T00:56:40Z"  # T0 + 100 s, T0 + 200 s
    page = sta.ok(
        path, **{"$filter": f"phenomenonTime ge {start} and phenomenonTime lt {end}", "$count": "true"}
    )
    assert page["@iot.count"] == 100 and len(page["value"]) == 100
    assert page["value"][0]["phenomenonTime"] == start
    assert page["value"][-1]["phenomenonTime"] == "2026-11-30T00:56:39Z"
    # The same instants with a zone offset; gt/le move both ends by one reading.
    shifted = sta.ok(
        path,
        **{
            "$filter": "resultTime gt 2026-11-30T01:55:00+01:00 and "
            "phenomenonTime le 2026-11-30T01:56:40+01:00"
        },
    )
    assert [o["phenomenonTime"] for o in shifted["value"]][:: len(shifted["value"]) - 1] == [
        "2026-11-30T00:55:01Z",
        end,
    ]
    nothing = sta.ok(path, **{"$filter": f"phenomenonTime lt {start} and phenomenonTime gt {end}"})
    assert nothing["value"] == [] and "@iot.nextLink" not in nothing


def test_latest_observation_of_every_datastream_in_one_request(sta: Server) -> None:
    page = sta.ok(
        "Datastreams", **{"$expand": "Observations($top=1;$orderby=phenomenonTime desc)", "$top": "100"}
    )
    check(page, "Datastream", True)
    latest = {d["@iot.id"]: d["Observations"] for d in page["value"]}
    for field in NUCLEO_FIELDS:
        [last] = latest[f"nucleo-1:{field}"]
        assert last["result"] == nucleo_value(field, POINTS - 1)
        assert last["@iot.id"] == f"nucleo-1:{field}:{T0 + (POINTS - 1) * STEP}"
    assert latest["sim-1:temperature"][0]["result"] == 99  # the replayed reading is the newest
    assert latest["sim-2:temperature"][0]["result"] == 39
    with_data = [d for d in page["value"] if d["Observations"]]
    assert len(with_data) >= len(NUCLEO_FIELDS) + 4
    assert all("Observations@iot.nextLink" in d for d in with_data)  # each has more than one
    assert latest["greensboro:pressure"] == []  # declared, no reading yet


def test_an_observation_is_found_again_by_its_id_and_leads_to_its_datastream(sta: Server) -> None:
    [observation] = sta.ok(
        "Datastreams('nucleo-1:wall1_humidity')/Observations", **{"$top": "1", "$skip": "1234"}
    )["value"]
    again = sta.ok(observation["@iot.selfLink"], **{"$expand": "Datastream"})
    check(again, "Observation", False)
    assert again["result"] == nucleo_value("wall1_humidity", 1234)
    assert again["Datastream"]["@iot.id"] == "nucleo-1:wall1_humidity"


@pytest.mark.parametrize(
    ("path", "params", "status", "says"),
    [
        ("Things('nope')", {}, 404, "no Thing 'nope'"),
        ("Things('stray-9')", {}, 404, "no Thing 'stray-9'"),
        ("Datastreams('nucleo-1:nope')", {}, 404, "no datastream 'nope'"),
        ("Datastreams('nucleo-1')", {}, 404, "'<device>:<value>'"),
        ("Observations('nucleo-1:ambient_temperature:1')", {}, 404, "no reading at that time"),
        ("Nonsense", {}, 404, "the collections are"),
        ("Things('nucleo-1')/Sensors", {}, 404, "it has Locations, HistoricalLocations, Datastreams"),
        ("Things", {"$top": "abc"}, 400, "$top='abc': expected a non-negative integer"),
        ("Things", {"$top": "1001"}, 400, "sensorthings.max_top"),
        ("Things", {"$select": "name"}, 400, "supported are $top"),
        ("Things", {"$filter": "name eq 'x'"}, 400, "only time ranges"),
        ("Things", {"$orderby": "name"}, 400, "order by id only"),
        (
            "Datastreams('nucleo-1:ambient_temperature')/Observations",
            {"$filter": "result gt 5"},
            400,
            "phenomenonTime ge|gt|le|lt",
        ),
        (
            "Datastreams('nucleo-1:ambient_temperature')/Observations",
            {"$filter": "phenomenonTime ge yesterday"},
            400,
            "ISO 8601",
        ),
        (
            "Datastreams('nucleo-1:ambient_temperature')/Observations",
            {"$orderby": "result desc"},
            400,
            "phenomenonTime",
        ),
        ("Observations", {}, 400, "read per datastream"),
        ("Things", {"$expand": "Datastreams(($top=1)"}, 400, "unbalanced"),
    ],
)
def test_bad_requests_are_answered_with_a_json_error_that_says_why(
    sta: Server, path: str, params: dict[str, str], status: int, says: str
) -> None:
    got, body = sta.get(path, **params)
    assert got == status, body
    check_error(body)
    assert says in body["message"], body


def check_error(body: Any) -> None:
    from jsonschema import validate

    validate(body, ERROR)


def test_requests_are_counted_and_timed_on_metrics(sta: Server) -> None:
    sta.ok("Sensors")
    sta.get("Sensors('nope')")
    _, metrics = http_get(f"http://127.0.0.1:{sta.health_port}/metrics")
    assert 'twinpipe_sensorthings_requests_total{resource="Sensors",status="200"}' in metrics
    assert 'twinpipe_sensorthings_requests_total{resource="Sensors",status="404"} 1.0' in metrics
    assert 'twinpipe_sensorthings_request_duration_seconds_count{resource="Sensors"}' in metrics
    assert http_get(f"http://127.0.0.1:{sta.health_port}/readyz")[0] == 200


def test_not_ready_naming_influxdb_when_it_does_not_answer(stack: LocalStack, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    server = start_server(
        stack,
        tmp_path,
        {"influxdb": {"url": dead}, "sensorthings": {"base_url": "https://twin.example.org/"}},
    )
    try:
        status, body = http_get(f"http://127.0.0.1:{server.health_port}/readyz")
        assert status == 503
        assert "unreachable" in json.loads(body)["reasons"]["influxdb"]
        assert (
            http_get(f"http://127.0.0.1:{server.health_port}/healthz")[0] == 200
        )  # a restart would not help
        got, error = server.get("Things")
        assert got == 503 and dead in error["message"]
        assert (
            server.ok("")["value"][0]["url"] == "https://twin.example.org/v1.1/Things"
        )  # sensorthings.base_url
    finally:
        assert server.process.stop() == 0


def test_measure_latest_observation_and_a_1000_observation_page(
    sta: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    def timed(path: str, **params: str) -> float:
        started = time.perf_counter()
        sta.ok(path, **params)
        return time.perf_counter() - started

    latest = [
        timed(
            "Datastreams('nucleo-1:ambient_temperature')/Observations",
            **{"$top": "1", "$orderby": "phenomenonTime desc"},
        )
        for _ in range(30)
    ]
    every_latest = [
        timed("Datastreams", **{"$expand": "Observations($top=1;$orderby=phenomenonTime desc)"})
        for _ in range(10)
    ]
    page = [
        timed("Datastreams('nucleo-1:ambient_temperature')/Observations", **{"$top": "1000", "$skip": "1000"})
        for _ in range(10)
    ]
    with capsys.disabled():
        ms = {
            name: statistics.median(runs) * 1000
            for name, runs in [("latest", latest), ("all", every_latest), ("page", page)]
        }
        streams = len(sta.ok("Datastreams")["value"])
        print(
            f"\nSensorThings latency (median of runs): latest observation {ms['latest']:.1f} ms, latest of "
            f"all {streams} datastreams {ms['all']:.1f} ms, 1000-observation page {ms['page']:.1f} ms"
        )
    assert statistics.median(latest) < 0.5 and statistics.median(page) < 5.0
