"""Query options of a request (OGC 18-088 §9.3): parsed once into `Options`, pure and tested alone.

Supported: `$top`, `$skip`, `$count`, `$orderby` on phenomenonTime/resultTime (asc|desc; on other
collections `id`), `$filter` on a time range (`phenomenonTime ge|gt|le|lt <instant>` joined with
`and`; resultTime is the same instant here), and `$expand` of navigation properties, nested with
`/` (`Datastreams/Thing`) or with options in parentheses separated by `;`
(`Observations($top=1;$orderby=phenomenonTime desc)`). Anything else is refused with a message that
says what is supported, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sensorthings_api.ids import BadRequest, parse_instant

SUPPORTED = ("$top", "$skip", "$count", "$orderby", "$filter", "$expand")
TIME_PROPERTIES = ("phenomenonTime", "resultTime")
_COMPARISONS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


@dataclass(frozen=True, slots=True)
class TimeBound:
    op: str  # one of >=, >, <=, <
    time_ns: int


@dataclass(frozen=True, slots=True)
class Expand:
    name: str
    options: Options


@dataclass(frozen=True, slots=True)
class Options:
    top: int | None = None  # None: the configured default
    skip: int = 0
    count: bool = False
    descending: bool = False
    order_key: str | None = None  # the property ordered by, as written; None: default order
    bounds: tuple[TimeBound, ...] = ()
    expand: tuple[Expand, ...] = field(default=())

    def page(self, default_top: int) -> int:
        return default_top if self.top is None else self.top


def parse_options(params: Mapping[str, str], max_top: int) -> Options:
    """Query parameters → Options. Parameters not starting with `$` are not options and are left alone."""
    unknown = sorted(key for key in params if key.startswith("$") and key not in SUPPORTED)
    if unknown:
        raise BadRequest(
            f"unsupported query option {', '.join(unknown)}: supported are {', '.join(SUPPORTED)}"
        )
    options = Options()
    if "$top" in params:
        options = replace(options, top=_count_value("$top", params["$top"]))
        if options.top is not None and options.top > max_top:
            raise BadRequest(f"$top={options.top} exceeds the largest page, {max_top} (sensorthings.max_top)")
    if "$skip" in params:
        options = replace(options, skip=_count_value("$skip", params["$skip"]))
    if "$count" in params:
        text = params["$count"].strip().lower()
        if text not in ("true", "false"):
            raise BadRequest(f"$count={params['$count']!r}: expected true or false")
        options = replace(options, count=text == "true")
    if "$orderby" in params:
        key, descending = parse_orderby(params["$orderby"])
        options = replace(options, order_key=key, descending=descending)
    if "$filter" in params:
        options = replace(options, bounds=parse_filter(params["$filter"]))
    if "$expand" in params:
        options = replace(options, expand=parse_expand(params["$expand"], max_top))
    return options


def _count_value(name: str, text: str) -> int:
    if not re.fullmatch(r"\s*\d{1,18}\s*", text):
        raise BadRequest(f"{name}={text!r}: expected a non-negative integer")
    return int(text)


def parse_orderby(text: str) -> tuple[str, bool]:
    """`phenomenonTime desc` → ("phenomenonTime", True). One key; the collection checks which keys it has."""
    parts = text.split()
    if (
        "," in text
        or not 1 <= len(parts) <= 2
        or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc"))
    ):
        raise BadRequest(
            f"$orderby={text!r}: expected one property and an optional asc|desc, e.g. "
            "$orderby=phenomenonTime desc"
        )
    return parts[0], len(parts) == 2 and parts[1].lower() == "desc"


def parse_filter(text: str) -> tuple[TimeBound, ...]:
    """`phenomenonTime ge 2026-11-30T00:00:00Z and phenomenonTime lt 2026-12-01T00:00:00Z` → bounds."""
    clauses = re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE)
    bounds = []
    for clause in clauses:
        parts = clause.strip().strip("()").split()
        if len(parts) != 3 or parts[0] not in TIME_PROPERTIES or parts[1].lower() not in _COMPARISONS:
            raise BadRequest(
                f"$filter clause {clause.strip()!r} is not supported: only time ranges are, "
                "'phenomenonTime ge|gt|le|lt <ISO 8601 instant>' (or resultTime) joined with 'and', e.g. "
                "$filter=phenomenonTime ge 2026-11-30T00:00:00Z and phenomenonTime lt 2026-12-01T00:00:00Z"
            )
        bounds.append(TimeBound(_COMPARISONS[parts[1].lower()], parse_instant(parts[2])))
    return tuple(bounds)


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise BadRequest(f"$expand={text!r}: unbalanced parentheses")
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth != 0:
        raise BadRequest(f"$expand={text!r}: unbalanced parentheses")
    parts.append(text[start:])
    return parts


def parse_expand(text: str, max_top: int) -> tuple[Expand, ...]:
    """`Locations,Datastreams/Sensor,Observations($top=1;$orderby=phenomenonTime desc)` → Expand tree."""
    found: list[Expand] = []
    for item in _split_top_level(text, ","):
        item = item.strip()
        match = re.fullmatch(r"([A-Za-z]+)(?:\((.*)\))?(?:/(.+))?", item, flags=re.DOTALL)
        if match is None:
            head, _, rest = item.partition("/")
            match = re.fullmatch(r"([A-Za-z]+)(?:\((.*)\))?", head, flags=re.DOTALL)
            if match is None or not rest:
                raise BadRequest(
                    f"$expand item {item!r}: expected a navigation property, optionally with options in "
                    "parentheses or a path, e.g. Observations($top=1;$orderby=phenomenonTime desc) or "
                    "Datastreams/Thing"
                )
            name, inner, path = match.group(1), match.group(2), rest
        else:
            name, inner, path = match.groups()
        nested = _parse_nested(inner, max_top) if inner else Options()
        if path:
            nested = replace(nested, expand=(*nested.expand, *parse_expand(path, max_top)))
        existing = next((i for i, e in enumerate(found) if e.name == name), None)
        if existing is None:
            found.append(Expand(name, nested))
        else:  # Datastreams/Thing,Datastreams/Sensor: one Datastreams with both
            merged = found[existing].options
            found[existing] = Expand(name, replace(merged, expand=(*merged.expand, *nested.expand)))
    return tuple(found)


def _parse_nested(inner: str, max_top: int) -> Options:
    params: dict[str, str] = {}
    for part in _split_top_level(inner, ";"):
        key, sep, value = part.strip().partition("=")
        if not sep or not key.startswith("$"):
            raise BadRequest(f"$expand options {inner!r}: expected $option=value pairs separated by ';'")
        params[key] = value
    return parse_options(params, max_top)
