"""The SensorThings API's pure parts: ids, instants, paths, query options, links, InfluxQL, the catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensorthings_api.api import Catalog, next_link, next_link_for
from sensorthings_api.ids import (
    BadRequest,
    NotFound,
    entity_path,
    format_instant,
    observation_id,
    parse_instant,
    parse_path,
    split_datastream_id,
    split_observation_id,
)
from sensorthings_api.metrics import resource_of
from sensorthings_api.options import Expand, TimeBound, parse_expand, parse_filter, parse_options
from sensorthings_api.store import ident, literal, observations_query
from twinpipe.config import ModelConfig
from twinpipe.model import TwinModel

devices = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
values = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,63}", fullmatch=True)
# InfluxDB's time range: int64 nanoseconds (about 1677-09-21 to 2262-04-11).
times_ns = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)


@given(devices, values, times_ns)
def test_observation_ids_round_trip(device: str, value: str, time_ns: int) -> None:
    assert split_observation_id(observation_id(device, value, time_ns)) == (device, value, time_ns)
    assert split_datastream_id(f"{device}:{value}") == (device, value)


@given(st.text(min_size=1, max_size=40))
def test_anything_else_is_no_observation_or_a_known_one(text: str) -> None:
    try:
        device, value, time_ns = split_observation_id(text)
    except NotFound as exc:
        assert "'<device>:<value>:<time in ns>'" in str(exc)
    else:
        assert text == f"{device}:{value}:{time_ns}" or text.endswith(f":{time_ns}")


@given(times_ns)
def test_instants_round_trip_to_the_nanosecond(time_ns: int) -> None:
    text = format_instant(time_ns)
    assert text.endswith("Z") and "." not in text or not text.split(".")[1].rstrip("Z").endswith("0")
    assert parse_instant(text) == time_ns


@given(
    st.datetimes(min_value=datetime(1700, 1, 2), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_instants_with_a_zone_offset_are_the_same_moment(moment: datetime, offset_min: int) -> None:
    zone = timezone(timedelta(minutes=offset_min))
    local = moment.replace(tzinfo=zone)
    text = local.isoformat()
    expected = (local - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2026-11-30", "2026-11-30T20:00:00", "yesterday", "2026-02-30T00:00:00Z", "2026-11-30T20:00:00+25:00"],
)
def test_instants_without_a_zone_or_impossible_are_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="instant"):
        parse_instant(text)


@given(
    st.sampled_from(["Things", "Datastreams", "Observations", "Locations"]), st.text(min_size=1, max_size=30)
)
def test_entity_paths_parse_back_to_their_collection_and_id(collection: str, entity_id: str) -> None:
    from urllib.parse import unquote

    [segment] = parse_path(unquote(entity_path(collection, entity_id)))
    assert (segment.name, segment.id) == (collection, entity_id)


def test_paths_navigate_and_refuse_what_is_not_a_resource() -> None:
    assert [(s.name, s.id) for s in parse_path("Datastreams('a:b')/Thing/Locations")] == [
        ("Datastreams", "a:b"),
        ("Thing", None),
        ("Locations", None),
    ]
    assert parse_path("Things('it''s')")[0].id == "it's"
    for bad in ["Things(nucleo)", "Things('a')x", "Things/$value", "Th ings"]:
        with pytest.raises(NotFound):
            parse_path(bad)


bounds = st.lists(
    st.tuples(st.sampled_from(["ge", "gt", "le", "lt"]), st.integers(min_value=-(2**62), max_value=2**62)),
    min_size=1,
    max_size=4,
)


@given(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=10**9 - 1),
    st.booleans(),
    st.sampled_from([None, "asc", "desc"]),
    bounds,
)
def test_options_parse_to_what_was_asked(
    top: int, skip: int, count: bool, order: str | None, clauses
) -> None:
    text = " and ".join(f"phenomenonTime {op} {format_instant(ns)}" for op, ns in clauses)
    params = {"$top": str(top), "$skip": str(skip), "$count": str(count).lower(), "$filter": text}
    if order:
        params["$orderby"] = f"phenomenonTime {order}"
    options = parse_options(params, max_top=1000)
    assert (options.top, options.skip, options.count, options.descending) == (
        top,
        skip,
        count,
        order == "desc",
    )
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    assert options.bounds == tuple(TimeBound(ops[op], ns) for op, ns in clauses)
    # The nextLink of an expanded collection carries the same options on to the next page.
    link = next_link_for("http://h/v1.1/Datastreams('a:b')/Observations", options, skip + top, top)
    from urllib.parse import parse_qsl, urlsplit

    again = parse_options(dict(parse_qsl(urlsplit(link).query)), max_top=1000)
    assert (again.bounds, again.descending, again.skip) == (options.bounds, options.descending, skip + top)


@given(st.dictionaries(st.from_regex(r"\$[a-z]{1,10}", fullmatch=True), st.text(max_size=10), max_size=3))
def test_unknown_options_are_refused_naming_the_supported_ones(params: dict[str, str]) -> None:
    unknown = {k for k in params if k not in ("$top", "$skip", "$count", "$orderby", "$filter", "$expand")}
    try:
        parse_options(params, max_top=100)
    except BadRequest as exc:
        assert not unknown or "supported are $top" in str(exc)
    else:
        assert not unknown


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"$top": "-1"}, "non-negative integer"),
        ({"$top": "101"}, "exceeds the largest page, 100"),
        ({"$count": "yes"}, "true or false"),
        ({"$orderby": "phenomenonTime up"}, "asc|desc"),
        ({"$orderby": "a,b"}, "one property"),
        ({"$filter": "phenomenonTime eq 2026-11-30T00:00:00Z"}, "only time ranges"),
        (
            {"$filter": "phenomenonTime ge 2026-11-30T00:00:00Z or phenomenonTime lt 2026-12-01T00:00:00Z"},
            "only time",
        ),
        ({"$filter": "result gt 5"}, "phenomenonTime ge|gt|le|lt"),
        ({"$expand": "Observations($top=1"}, "unbalanced"),
        ({"$expand": "Observations(top=1)"}, "$option=value"),
        ({"$expand": "Observations($top=1000)"}, "exceeds the largest page"),
    ],
)
def test_bad_options_say_what_is_wrong(params: dict[str, str], says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_options(params, max_top=100)
    assert says in str(caught.value)


def test_expand_nests_paths_and_options() -> None:
    expand = parse_expand(
        "Locations,Datastreams/Sensor,Datastreams/Thing,Observations($top=1;$orderby=phenomenonTime desc;"
        "$expand=Datastream($expand=Thing))",
        max_top=100,
    )
    assert [e.name for e in expand] == ["Locations", "Datastreams", "Observations"]
    assert [e.name for e in expand[1].options.expand] == ["Sensor", "Thing"]
    observations = expand[2].options
    assert (observations.top, observations.descending) == (1, True)
    assert observations.expand == (Expand("Datastream", parse_options({"$expand": "Thing"}, max_top=100)),)
    assert parse_filter(
        "(phenomenonTime GE 2026-11-30T00:00:00Z) AND resultTime lt 2026-11-30T00:00:01Z"
    ) == (
        TimeBound(">=", parse_instant("2026-11-30T00:00:00Z")),
        TimeBound("<", parse_instant("2026-11-30T00:00:01Z")),
    )


def test_next_link_keeps_every_option_and_moves_skip() -> None:
    link = next_link("http://h:1/v1.1", "Things", {"$top": "2", "$count": "true", "$skip": "4"}, 6)
    assert link == "http://h:1/v1.1/Things?$top=2&$count=true&$skip=6"
    spaced = next_link(
        "http://h/v1.1", "/Datastreams('a:b')/Observations", {"$orderby": "phenomenonTime desc"}, 3
    )
    assert spaced == "http://h/v1.1/Datastreams('a:b')/Observations?$orderby=phenomenonTime%20desc&$skip=3"


@given(devices, values, st.booleans(), st.integers(0, 10**6), st.integers(0, 10**6))
def test_observations_query_is_one_series_in_time_order(device, value, descending, limit, offset) -> None:
    query = observations_query("telemetry", device, value, (TimeBound(">=", 5),), descending, limit, offset)
    assert query.startswith(f'SELECT "{value}" FROM "telemetry" WHERE "device" = \'{device}\' AND time >= 5')
    assert f"ORDER BY time {'DESC' if descending else 'ASC'} LIMIT {limit}" in query
    assert (f"OFFSET {offset}" in query) == bool(offset)


def test_influxql_quoting_cannot_be_escaped() -> None:
    assert ident('a"b') == '"a\\"b"'
    assert literal("it's\\") == "'it\\'s\\\\'"


def test_resource_label_is_bounded() -> None:
    assert resource_of("") == "root"
    assert resource_of("Things('x')/Datastreams") == "Things"
    assert resource_of("Whatever('x')") == "other"


def test_catalog_has_model_devices_and_the_glob_matches_influxdb_knows() -> None:
    model = TwinModel(ModelConfig())
    known = {"sim-3": {"temperature", "seq", "boot", "colour"}, "stray": {"temperature"}, "nucleo-1": set()}
    catalog = Catalog(model, lambda: known)
    assert catalog.devices() == ["greensboro", "nucleo-1", "sand-point", "sim-3"]
    assert [s.id for s in catalog.datastreams("sim-3")] == [
        "sim-3:temperature"
    ]  # seq, boot, colour are no datastreams
    assert len(catalog.datastreams("nucleo-1")) == 6  # declared, even before data arrives
    with pytest.raises(NotFound, match="no Thing 'sim-4'"):
        catalog.thing("sim-4")  # matches the glob, but InfluxDB has never seen it
    with pytest.raises(NotFound, match="no datastream 'colour'"):
        catalog.datastream("sim-3:colour")


def test_the_config_section_names_a_page_size_beyond_the_largest_and_a_link_base_that_is_no_url() -> None:
    from twinpipe.config import ConfigError, parse_config

    for section, says in [
        ({"default_top": 500, "max_top": 100}, "default_top (500) must not exceed max_top (100)"),
        (
            {"base_url": "twin.example.org"},
            "expected an http:// or https:// URL such as http://twin.example.org",
        ),
    ]:
        with pytest.raises(ConfigError) as caught:
            parse_config({"sensorthings": section}, {})
        [error] = caught.value.errors
        assert error.startswith("sensorthings") and says in error


class MemoryStore:
    """The Store's interface over a list of points, for following nextLinks without a server."""

    def __init__(self, points: dict[tuple[str, str], list[tuple[int, float]]]) -> None:
        self.points = {stream: sorted(rows) for stream, rows in points.items()}

    def devices(self) -> list[str]:
        return sorted({device for device, _ in self.points})

    def numeric_fields(self) -> list[str]:
        return sorted({field for _, field in self.points})

    def present(self, streams: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return {stream for stream in streams if self.points.get(stream)}

    def _rows(self, stream: tuple[str, str], bounds: tuple[TimeBound, ...]) -> list[tuple[int, float]]:
        ops = {">=": int.__ge__, ">": int.__gt__, "<=": int.__le__, "<": int.__lt__}
        return [p for p in self.points.get(stream, []) if all(ops[b.op](p[0], b.time_ns) for b in bounds)]

    def observations(self, streams, bounds, descending, top, skip):
        from sensorthings_api.store import Page

        pages = []
        for stream in streams:
            rows = self._rows(stream, bounds)[:: -1 if descending else 1][skip : skip + top + 1]
            pages.append(Page(rows[:top], top > 0 and len(rows) > top))
        return pages

    def count(self, device: str, field: str, bounds: tuple[TimeBound, ...]) -> int:
        return len(self._rows((device, field), bounds))


@given(
    st.lists(st.integers(min_value=0, max_value=10**12), unique=True, min_size=1, max_size=60),
    st.integers(min_value=0, max_value=25),
    st.booleans(),
    st.sampled_from([None, 100, 10**9]),
)
def test_following_next_links_yields_every_observation_once_in_order_and_ends(
    times: list[int], top: int, descending: bool, from_ns: int | None
) -> None:
    from urllib.parse import parse_qsl, urlsplit

    from sensorthings_api.api import Api
    from twinpipe.config import SensorThingsConfig

    store = MemoryStore({("sim-1", "temperature"): [(t, t / 7) for t in times]})
    api = Api(SensorThingsConfig(default_top=10, max_top=100), TwinModel(ModelConfig()), store)  # type: ignore[arg-type]
    params = {
        "$top": str(top),
        "$orderby": f"phenomenonTime {'desc' if descending else 'asc'}",
        "$count": "true",
    }
    if from_ns is not None:
        params["$filter"] = f"phenomenonTime ge {format_instant(from_ns)}"
    path, seen, requests = "Datastreams('sim-1:temperature')/Observations", [], 0
    while True:
        body = api.get(path, params, "http://h/v1.1")
        requests += 1
        seen += [o["phenomenonTime"] for o in body["value"]]
        if "@iot.nextLink" not in body:
            break
        link = urlsplit(body["@iot.nextLink"])
        path, params = link.path.removeprefix("/v1.1/"), dict(parse_qsl(link.query))
        assert requests <= len(times) + 1
    expected = sorted((t for t in times if from_ns is None or t >= from_ns), reverse=descending)
    assert body["@iot.count"] == len(expected)
    assert seen == ([format_instant(t) for t in expected] if top else [])


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59Z",
        "1500-01-01T00:00:00Z",
        "2262-04-12T00:00:00Z",
    ],
)
def test_instants_beyond_int64_nanoseconds_are_a_bad_request_not_a_server_error(text: str) -> None:
    """Found by a new-user run: these gave 500 (OverflowError) or 503 (InfluxDB's int64 parse error)."""
    with pytest.raises(BadRequest, match="outside the instants InfluxDB can store"):
        parse_instant(text)
