"""JSON Schemas of the SensorThings API 1.1 JSON encoding, per entity type, after OGC 18-088.

Written from the standard's tables (§8.2 entity properties and their multiplicity, §9.2.2 the
annotations `@iot.id`, `@iot.selfLink`, `<navigation>@iot.navigationLink`, §9.3.3.1 collections with
`value`, `@iot.count`, `@iot.nextLink`), so a response that drops a mandatory property, renames one,
or gives it the wrong JSON type fails validation. Expanded navigation properties are allowed where
the standard has them, and validated with the schema of their entity type.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

_URL = {"type": "string", "pattern": r"^https?://"}
_ISO_INSTANT = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$",
}
_OM = "http://www.opengis.net/def/observationType/OGC-OM/2.0/"


def _entity(
    required: dict[str, Any],
    optional: dict[str, Any],
    navigation: dict[str, str],
    to_one: set[str],
    not_served: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An entity: mandatory properties, optional ones, and navigation links (+ optional expansions)."""
    properties: dict[str, Any] = {"@iot.id": {"type": ["string", "integer"]}, "@iot.selfLink": _URL}
    properties |= required | optional
    for name, target in navigation.items():
        properties[f"{name}@iot.navigationLink"] = _URL
        ref = {"$ref": f"#/$defs/{target}"}
        properties[name] = ref if name in to_one else {"type": "array", "items": ref}
        properties[f"{name}@iot.nextLink"] = _URL
        properties[f"{name}@iot.count"] = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "required": [
            "@iot.id",
            "@iot.selfLink",
            *required,
            *(f"{n}@iot.navigationLink" for n in navigation if n not in not_served),
        ],
        "properties": properties,
        "additionalProperties": False,
    }


DEFS: dict[str, Any] = {
    "Thing": _entity(
        {"name": {"type": "string"}, "description": {"type": "string"}},
        {"properties": {"type": "object"}},
        {"Locations": "Location", "HistoricalLocations": "HistoricalLocation", "Datastreams": "Datastream"},
        set(),
    ),
    "Location": _entity(
        {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "encodingType": {"const": "application/geo+json"},
            "location": {
                "type": "object",
                "required": ["type", "coordinates"],
                "properties": {
                    "type": {"const": "Point"},
                    "coordinates": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 3,
                        "prefixItems": [
                            {"type": "number", "minimum": -180, "maximum": 180},
                            {"type": "number", "minimum": -90, "maximum": 90},
                            {"type": "number"},
                        ],
                    },
                },
            },
        },
        {"properties": {"type": "object"}},
        {"Things": "Thing", "HistoricalLocations": "HistoricalLocation"},
        set(),
    ),
    "HistoricalLocation": _entity(
        {"time": _ISO_INSTANT}, {}, {"Thing": "Thing", "Locations": "Location"}, {"Thing"}
    ),
    "Datastream": _entity(
        {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "unitOfMeasurement": {
                "type": "object",
                "required": ["name", "symbol", "definition"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "symbol": {"type": "string", "minLength": 1},
                    "definition": {"type": "string", "minLength": 1},
                },
            },
            "observationType": {"type": "string", "pattern": "^" + _OM.replace(".", r"\.")},
        },
        {
            "observedArea": {"type": "object"},
            "phenomenonTime": {"type": "string"},
            "resultTime": {"type": "string"},
            "properties": {"type": "object"},
        },
        {
            "Thing": "Thing",
            "Sensor": "Sensor",
            "ObservedProperty": "ObservedProperty",
            "Observations": "Observation",
        },
        {"Thing", "Sensor", "ObservedProperty"},
    ),
    "Sensor": _entity(
        {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "encodingType": {"type": "string", "minLength": 1},
            "metadata": {"type": "string", "minLength": 1},
        },
        {"properties": {"type": "object"}},
        {"Datastreams": "Datastream"},
        set(),
    ),
    "ObservedProperty": _entity(
        {
            "name": {"type": "string"},
            "definition": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
        },
        {"properties": {"type": "object"}},
        {"Datastreams": "Datastream"},
        set(),
    ),
    "Observation": _entity(
        {
            "phenomenonTime": _ISO_INSTANT,
            "resultTime": {"anyOf": [_ISO_INSTANT, {"type": "null"}]},
            "result": {},
        },
        {"validTime": {"type": "string"}, "resultQuality": {}, "parameters": {"type": "object"}},
        {"Datastream": "Datastream", "FeatureOfInterest": "FeatureOfInterest"},
        {"Datastream", "FeatureOfInterest"},
        # twinpipe serves no FeaturesOfInterest (sensorthings_api/README.md): a link it has not is allowed
        not_served=("FeatureOfInterest",),
    ),
    "FeatureOfInterest": {"type": "object"},
}
# OM_Measurement: the result is a number.
DEFS["Observation"]["properties"]["result"] = {"type": ["number", "null"]}


def collection(entity: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["value"],
        "properties": {
            "value": {"type": "array", "items": {"$ref": f"#/$defs/{entity}"}},
            "@iot.count": {"type": "integer", "minimum": 0},
            "@iot.nextLink": _URL,
        },
        "additionalProperties": False,
    }


def validator(entity: str, is_collection: bool) -> Draft202012Validator:
    schema = collection(entity) if is_collection else {"$ref": f"#/$defs/{entity}"}
    return Draft202012Validator({**schema, "$defs": DEFS})


def check(body: Any, entity: str, is_collection: bool) -> None:
    """Raise jsonschema.ValidationError naming the first place where `body` breaks the encoding."""
    validator(entity, is_collection).validate(body)


ERROR = {
    "type": "object",
    "required": ["code", "type", "message"],
    "properties": {
        "code": {"type": "integer"},
        "type": {"const": "error"},
        "message": {"type": "string", "minLength": 10},
    },
}
