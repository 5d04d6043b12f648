"""Property tests of the points reader (hypothesis): any CSV / GeoJSON content is either
read or refused with a SpecError (which the CLI prints as one line, exit 2), never another
exception; a file it accepts gives back the names and coordinates exactly as written."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rs_embed_ray.errors import SpecError
from rs_embed_ray.io.points import read_places
from rs_embed_ray.specs import PointBuffer

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADERS = ["name", "lon", "lat", "buffer_m", "LON", "minlon", "minlat", "maxlon", "maxlat",
           "start", "end", "year", "x"]  # fmt: skip
CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "NA",
            "null",
            "nan",
            "inf",
            "-0",
            "007",
            "1e400",
            "2022",
            "1_0",
            "2022-06-01",
            "0x1f",
            " 15 ",
            "1,5",
            '"',
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**20), 10**20).map(str),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=30,
)
POINT_KEYS = st.sampled_from(["type", "geometry", "properties", "coordinates", "features",
                              "Point", "Polygon", "name", "lon", "buffer_m", "year"])  # fmt: skip
GEOJSONISH = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-200, 200) | POINT_KEYS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(POINT_KEYS, kids, max_size=4),
    max_leaves=40,
)


def _read(suffix: str, data: bytes) -> object:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"places{suffix}"
        p.write_bytes(data)
        try:
            return read_places(p, buffer_m=50.0)
        except SpecError as exc:
            assert (str(exc) and "\n" not in str(exc).strip()) or "Traceback" not in str(exc)
            return exc


@SETTINGS
@given(header=st.lists(st.sampled_from(HEADERS), min_size=1, max_size=6),
       rows=st.lists(st.lists(CELLS, min_size=0, max_size=7), max_size=5))  # fmt: skip
def test_any_csv_is_read_or_refused_cleanly(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    _read(".csv", buf.getvalue().encode("utf-8"))


@SETTINGS
@given(data=st.binary(max_size=300))
def test_any_bytes_are_read_or_refused_cleanly(data):
    _read(".csv", b"name,lon,lat,buffer_m\n" + data)
    _read(".geojson", data)


@SETTINGS
@given(
    doc=st.one_of(
        JSON, GEOJSONISH, st.fixed_dictionaries({"features": st.lists(GEOJSONISH, max_size=4)})
    )
)
def test_any_json_is_read_or_refused_cleanly(doc):
    _read(".geojson", json.dumps(doc).encode("utf-8"))


NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
PLACE = st.tuples(
    NAMES,
    st.floats(-180, 180, allow_nan=False),
    st.floats(-90, 90, allow_nan=False),
    st.floats(0.5, 5000, allow_nan=False),
)


@SETTINGS
@given(places=st.lists(PLACE, min_size=1, max_size=6))
def test_accepted_csv_round_trips_exactly(places):
    buf = io.StringIO()
    w = csv.writer(buf)  # "\r\n" rows: a name holding \r or \n is quoted
    w.writerow(["name", "lon", "lat", "buffer_m"])
    w.writerows([(n, repr(x), repr(y), repr(b)) for n, x, y, b in places])
    got = _read(".csv", buf.getvalue().encode("utf-8"))
    assert not isinstance(got, SpecError), got
    assert got.names == [n for n, *_ in places]
    assert got.spatials == [PointBuffer(x, y, b) for _, x, y, b in places]


@SETTINGS
@given(places=st.lists(PLACE, min_size=1, max_size=6))
def test_accepted_geojson_round_trips_exactly(places):
    feats = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
         "properties": {"name": n, "buffer_m": b}}
        for n, x, y, b in places
    ]  # fmt: skip
    doc = {"type": "FeatureCollection", "features": feats}
    got = _read(".geojson", json.dumps(doc).encode("utf-8"))
    assert not isinstance(got, SpecError), got
    assert got.names == [n for n, *_ in places]
    assert got.spatials == [PointBuffer(x, y, b) for _, x, y, b in places]
