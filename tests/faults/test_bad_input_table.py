"""Every kind of bad input refused before any work (issue 15): one table, eight classes.

Each case runs in-process (click's CliRunner, or the Python API) in a fresh folder holding
everything the case touches (points file, raster source, output), and asserts:

* the CLI exits 2 with ``error: ...`` naming the row / column / option (the API raises the
  named exception type, with that text), and no traceback reaches the output;
* the file system is unchanged: every path, size, mtime and sha256 under the folder is the
  same before and after (nothing created, nothing modified);
* Ray was never asked to start: ``ray.init`` and the runner's ``ensure_ray`` / ``run_plan``
  are replaced by recorders for the duration of the case, and ``ray.is_initialized()`` is
  what it was before.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from rs_embed_ray import BBox, ModelError, PointBuffer, SpecError, TemporalSpec
from rs_embed_ray.api import export_batch
from rs_embed_ray.cli import main
from rs_embed_ray.errors import InputTypeError, OutputLockedError
from rs_embed_ray.io.load import load_export
from rs_embed_ray.io.state import RunState

WINDOW = ("--start", "2022-06-01", "--end", "2022-09-01")
GOOD = "name,lon,lat,buffer_m\na,15.0,45.0,160\nb,15.01,45.0,160\n"
T = TemporalSpec.range("2022-06-01", "2022-09-01")


# -- helpers ------------------------------------------------------------------------------------


def write_tif(path: Path, text: bool = False) -> Path:
    """A 4 x 4 px GeoTIFF (or, with ``text``, a text file wearing a .tif name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if text:
        path.write_text("not a raster\n")
        return path
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
        crs="EPSG:32633", transform=from_origin(500000.0, 4983000.0, 10.0, 10.0),
    ) as ds:  # fmt: skip
        ds.write(np.zeros((4, 4), np.float32), 1)
    return path


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` with its kind, size, mtime and sha256 (files)."""
    out: dict[str, tuple[Any, ...]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink():
            out[rel] = ("f", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = ("d" if p.is_dir() else "l", st.st_mtime_ns)
    return out


class Ws:
    """One case's folder: a points file, a raster source and where the output would go."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        write_tif(self.src / "2022-07-01_B2.tif")
        self.out = root / "out"

    def file(self, name: str, text: str | bytes) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return p

    def geojson(self, features: Any, name: str = "places.geojson") -> Path:
        return self.file(name, json.dumps({"type": "FeatureCollection", "features": features}))

    def parquet(self, columns: dict[str, list[Any]], name: str = "places.parquet") -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = self.root / name
        pq.write_table(pa.table(columns), p)
        return p

    def args(
        self,
        *extra: str,
        points: Path | str | None = None,
        models: str = "spectral_stats",
        out: Path | str | None = None,
        source: Path | str | None = None,
        window: tuple[str, ...] = WINDOW,
    ) -> list[str]:
        pts = points if points is not None else self.file("places.csv", GOOD)
        return [
            "export", "--points", str(pts), "--models", models, "--backend", "local",
            "--source", str(source if source is not None else self.src),
            "--out", str(out if out is not None else self.out), "--no-progress", *window, *extra,
        ]  # fmt: skip

    def api(self, **kw: Any) -> dict[str, Any]:
        d: dict[str, Any] = dict(
            spatials=[PointBuffer(15.0, 45.0, 160.0)],
            temporal=T,
            models=["spectral_stats"],
            out=str(self.out),
            layout="per_item",
            backend="local",
            source=str(self.src),
            show_progress=False,
        )
        d.update(kw)
        return d


def feature(geom: Any, props: Any = None) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geom, "properties": props}


def pt(lon: Any, lat: Any) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def safetensors_bytes(header: Any) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def crafted_npz(path: Path, key: str, shape: tuple[int, ...]) -> Path:
    """An npz whose member header declares ``shape`` while holding 16 bytes."""
    hdr = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    hdr["shape"] = shape
    with zipfile.ZipFile(path, "w") as zf, zf.open(f"{key}.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, hdr)
        fh.write(b"\0" * 16)
    return path


def object_npz(path: Path, key: str) -> Path:
    np.savez(path, **{key: np.array([{"x": 1}], dtype=object)})
    return path


def deep_json(depth: int = 100_000) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# -- the table ------------------------------------------------------------------------------------
# (id, class, build(ws) -> ("cli", args) | ("api", callable), expected, needle)
# expected: 2 for the CLI's exit code, or the exception type the API raises.

Case = tuple[str, int, Callable[[Ws], tuple[str, Any]], Any, str]


def _csv(text: str, *extra: str, **kw: Any) -> Callable[[Ws], tuple[str, Any]]:
    return lambda ws: ("cli", ws.args(*extra, points=ws.file("places.csv", text), **kw))


def _cli(*extra: str, **kw: Any) -> Callable[[Ws], tuple[str, Any]]:
    return lambda ws: ("cli", ws.args(*extra, **kw))


def _gj(features: Any, *extra: str) -> Callable[[Ws], tuple[str, Any]]:
    return lambda ws: ("cli", ws.args("--buffer-m", "100", *extra, points=ws.geojson(features)))


def _pq(columns: dict[str, list[Any]]) -> Callable[[Ws], tuple[str, Any]]:
    return lambda ws: ("cli", ws.args("--buffer-m", "100", points=ws.parquet(columns)))


def _api(**kw: Any) -> Callable[[Ws], tuple[str, Any]]:
    return lambda ws: ("api", lambda: export_batch(**ws.api(**kw)))


def _weights(make: Callable[[Ws], Path], model: str = "remoteclip", *extra: str) -> Any:
    def build(ws: Ws) -> tuple[str, Any]:
        return "cli", ws.args("--weights", f"{model}={make(ws)}", *extra, models=model)

    return build


def _dir(ws: Ws, name: str, files: dict[str, bytes] | None = None) -> Path:
    d = ws.root / name
    d.mkdir()
    for k, v in (files or {}).items():
        (d / k).write_bytes(v)
    return d


def _inspect(make: Callable[[Ws], list[str]]) -> Callable[[Ws], tuple[str, Any]]:
    return lambda ws: ("cli", ["inspect", *make(ws)])


def _load(make: Callable[[Ws], Any]) -> Callable[[Ws], tuple[str, Any]]:
    """The crafted file is made while the case is built (before the snapshot)."""

    def build(ws: Ws) -> tuple[str, Any]:
        path = make(ws)
        return "api", lambda: load_export(path)

    return build


def _per_item_with(ws: Ws, sidecar: str) -> list[str]:
    d = ws.root / "exp"
    d.mkdir()
    np.savez(d / "p00000.npz", embedding__spectral_stats=np.zeros(3, np.float32))
    (d / "p00000.json").write_text(sidecar)
    return [str(d)]


def _run_json(ws: Ws, folder: Path, fmt: str) -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "ok", "format": fmt}))


CASES: list[Case] = [
    # 1. points files: explicit types, exact names, row and column named
    (
        "csv lon and LON",
        1,
        _csv("name,lon,LON,lat,buffer_m\na,15,15,45,160\n"),
        2,
        "'lon' and 'LON'",
    ),
    (
        "csv Name and name",
        1,
        _csv("Name,name,lon,lat,buffer_m\na,b,15,45,160\n"),
        2,
        "both mean 'name'",
    ),
    (
        "csv point and box columns",
        1,
        _csv("lon,lat,minlon,minlat,maxlon,maxlat,buffer_m\n15,45,14,44,16,46,9\n"),
        2,
        "keep one set",
    ),
    (
        "csv text lat",
        1,
        _csv("name,lon,lat,buffer_m\na,15,north,160\n"),
        2,
        "row 1: column 'lat' must be a number",
    ),
    (
        "csv hex lon",
        1,
        _csv("name,lon,lat,buffer_m\na,0x10,45,160\n"),
        2,
        "column 'lon' must be a number",
    ),
    (
        "csv underscore number",
        1,
        _csv("name,lon,lat,buffer_m\na,1_5,45,160\n"),
        2,
        "column 'lon' must be a number",
    ),
    (
        "csv inf lat",
        1,
        _csv("name,lon,lat,buffer_m\na,15,inf,160\n"),
        2,
        "column 'lat' is not finite",
    ),
    (
        "csv bad row 3",
        1,
        _csv("name,lon,lat,buffer_m\na,15,45,160\nb,15,45.1,160\nc,15,4x5,160\n"),
        2,
        "row 3: column 'lat'",
    ),
    (
        "csv too many fields",
        1,
        _csv("name,lon,lat,buffer_m\na,15,45,160,9\n"),
        2,
        "row 1: 5 fields",
    ),
    (
        "csv empty buffer cell",
        1,
        _csv("name,lon,lat,buffer_m\na,15,45,\n"),
        2,
        "row 1: no buffer_m",
    ),
    (
        "csv negative buffer",
        1,
        _csv("name,lon,lat,buffer_m\na,15,45,160\nb,15,45,-5\n"),
        2,
        "row 2: buffer_m must be positive",
    ),
    (
        "csv not utf-8",
        1,
        lambda ws: (
            "cli",
            ws.args(points=ws.file("places.csv", b"name,lon,lat,buffer_m\n\xff\xfe,15,45,160\n")),
        ),
        2,
        "not UTF-8 text",
    ),
    (
        "csv NUL byte",
        1,
        lambda ws: (
            "cli",
            ws.args(points=ws.file("places.csv", b"name,lon,lat,buffer_m\na\x00,15,45,160\n")),
        ),
        2,
        "names[0]='a\\x00' is not a safe",
    ),
    ("csv header only", 1, _csv(""), 2, "is empty"),
    (
        "csv text year",
        1,
        _csv("name,lon,lat,buffer_m,year\na,15,45,160,soon\n"),
        2,
        "row 1: TemporalSpec.year requires an integer year",
    ),
    (
        "--buffer-m nan",
        1,
        _csv("name,lon,lat\na,15,45\n", "--buffer-m", "nan"),
        2,
        "--buffer-m must be a finite number",
    ),
    ("parquet bool lat", 1, _pq({"lon": [15.0], "lat": [True]}), 2, "column 'lat' has type bool"),
    ("parquet text lat", 1, _pq({"lon": [15.0], "lat": ["45"]}), 2, "column 'lat' has type string"),
    (
        "parquet float names",
        1,
        _pq({"name": [1.5], "lon": [15.0], "lat": [45.0]}),
        2,
        "column 'name' has type double",
    ),
    (
        "parquet lon and LON",
        1,
        _pq({"lon": [15.0], "LON": [15.0], "lat": [45.0]}),
        2,
        "'lon' and 'LON'",
    ),
    # 2. GeoJSON: a message about the GeoJSON, with the feature number
    (
        "geojson feature not object",
        2,
        _gj([feature(pt(15, 45)), 7]),
        2,
        "feature 2: a feature must be an object",
    ),
    (
        "geojson properties a list",
        2,
        _gj([feature(pt(15, 45), ["a"])]),
        2,
        "feature 1: properties must be an object",
    ),
    (
        "geojson text coordinates",
        2,
        _gj([feature(pt("15", "45"))]),
        2,
        "feature 1: a position must be [lon, lat] finite numbers",
    ),
    (
        "geojson bool coordinates",
        2,
        _gj([feature(pt(15, 45)), feature(pt(True, 45))]),
        2,
        "feature 2: a position",
    ),
    (
        "geojson mixed geometries",
        2,
        _gj(
            [
                feature(pt(15, 45)),
                feature(
                    {
                        "type": "Polygon",
                        "coordinates": [[[15, 45], [15.1, 45], [15.1, 45.1], [15, 45]]],
                    }
                ),
            ]
        ),
        2,
        "feature 2: mixed geometry types",
    ),
    ("geojson null geometry", 2, _gj([feature(None)]), 2, "feature 1: geometry must be an object"),
    (
        "geojson LineString",
        2,
        _gj([feature({"type": "LineString", "coordinates": [[15, 45], [16, 46]]})]),
        2,
        "feature 1: unsupported geometry type 'LineString'",
    ),
    (
        "geojson flat polygon",
        2,
        _gj([feature({"type": "Polygon", "coordinates": [15, 45]})]),
        2,
        "feature 1: coordinates must be a non-empty nested list",
    ),
    (
        "geojson lon property clash",
        2,
        _gj([feature(pt(15, 45), {"LON": 3})]),
        2,
        "feature 1: property 'LON' clashes",
    ),
    (
        "geojson dict name",
        2,
        _gj([feature(pt(15, 45), {"name": {"x": 1}})]),
        2,
        "feature 1: property 'name' must be text",
    ),
    (
        "geojson NaN coordinate",
        2,
        lambda ws: (
            "cli",
            ws.args(
                "--buffer-m",
                "9",
                points=ws.file(
                    "p.geojson",
                    '{"features": [{"geometry": {"type": "Point", "coordinates": [NaN, 45]}}]}',
                ),
            ),
        ),
        2,
        "feature 1: a position must be [lon, lat] finite numbers",
    ),
    (
        "geojson a list",
        2,
        lambda ws: ("cli", ws.args(points=ws.file("p.geojson", "[1, 2]"))),
        2,
        "not a GeoJSON FeatureCollection",
    ),
    (
        "geojson nested 100k deep",
        2,
        lambda ws: ("cli", ws.args(points=ws.file("p.geojson", deep_json()))),
        2,
        "nested too deeply",
    ),
    # 3. numbers with bounds, the cost of one patch, name length
    (
        "--buffer-m 1e7",
        3,
        _csv("name,lon,lat\na,15,45\n", "--buffer-m", "1e7"),
        2,
        "spatials[0] (a): buffer_m=1e+07",
    ),
    (
        "buffer_m column 5e5",
        3,
        _csv("name,lon,lat,buffer_m\na,15,45,160\nb,15,45.1,5e5\n"),
        2,
        "spatials[1] (b): buffer_m=500000 at 10 m is a 100000 x 100000 px patch",
    ),
    (
        "world-sized box",
        3,
        _csv("name,minlon,minlat,maxlon,maxlat\nw,-180,-85,180,85\n"),
        2,
        "spatials[0] (w): the box",
    ),
    (
        "--retry-backoff-s inf",
        3,
        _cli("--retry-backoff-s", "inf"),
        2,
        "retry_backoff_s must be a finite number",
    ),
    (
        "--retry-backoff-s nan",
        3,
        _cli("--retry-backoff-s", "nan"),
        2,
        "retry_backoff_s must be a finite number",
    ),
    (
        "--retry-backoff-s 1e9",
        3,
        _cli("--retry-backoff-s", "1e9"),
        2,
        "retry_backoff_s must be within",
    ),
    (
        "--retry-backoff-s -1",
        3,
        _cli("--retry-backoff-s", "-1"),
        2,
        "retry_backoff_s must be within",
    ),
    ("--chunk-size 0", 3, _cli("--chunk-size", "0"), 2, "chunk_size must be >= 1"),
    ("--chunk-size 1e9", 3, _cli("--chunk-size", "1000000000"), 2, "chunk_size must be <= 4096"),
    ("--num-workers 0", 3, _cli("--num-workers", "0"), 2, "num_workers must be >= 1"),
    ("--max-retries -1", 3, _cli("--max-retries", "-1"), 2, "max_retries must be >= 0"),
    ("--max-retries 1000", 3, _cli("--max-retries", "1000"), 2, "max_retries must be <= 100"),
    ("--ee-max-qps nan", 3, _cli("--ee-max-qps", "nan"), 2, "ee_max_qps must be a finite number"),
    (
        "--ee-max-concurrent 0",
        3,
        _cli("--ee-max-concurrent", "0"),
        2,
        "ee_max_concurrent must be >= 1",
    ),
    (
        "name of 300 bytes",
        3,
        _csv(f"name,lon,lat,buffer_m\n{'n' * 300},15,45,160\n"),
        2,
        "names[0] is 300 bytes long",
    ),
    (
        "name of 130 two-byte chars",
        3,
        _csv(f"name,lon,lat,buffer_m\n{'é' * 130},15,45,160\n"),
        2,
        "names[0] is 260 bytes long",
    ),
    # 4. models: options, variants, weights, all in the driver
    (
        "model option unknown",
        4,
        _cli("--model-config", "spectral_stats.unknown=1"),
        2,
        "spectral_stats: unknown model_config key(s) ['unknown']",
    ),
    (
        "remoteclip option unknown",
        4,
        _cli("--model-config", "remoteclip.variant=x", models="remoteclip"),
        2,
        "remoteclip: unknown model_config key(s) ['variant']",
    ),
    (
        "prithvi variant unknown",
        4,
        _cli("--model-config", "prithvi.variant=huge", models="prithvi"),
        2,
        "Unknown prithvi variant 'huge'; choose one of",
    ),
    (
        "dofa variant unknown",
        4,
        _cli("--model-config", "dofa.variant=giant", models="dofa"),
        2,
        "dofa: unknown variant 'giant'; choose one of ['base', 'large']",
    ),
    (
        "olmoearth variant unknown",
        4,
        _cli("--model-config", "olmoearth.variant=x", models="olmoearth"),
        2,
        "Unknown olmoearth variant 'x'",
    ),
    (
        "weights folder without file",
        4,
        _weights(lambda ws: _dir(ws, "w")),
        2,
        "has no model.safetensors",
    ),
    (
        "weights text file",
        4,
        _weights(lambda ws: ws.file("w.safetensors", "hello, not weights")),
        2,
        "is not a readable checkpoint",
    ),
    (
        "weights zip not torch",
        4,
        _weights(lambda ws: _zip(ws.root / "w.pt")),
        2,
        "without data.pkl",
    ),
    (
        "weights safetensors no tensors",
        4,
        _weights(lambda ws: ws.file("w.safetensors", safetensors_bytes({"__metadata__": {}}))),
        2,
        "safetensors file without tensors",
    ),
    ("weights short file", 4, _weights(lambda ws: ws.file("w.pt", b"\x80\x02")), 2, "2 bytes long"),
    (
        "dofa large folder holds base",
        4,
        _weights(
            lambda ws: _dir(ws, "w", {"DOFA_ViT_base_e100.pth": b"x"}),
            "dofa",
            "--model-config",
            "dofa.variant=large",
        ),
        2,
        "has no DOFA_ViT_large_e100.pth",
    ),
    # 5. run-level inputs
    (
        "source a text file",
        5,
        lambda ws: ("cli", ws.args(source=ws.file("notes.txt", "hi"))),
        2,
        "is not a raster (.txt)",
    ),
    (
        "source an empty folder",
        5,
        lambda ws: ("cli", ws.args(source=_dir(ws, "empty"))),
        2,
        "is a folder without rasters",
    ),
    (
        "source a text .tif",
        5,
        lambda ws: ("cli", ws.args(source=write_tif(ws.root / "fake.tif", text=True))),
        2,
        "fake.tif is not a readable raster",
    ),
    ("out the file-system root", 5, _cli(out="/"), 2, "is the root of the file system"),
    ("out on /proc", 5, _cli(out="/proc/rs-embed-ray-out"), 2, "a virtual file system (proc)"),
    ("out on /sys", 5, _cli(out="/sys/rs-embed-ray-out"), 2, "a virtual file system (sysfs)"),
    (
        "address nothing answers",
        5,
        lambda ws: ("cli", ws.args("--address", f"127.0.0.1:{closed_port()}")),
        2,
        "No Ray cluster answers at",
    ),
    ("address not host:port", 5, _cli("--address", "my-cluster"), 2, "is not HOST:PORT"),
    # 6. never overwrite or mix
    (
        "geoparquet out is the points file",
        6,
        lambda ws: (
            "cli",
            ws.args(
                "--layout",
                "combined",
                "--format",
                "geoparquet",
                "--no-save-inputs",
                points=ws.parquet(
                    {"name": ["a"], "lon": [15.0], "lat": [45.0], "buffer_m": [160.0]}
                ),
                out=ws.root / "places.parquet",
            ),
        ),
        2,
        "is the points file",
    ),
    (
        "sidecar is the points file",
        6,
        lambda ws: (
            "cli",
            ws.args(
                "--buffer-m",
                "100",
                points=ws.geojson([feature(pt(15, 45), {"name": "places"})], name="places.json"),
                out=ws.root,
            ),
        ),
        2,
        "is the points file",
    ),
    (
        "out folder is the source",
        6,
        lambda ws: ("cli", ws.args(out=ws.src)),
        2,
        "is the raster source",
    ),
    (
        "resume npz into netcdf export",
        6,
        lambda ws: (
            _run_json(ws, ws.out / "_rs_embed_ray", "netcdf"),
            ("cli", ws.args("--resume")),
        )[1],
        2,
        "holds a netcdf export",
    ),
    (
        "npz into folder of .nc files",
        6,
        lambda ws: (ws.file("out/a.nc", b"CDF\x01"), ("cli", ws.args()))[1],
        2,
        "holds a netcdf export",
    ),
    (
        "combined netcdf over npz state",
        6,
        lambda ws: (
            _run_json(ws, ws.root / "g.rs_embed_ray", "npz"),
            (
                "cli",
                ws.args(
                    "--layout", "combined", "--format", "netcdf", "--resume", out=ws.root / "g.nc"
                ),
            ),
        )[1],
        2,
        "holds a npz export",
    ),
    # 7. inspect / load_export on crafted files
    (
        "inspect deep sidecar",
        7,
        _inspect(lambda ws: _per_item_with(ws, deep_json())),
        2,
        "nested too deeply",
    ),
    (
        "inspect object array",
        7,
        _inspect(lambda ws: [str(object_npz(ws.root / "o.npz", "embeddings__spectral_stats"))]),
        2,
        "holds Python objects",
    ),
    (
        "inspect absurd shape",
        7,
        _inspect(
            lambda ws: [
                str(crafted_npz(ws.root / "h.npz", "embeddings__spectral_stats", (10**6, 10**6)))
            ]
        ),
        2,
        "declares shape (1000000, 1000000)",
    ),
    (
        "inspect --dpi 100000",
        7,
        _inspect(lambda ws: [str(ws.root), "--plot", str(ws.root / "x.png"), "--dpi", "100000"]),
        2,
        "--dpi",
    ),
    (
        "inspect --plot-places 0",
        7,
        _inspect(lambda ws: [str(ws.root), "--plot", str(ws.root / "x.png"), "--plot-places", "0"]),
        2,
        "--plot-places",
    ),
    (
        "inspect --plot over the export",
        7,
        _inspect(
            lambda ws: [str(object_npz(ws.root / "o.npz", "k")), "--plot", str(ws.root / "o.npz")]
        ),
        2,
        "give a new .png file name",
    ),
    (
        "load_export deep sidecar",
        7,
        _load(lambda ws: _per_item_with(ws, deep_json())[0]),
        ValueError,
        "nested too deeply",
    ),
    (
        "load_export absurd shape",
        7,
        _load(lambda ws: crafted_npz(ws.root / "h.npz", "embeddings__m", (10**7, 10**6))),
        ValueError,
        "declares shape",
    ),
    (
        "load_export object array",
        7,
        _load(lambda ws: object_npz(ws.root / "o.npz", "embeddings__m")),
        ValueError,
        "holds Python objects",
    ),
    # 8. the Python API: wrong types refused at the call
    ("weights='random'", 8, _api(weights="random"), InputTypeError, "weights must be a mapping"),
    (
        "weights value an int",
        8,
        _api(weights={"spectral_stats": 1}),
        InputTypeError,
        "weights['spectral_stats']",
    ),
    (
        "model_configs a string",
        8,
        _api(model_configs={"spectral_stats": "a=1"}),
        InputTypeError,
        "model_configs['spectral_stats']",
    ),
    (
        "PointBuffer string lon",
        8,
        _api(spatials=[PointBuffer("15", 45.0, 160.0)]),
        SpecError,
        "PointBuffer.lon must be a number, got str",
    ),
    (
        "BBox bool bound",
        8,
        _api(spatials=[BBox(True, 45.0, 16.0, 46.0)]),
        SpecError,
        "BBox.minlon must be a number, got bool",
    ),
    ("models a string", 8, _api(models="spectral_stats"), InputTypeError, "use ['spectral_stats']"),
    (
        "temporal a string",
        8,
        _api(temporal="2022"),
        InputTypeError,
        "temporal must be a TemporalSpec",
    ),
    ("chunk_size 2.5", 8, _api(chunk_size=2.5), InputTypeError, "chunk_size must be an integer"),
    (
        "save_inputs 'no'",
        8,
        _api(save_inputs="no"),
        InputTypeError,
        "save_inputs must be True or False",
    ),
    (
        "retry_backoff_s '1'",
        8,
        _api(retry_backoff_s="1"),
        InputTypeError,
        "retry_backoff_s must be a number",
    ),
    (
        "provider_options a list",
        8,
        _api(provider_options=[("a", 1)]),
        InputTypeError,
        "provider_options must be a mapping",
    ),
    ("out an int", 8, _api(out=123), InputTypeError, "out must be a path"),
    ("names a string", 8, _api(names="a"), InputTypeError, "names must be a list of strings"),
    (
        "per_model_sensors a string",
        8,
        _api(per_model_sensors={"spectral_stats": "S2"}),
        InputTypeError,
        "per_model_sensors['spectral_stats']",
    ),
    (
        "unknown model option (API)",
        8,
        _api(model_configs={"spectral_stats": {"x": 1}}),
        ModelError,
        "unknown model_config key(s) ['x']",
    ),
]


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "not a checkpoint")
    return path


@pytest.fixture
def no_ray(monkeypatch):
    """Record any attempt to start Ray or run a plan; the case asserts there was none."""
    import ray

    from rs_embed_ray.pipeline import runner

    calls: list[str] = []
    was = ray.is_initialized()

    def record(name: str) -> Callable[..., Any]:
        def fn(*a: Any, **k: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} was called for bad input")

        return fn

    monkeypatch.setattr(ray, "init", record("ray.init"))
    monkeypatch.setattr(runner, "ensure_ray", record("ensure_ray"))
    monkeypatch.setattr(runner, "run_plan", record("run_plan"))
    yield calls
    assert ray.is_initialized() == was


def test_table_covers_every_class():
    assert len(CASES) >= 60
    assert {c[1] for c in CASES} == set(range(1, 9))
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("label,klass,build,expected,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, no_ray, label, klass, build, expected, needle):
    ws = Ws(tmp_path)
    kind, payload = build(ws)
    before = snapshot(tmp_path)
    if kind == "cli":
        res = CliRunner().invoke(main, payload)
        assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
        assert isinstance(res.exception, SystemExit), repr(res.exception)
        assert needle in res.output, res.output
        assert "Traceback" not in res.output
        assert res.output.strip().lower().startswith(("error:", "usage:")), res.output
    else:
        with pytest.raises(expected) as info:
            payload()
        assert needle in str(info.value), str(info.value)
    assert snapshot(tmp_path) == before, "the file system changed"
    assert no_ray == [], no_ray


# -- around the table -----------------------------------------------------------------------------


def test_names_are_kept_exactly(tmp_path):
    """No type guessing: 007, NA, null, 1 and 01 are five different names, as written."""
    from rs_embed_ray.io.points import read_places

    f = tmp_path / "p.csv"
    f.write_text(
        "name,lon,lat,buffer_m\n007,15,45,10\nNA,15,45,10\nnull,15,45,10\n1,15,45,10\n01,15,45,10\n"
    )
    assert read_places(f).names == ["007", "NA", "null", "1", "01"]


def test_second_run_refused_before_ray(tmp_path, monkeypatch):
    """The output lock is taken before Ray starts: a held lock refuses a run at once (the
    real ``run_plan``; starting Ray is what must not happen)."""
    import ray

    from rs_embed_ray.pipeline import runner

    calls: list[str] = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append("ray.init"))
    monkeypatch.setattr(runner, "ensure_ray", lambda *a, **k: calls.append("ensure_ray"))
    ws = Ws(tmp_path)
    state = RunState(ws.out / "_rs_embed_ray")
    state.acquire()
    try:
        t0 = time.perf_counter()
        with pytest.raises(OutputLockedError, match="Another export"):
            export_batch(**ws.api())
        assert time.perf_counter() - t0 < 10
    finally:
        state.release()
    assert calls == []


def test_inspect_never_calls_an_unbacked_file_ok(tmp_path):
    """A sidecar that says ok over an array file that does not hold the array is counted
    failed and listed, not ok."""
    d = tmp_path / "exp"
    d.mkdir()
    object_npz(d / "p00000.npz", "embedding__spectral_stats")
    (d / "p00000.json").write_text(json.dumps({
        "point_index": 0, "status": "ok",
        "models": [{"model": "spectral_stats", "status": "ok",
                    "embedding": {"npz_key": "embedding__spectral_stats"}}],
    }))  # fmt: skip
    res = CliRunner().invoke(main, ["inspect", str(d)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["ok"] == 0 and summary["failed"] == 1
    assert summary["unverified_items"][0]["index"] == 0
    assert "Python objects" in summary["unverified_items"][0]["why"]


def test_address_without_cluster_in_a_process(tmp_path):
    """The real entry point: one line, exit 2, within seconds (Ray's own retries take a
    minute), nothing written."""
    ws = Ws(tmp_path)
    args = ws.args("--address", f"127.0.0.1:{closed_port()}")
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rs_embed_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    took = time.perf_counter() - t0
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "No Ray cluster answers" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert took < 30, took
    assert snapshot(tmp_path) == before


def test_read_only_file_system_refused(tmp_path, monkeypatch, no_ray):
    """A read-only mount (root writes through permissions, so os.access cannot tell).
    Mocked: this machine offers no read-only file system a test may use, so ``statvfs``
    reports ST_RDONLY for the case's folder, as the kernel does for a ``ro`` mount."""
    ws = Ws(tmp_path)
    real = os.statvfs

    class RO:
        def __init__(self, st: os.statvfs_result) -> None:
            self._st = st
            self.f_flag = st.f_flag | os.ST_RDONLY

    def statvfs(path: Any) -> Any:
        st = real(path)
        return RO(st) if str(path).startswith(str(tmp_path)) else st

    monkeypatch.setattr(os, "statvfs", statvfs)
    args = ws.args()
    before = snapshot(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "is on a read-only file system" in res.output, res.output
    assert snapshot(tmp_path) == before and no_ray == []
