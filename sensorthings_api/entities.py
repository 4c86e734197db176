"""The JSON encoding of each entity type (OGC 18-088 §8.2, §9.2.2): pure functions of the model.

Every entity carries `@iot.id`, `@iot.selfLink` and a `<Navigation>@iot.navigationLink` per
navigation property; links are absolute, under `base` (e.g. `http://host:8090/v1.1`).
"""

from __future__ import annotations

from typing import Any

from sensorthings_api.ids import entity_path, format_instant, observation_id
from twinpipe.config.model import Location, ObservedProperty, Sensor
from twinpipe.model import ResolvedDatastream, ResolvedThing

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
GEOJSON = "application/geo+json"

NAVIGATION = {
    "Thing": ("Locations", "HistoricalLocations", "Datastreams"),
    "Location": ("Things", "HistoricalLocations"),
    "Datastream": ("Thing", "Sensor", "ObservedProperty", "Observations"),
    "Sensor": ("Datastreams",),
    "ObservedProperty": ("Datastreams",),
    "Observation": ("Datastream",),
}
# Collection name in URLs → entity type.
ENTITY_OF = {
    "Things": "Thing",
    "Locations": "Location",
    "HistoricalLocations": "HistoricalLocation",
    "Datastreams": "Datastream",
    "Sensors": "Sensor",
    "ObservedProperties": "ObservedProperty",
    "Observations": "Observation",
}
COLLECTION_OF = {entity: collection for collection, entity in ENTITY_OF.items()}


def _base(base: str, entity: str, entity_id: str) -> dict[str, Any]:
    self_link = f"{base}/{entity_path(COLLECTION_OF[entity], entity_id)}"
    body: dict[str, Any] = {"@iot.id": entity_id, "@iot.selfLink": self_link}
    for navigation in NAVIGATION[entity]:
        body[f"{navigation}@iot.navigationLink"] = f"{self_link}/{navigation}"
    return body


def thing(base: str, resolved: ResolvedThing) -> dict[str, Any]:
    return {
        **_base(base, "Thing", resolved.id),
        "name": resolved.name,
        "description": resolved.description,
        "properties": {**resolved.properties, "device": resolved.id, "thing": resolved.entry},
    }


def location(base: str, device: str, where: Location) -> dict[str, Any]:
    """GeoJSON Point: [longitude, latitude(, altitude)] in WGS 84 (RFC 7946 §3.1.1)."""
    coordinates = [where.longitude, where.latitude]
    if where.altitude is not None:
        coordinates.append(where.altitude)
    return {
        **_base(base, "Location", device),
        "name": where.name,
        "description": where.description,
        "encodingType": GEOJSON,
        "location": {"type": "Point", "coordinates": coordinates},
    }


def datastream(base: str, stream: ResolvedDatastream) -> dict[str, Any]:
    body = {
        **_base(base, "Datastream", stream.id),
        "name": stream.name,
        "description": stream.description,
        "observationType": OM_MEASUREMENT,
        "unitOfMeasurement": {
            "name": stream.unit.name or stream.unit.code,
            "symbol": stream.unit.symbol,
            "definition": stream.unit.definition(),
        },
        "properties": {"device": stream.device, "field": stream.value, "ucum": stream.unit.code},
    }
    if stream.range is not None:
        body["properties"]["plausibleRange"] = list(stream.range)
    return body


def sensor(base: str, sensor_id: str, config: Sensor) -> dict[str, Any]:
    return {
        **_base(base, "Sensor", sensor_id),
        "name": config.name,
        "description": config.description,
        "encodingType": config.encoding(),
        "metadata": config.metadata,
    }


def observed_property(base: str, property_id: str, config: ObservedProperty) -> dict[str, Any]:
    return {
        **_base(base, "ObservedProperty", property_id),
        "name": config.name,
        "definition": config.definition,
        "description": config.description,
    }


def observation(base: str, device: str, value: str, time_ns: int, result: Any) -> dict[str, Any]:
    """phenomenonTime = resultTime = the reading's event time (the board's clock, as stored)."""
    instant = format_instant(time_ns)
    return {
        **_base(base, "Observation", observation_id(device, value, time_ns)),
        "phenomenonTime": instant,
        "resultTime": instant,
        "result": result,
    }
