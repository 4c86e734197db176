"""Convert a TMY3 weather file (as pvlib ships them, `pvlib/data/*.csv`) into a twinpipe recording.

    python -m devstack.pvlib_recording 723170TYA.CSV greensboro recordings/greensboro-tmy3.csv

TMY3 layout (NREL, "Users Manual for TMY3 Data Sets", NREL/TP-581-43156): line 1 is the station
(id, name, state, time zone as hours from UTC, latitude, longitude, elevation m), line 2 the header,
then 8760 hourly rows. `Date (MM/DD/YYYY)` and `Time (HH:MM)` are local *standard* time (no daylight
saving) and a day's last hour is 24:00, which is 00:00 of the next day. Each month comes from another
year (a "typical" month), so the dates are coerced to one year (`--year`, 2025); February 29 is not in
TMY3 files. A missing value is -9900 (or 9900/-9999 in some fields); it becomes an empty cell, which
the replay reads as "no value in this row". Only `Dry-bulb (C)`, `RHum (%)` and `Pressure (mbar)`
are kept, as temperature (°C), humidity (%) and pressure (hPa = mbar).

Output: `time,device,temperature,humidity,pressure` with time in ISO 8601 UTC (`...Z`). Standard
library only (csv), so it runs anywhere the publisher does.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

COLUMNS = {"temperature": "Dry-bulb (C)", "humidity": "RHum (%)", "pressure": "Pressure (mbar)"}
MISSING = {"-9900", "9900", "-9999", "9999"}


@dataclass(frozen=True)
class Station:
    station_id: str
    name: str
    state: str
    utc_offset_h: float
    latitude: float
    longitude: float
    altitude_m: float


def station(metadata: list[str]) -> Station:
    ident, name, state, offset, latitude, longitude, altitude = metadata[:7]
    return Station(ident, name, state, float(offset), float(latitude), float(longitude), float(altitude))


def utc_time(date: str, clock: str, utc_offset_h: float, year: int) -> datetime:
    """`MM/DD/YYYY` and `HH:MM` in local standard time (24:00 = the next day's 00:00) → UTC, with the
    year replaced by `year`."""
    month, day, _ = (int(part) for part in date.split("/"))
    hour, minute = (int(part) for part in clock.split(":"))
    local = datetime(year, month, day) + timedelta(hours=hour, minutes=minute)
    return (local - timedelta(hours=utc_offset_h)).replace(tzinfo=UTC)


@dataclass
class Quirks:
    rows: int = 0
    missing: dict[str, int] | None = None
    years: set[int] | None = None


def convert(lines: Iterable[str], device: str, year: int, quirks: Quirks) -> Iterator[list[str]]:
    """TMY3 lines → output rows (header first)."""
    reader = csv.reader(lines)
    meta = station(next(reader))
    header = next(reader)
    index = {name: header.index(column) for name, column in COLUMNS.items()}
    quirks.missing = dict.fromkeys(COLUMNS, 0)
    quirks.years = set()
    yield ["time", "device", *COLUMNS]
    for cells in reader:
        if not cells:
            continue
        quirks.rows += 1
        quirks.years.add(int(cells[0].split("/")[2]))
        moment = utc_time(cells[0], cells[1], meta.utc_offset_h, year)
        values = []
        for name, i in index.items():
            text = cells[i].strip()
            if text in MISSING or not text:
                quirks.missing[name] += 1
                text = ""
            values.append(text)
        yield [moment.strftime("%Y-%m-%dT%H:%M:%SZ"), device, *values]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tmy3", help="a TMY3 CSV file (e.g. pvlib/data/723170TYA.CSV)")
    parser.add_argument("device", help="device id for the rows, e.g. greensboro")
    parser.add_argument("output", help="the recording to write (CSV)")
    parser.add_argument("--year", type=int, default=2025, help="the one year every month is moved to")
    args = parser.parse_args(argv)
    quirks = Quirks()
    with open(args.tmy3, encoding="utf-8", newline="") as source:
        first = source.readline()
        source.seek(0)
        meta = station(next(csv.reader([first])))
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            csv.writer(out, lineterminator="\n").writerows(convert(source, args.device, args.year, quirks))
    print(
        f"{args.output}: {quirks.rows} rows of {meta.name} ({meta.latitude}, {meta.longitude}, "
        f"{meta.altitude_m:g} m, UTC{meta.utc_offset_h:+g}); months from years {sorted(quirks.years or [])} "
        f"moved to {args.year}; missing values (empty cells): {quirks.missing}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
