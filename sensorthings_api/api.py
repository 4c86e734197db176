"""Answering a SensorThings request: path + query options → (status, JSON body). No web framework here.

`Api.get(path, params, base)` resolves the path (`Things('nucleo-1')/Datastreams`) step by step
into an entity or a collection, applies the options and renders the JSON encoding. Entities other
than Observations come from the model (`twinpipe.model.TwinModel`) plus the devices InfluxDB knows;
Observations come from InfluxDB (`store.Store`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from threading import Lock
from typing import Any
from urllib.parse import quote, urlencode

from sensorthings_api import entities
from sensorthings_api.ids import (
    COLLECTIONS,
    BadRequest,
    NotFound,
    Segment,
    entity_path,
    format_instant,
    parse_path,
    split_datastream_id,
    split_observation_id,
)
from sensorthings_api.options import TIME_PROPERTIES, Expand, Options, parse_options
from sensorthings_api.store import Store
from twinpipe.config import SensorThingsConfig
from twinpipe.model import ResolvedDatastream, ResolvedThing, TwinModel

CONFORMANCE = [
    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
]
ID_ORDER = ("id", "@iot.id")


@dataclass(frozen=True, slots=True)
class ObservationsOf:
    """The Observations collection of one datastream (read lazily, page by page, from InfluxDB)."""

    stream: ResolvedDatastream


@dataclass(frozen=True, slots=True)
class Target:
    """What a path resolved to: one entity (`key`) or a collection (`keys`, or observations)."""

    entity: str  # entity type: Thing, Location, ...
    key: Any = None
    keys: list[Any] | None = None
    observations: ObservationsOf | None = None

    @property
    def is_collection(self) -> bool:
        return self.keys is not None or self.observations is not None


class Catalog:
    """The model's entities, with the devices InfluxDB knows: one Thing per device.

    One per request: `inventory` (device → fields with data) is read at most once, when first
    needed, so a request sees one consistent set and one that needs no InfluxDB does not ask it."""

    def __init__(self, model: TwinModel, inventory: Callable[[], dict[str, set[str]]]) -> None:
        self.model = model
        self._inventory = inventory
        self._known: dict[str, set[str]] | None = None
        self._exact = [e.devices for e in model.config.things.values() if not e.is_pattern()]

    def _device_fields(self) -> dict[str, set[str]]:
        if self._known is None:
            self._known = self._inventory()
        return self._known

    def devices(self) -> list[str]:
        known = self._device_fields()
        found = set(self._exact) | {d for d in known if self.model.thing(d) is not None}
        return sorted(found)

    def thing(self, device: str) -> ResolvedThing:
        resolved = self.model.thing(device)
        if resolved is None or (device not in self._exact and device not in self._device_fields()):
            raise NotFound(f"no Thing {device!r}: not a device of the model nor one InfluxDB holds points of")
        return resolved

    def datastreams(self, device: str) -> list[ResolvedDatastream]:
        thing = self.thing(device)
        values = set(thing.declared) | self._device_fields().get(device, set())
        streams = (self.model.datastream(device, value) for value in sorted(values))
        return [stream for stream in streams if stream is not None]

    def all_datastreams(self) -> list[ResolvedDatastream]:
        return [stream for device in self.devices() for stream in self.datastreams(device)]

    def datastream(self, datastream_id: str) -> ResolvedDatastream:
        device, value = split_datastream_id(datastream_id)
        if not any(s.value == value for s in self.datastreams(device)):
            raise NotFound(f"no Datastream {datastream_id!r}: device {device!r} has no datastream {value!r}")
        stream = self.model.datastream(device, value)
        assert stream is not None
        return stream


def inventory(model: TwinModel, store: Store) -> dict[str, set[str]]:
    """Device → the fields it has data for that are datastreams of its thing, for the devices of a
    thing. Index reads (tag values, field keys) and one cheap statement per candidate pair."""
    devices = [d for d in store.devices() if model.thing(d) is not None]
    fields = store.numeric_fields()
    candidates = [(d, f) for d in devices for f in fields if model.datastream(d, f) is not None]
    present = store.present(candidates)
    found: dict[str, set[str]] = {device: set() for device in devices}
    for device, field in present:
        found[device].add(field)
    return found


class Api:
    """The stage's entry point: one `Request` per HTTP request, sharing a cached inventory."""

    def __init__(self, config: SensorThingsConfig, model: TwinModel, store: Store) -> None:
        self.config = config
        self.model = model
        self.store = store
        self._lock = Lock()
        self._cached: tuple[float, dict[str, set[str]]] | None = None

    def inventory(self) -> dict[str, set[str]]:
        """`inventory()`, reused for sensorthings.devices_cache_s."""
        with self._lock:
            cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.config.devices_cache_s:
            return cached[1]
        found = inventory(self.model, self.store)
        with self._lock:
            self._cached = (time.monotonic(), found)
        return found

    def get(self, path: str, params: Mapping[str, str], base: str) -> dict[str, Any]:
        """`path` below /v1.1 ("" for the service root), the query parameters, and the link base
        (`http://host:port/v1.1`). Raises BadRequest, NotFound or StoreUnavailable."""
        return Request(self.config, self.store, Catalog(self.model, self.inventory)).get(path, params, base)


class Request:
    """Answers one request: resolves the path, applies the options, renders the entities."""

    def __init__(self, config: SensorThingsConfig, store: Store, catalog: Catalog) -> None:
        self.config = config
        self.store = store
        self.catalog = catalog

    # -- entry point -------------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, str], base: str) -> dict[str, Any]:
        if not path.strip("/"):
            return self.service_root(base)
        options = parse_options(params, self.config.max_top)
        target = self.resolve(parse_path(path))
        if not target.is_collection:
            if (
                options.top is not None
                or options.skip
                or options.count
                or options.bounds
                or options.order_key
            ):
                raise BadRequest(
                    "$top, $skip, $count, $orderby and $filter apply to collections, not to one entity"
                )
            return self.render(target.entity, target.key, options, base)
        body = self.collection(target, options, base)
        if "@iot.nextLink" in body:
            body["@iot.nextLink"] = next_link(
                base, path, params, options.skip + options.page(self.config.default_top)
            )
        return body

    def service_root(self, base: str) -> dict[str, Any]:
        return {
            "value": [{"name": name, "url": f"{base}/{name}"} for name in COLLECTIONS],
            "serverSettings": {"conformance": CONFORMANCE},
        }

    # -- paths ---------------------------------------------------------------------------------------
    def resolve(self, segments: list[Segment]) -> Target:
        first, *rest = segments
        if first.name not in entities.ENTITY_OF:
            raise NotFound(f"no collection {first.name!r}: the collections are {', '.join(COLLECTIONS)}")
        entity = entities.ENTITY_OF[first.name]
        if first.id is None:
            if entity == "Observation":
                raise BadRequest(
                    "Observations are read per datastream: "
                    "/v1.1/Datastreams('<device>:<value>')/Observations "
                    "(or one by id, /v1.1/Observations('<device>:<value>:<time ns>'))"
                )
            target = Target(entity, keys=self.all_keys(entity))
        else:
            target = Target(entity, key=self.lookup(entity, first.id))
        for segment in rest:
            if target.is_collection:
                raise NotFound(
                    f"cannot navigate from a collection to {segment.name!r}: select one entity first"
                )
            target = self.navigate(target.entity, target.key, segment.name)
            if segment.id is not None:
                if not target.is_collection or target.keys is None:
                    raise NotFound(f"{segment.name}('{segment.id}'): not a collection of entities")
                wanted = self.lookup(target.entity, segment.id)
                if wanted not in target.keys:
                    raise NotFound(f"{segment.name}('{segment.id}') is not related to this entity")
                target = Target(target.entity, key=wanted)
        return target

    def all_keys(self, entity: str) -> list[Any]:
        model = self.catalog.model.config
        if entity == "Thing":
            return self.catalog.devices()
        if entity == "Location":
            return [d for d in self.catalog.devices() if self.catalog.thing(d).location is not None]
        if entity == "HistoricalLocation":
            return []
        if entity == "Datastream":
            return [s.id for s in self.catalog.all_datastreams()]
        if entity == "Sensor":
            return sorted(model.sensors)
        if entity == "ObservedProperty":
            return sorted(model.observed_properties)
        raise NotFound(f"no collection of {entity}")  # pragma: no cover - COLLECTIONS lists them all

    def lookup(self, entity: str, entity_id: str) -> Any:
        """The key of an entity by its id, or NotFound naming it."""
        model = self.catalog.model.config
        if entity == "Thing":
            return self.catalog.thing(entity_id).id
        if entity == "Location":
            if self.catalog.thing(entity_id).location is None:
                raise NotFound(f"no Location {entity_id!r}: that thing has no location in the model")
            return entity_id
        if entity == "Datastream":
            return self.catalog.datastream(entity_id).id
        if entity == "Sensor":
            if entity_id not in model.sensors:
                raise NotFound(f"no Sensor {entity_id!r}: the sensors are {sorted(model.sensors)}")
            return entity_id
        if entity == "ObservedProperty":
            if entity_id not in model.observed_properties:
                raise NotFound(
                    f"no ObservedProperty {entity_id!r}: the observed properties are "
                    f"{sorted(model.observed_properties)}"
                )
            return entity_id
        if entity == "Observation":
            device, value, time_ns = split_observation_id(entity_id)
            stream = self.catalog.datastream(f"{device}:{value}")
            result = self.store.observation(device, value, time_ns)
            if result is None:
                raise NotFound(
                    f"no Observation {entity_id!r}: datastream {stream.id!r} has no reading at that time"
                )
            return (device, value, time_ns, result)
        raise NotFound(f"no {entity} {entity_id!r}")

    def navigate(self, entity: str, key: Any, name: str) -> Target:
        """From one entity along a navigation property to an entity or a collection."""
        allowed = entities.NAVIGATION.get(entity, ())
        if name not in allowed:
            raise NotFound(
                f"{entity} has no navigation property {name!r}"
                + (f": it has {', '.join(allowed)}" if allowed else "")
            )
        catalog = self.catalog
        if entity == "Thing":
            if name == "Locations":
                return Target("Location", keys=[key] if catalog.thing(key).location is not None else [])
            if name == "HistoricalLocations":
                return Target("HistoricalLocation", keys=[])
            return Target("Datastream", keys=[s.id for s in catalog.datastreams(key)])
        if entity == "Location":
            return Target("Thing", keys=[key]) if name == "Things" else Target("HistoricalLocation", keys=[])
        if entity == "Datastream":
            stream = catalog.datastream(key)
            if name == "Thing":
                return Target("Thing", key=stream.device)
            if name == "Sensor":
                if stream.sensor_id is None:
                    raise NotFound(f"Datastream {key!r} has no sensor in the model (model.things.*.sensor)")
                return Target("Sensor", key=stream.sensor_id)
            if name == "ObservedProperty":
                return Target("ObservedProperty", key=stream.observed_property_id)
            return Target("Observation", observations=ObservationsOf(stream))
        if entity in ("Sensor", "ObservedProperty"):
            match = (
                (lambda s: s.sensor_id == key)
                if entity == "Sensor"
                else (lambda s: s.observed_property_id == key)
            )
            return Target("Datastream", keys=[s.id for s in catalog.all_datastreams() if match(s)])
        if entity == "Observation":
            device, value, _, _ = key
            return Target("Datastream", key=f"{device}:{value}")
        raise NotFound(f"{entity} has no navigation property {name!r}")  # pragma: no cover

    # -- rendering -----------------------------------------------------------------------------------
    def render(self, entity: str, key: Any, options: Options, base: str) -> dict[str, Any]:
        catalog, model = self.catalog, self.catalog.model.config
        if entity == "Thing":
            body = entities.thing(base, catalog.thing(key))
        elif entity == "Location":
            where = catalog.thing(key).location
            assert where is not None
            body = entities.location(base, key, where)
        elif entity == "Datastream":
            body = entities.datastream(base, catalog.datastream(key))
        elif entity == "Sensor":
            body = entities.sensor(base, key, model.sensors[key])
        elif entity == "ObservedProperty":
            body = entities.observed_property(base, key, model.observed_properties[key])
        elif entity == "Observation":
            body = entities.observation(base, *key)
        else:  # pragma: no cover - HistoricalLocations are always empty
            raise NotFound(f"no {entity} {key!r}")
        for item in options.expand:
            self.expand(body, entity, key, item, base)
        return body

    def expand(self, body: dict[str, Any], entity: str, key: Any, item: Expand, base: str) -> None:
        target = self.navigate(entity, key, item.name)
        if not target.is_collection:
            if item.options.top is not None or item.options.bounds or item.options.skip:
                raise BadRequest(
                    f"$expand={item.name}: {item.name} is one entity; $top/$skip/$filter do not apply"
                )
            body[item.name] = self.render(target.entity, target.key, item.options, base)
            return
        page = self.collection(target, item.options, base)
        body[item.name] = page["value"]
        if "@iot.count" in page:
            body[f"{item.name}@iot.count"] = page["@iot.count"]
        if "@iot.nextLink" in page:
            link = body[f"{item.name}@iot.navigationLink"]
            top = item.options.page(self.config.default_top)
            body[f"{item.name}@iot.nextLink"] = next_link_for(
                link, item.options, item.options.skip + top, top
            )

    def collection(self, target: Target, options: Options, base: str) -> dict[str, Any]:
        top = options.page(self.config.default_top)
        if target.observations is not None:
            return self.observations(target.observations.stream, options, base)
        if options.bounds:
            raise BadRequest("$filter is supported on Observations (time ranges) only")
        keys = list(target.keys or [])
        if options.order_key is not None:
            if options.order_key not in ID_ORDER:
                raise BadRequest(
                    f"$orderby={options.order_key!r}: {target.entity} collections order by id only"
                )
            keys.sort(reverse=options.descending)
        chosen = keys[options.skip : options.skip + top]
        if target.entity == "Datastream" and any(e.name == "Observations" for e in options.expand):
            value = self.datastreams_with_observations(chosen, options, base)
        else:
            value = [self.render(target.entity, key, options, base) for key in chosen]
        body: dict[str, Any] = {}
        if options.count:
            body["@iot.count"] = len(keys)
        body["value"] = value
        if top and options.skip + top < len(keys):
            body["@iot.nextLink"] = ""  # filled in by the caller, who knows the request
        return body

    def datastreams_with_observations(
        self, keys: list[str], options: Options, base: str
    ) -> list[dict[str, Any]]:
        """Datastreams whose expanded Observations are read in one InfluxDB request for the whole page."""
        item = next(e for e in options.expand if e.name == "Observations")
        rest = replace(options, expand=tuple(e for e in options.expand if e.name != "Observations"))
        streams = [self.catalog.datastream(key) for key in keys]
        descending = self._descending(item.options)
        top = item.options.page(self.config.default_top)
        pages = self.store.observations(
            [(s.device, s.value) for s in streams], item.options.bounds, descending, top, item.options.skip
        )
        value = []
        for stream, page in zip(streams, pages, strict=True):
            body = self.render("Datastream", stream.id, rest, base)
            body["Observations"] = [self._observation(base, stream, t, r, item.options) for t, r in page.rows]
            if page.more:
                link = body["Observations@iot.navigationLink"]
                body["Observations@iot.nextLink"] = next_link_for(
                    link, item.options, item.options.skip + top, top
                )
            value.append(body)
        return value

    def _observation(
        self, base: str, stream: ResolvedDatastream, time_ns: int, result: Any, options: Options
    ) -> dict[str, Any]:
        body = entities.observation(base, stream.device, stream.value, time_ns, result)
        for item in options.expand:
            self.expand(body, "Observation", (stream.device, stream.value, time_ns, result), item, base)
        return body

    def _descending(self, options: Options) -> bool:
        if options.order_key is not None and options.order_key not in TIME_PROPERTIES:
            raise BadRequest(
                f"$orderby={options.order_key!r}: Observations order by phenomenonTime or resultTime "
                "(asc|desc)"
            )
        return options.descending

    def observations(self, stream: ResolvedDatastream, options: Options, base: str) -> dict[str, Any]:
        top = options.page(self.config.default_top)
        descending = self._descending(options)
        page = self.store.observations(
            [(stream.device, stream.value)], options.bounds, descending, top, options.skip
        )[0]
        body: dict[str, Any] = {}
        if options.count:
            body["@iot.count"] = self.store.count(stream.device, stream.value, options.bounds)
        body["value"] = [self._observation(base, stream, t, r, options) for t, r in page.rows]
        if page.more:
            body["@iot.nextLink"] = ""
        return body


def _query(params: Mapping[str, str]) -> str:
    return urlencode(params, quote_via=quote, safe="$(),':")


def next_link(base: str, path: str, params: Mapping[str, str], skip: int) -> str:
    """The request again with `$skip` moved on by one page; every other parameter kept as given."""
    return f"{base}/{path.strip('/')}?{_query({**params, '$skip': str(skip)})}"


def next_link_for(link: str, options: Options, skip: int, top: int) -> str:
    """The nextLink of an expanded Observations collection: its navigation link with its own options."""
    params = {"$top": str(top), "$skip": str(skip)}
    if options.order_key is not None:
        params["$orderby"] = f"{options.order_key} {'desc' if options.descending else 'asc'}"
    if options.bounds:
        ops = {">=": "ge", ">": "gt", "<=": "le", "<": "lt"}
        params["$filter"] = " and ".join(
            f"phenomenonTime {ops[b.op]} {format_instant(b.time_ns)}" for b in options.bounds
        )
    return f"{link}?{_query(params)}"


__all__ = ["Api", "BadRequest", "NotFound", "entity_path"]
