"""A seeded GeoTessera tile folder in the published on-disk layout, for tests and benches.

Why a writer: the real product is ~100 MB per 0.1 degree tile and needs the network; tests
need a few small tiles whose values are known from a seed. The layout is the one geotessera
0.7.5 and 0.11.0 both read (``Registry.fetch`` / ``fetch_landmask``):

* ``global_0.1_degree_representation/{year}/grid_{lon:.2f}_{lat:.2f}/grid_..npy``: the
  quantised embedding, int8 (H, W, 128), and ``grid_.._scales.npy``: float32 (H, W) (or
  (H, W, 128) with ``scales_3d``); the value is ``int8 * scale`` (``dequantize_embedding``);
* ``global_0.1_degree_tiff_all/grid_{lon:.2f}_{lat:.2f}.tiff``: the tile's landmask, a
  uint8 GeoTIFF whose CRS (the tile's UTM zone, WGS84) and affine place the npy pixels;
* the registries: ``registry.parquet`` (geotessera 0.7.x: GeoParquet of tile centre points
  with ``year, lon, lat, hash, scales_hash, file_size``), ``manifest.parquet`` (0.11: plain
  parquet, ``year, lon, lat, grid_size, scales_size``) and ``landmasks.parquet``
  (``lon, lat, hash, file_size``).

Each tile's raster is the 0.1 degree cell's UTM bounding box snapped outward to ``pixel_m``
(the published tiles are 10 m; tests use coarser pixels to stay small, the reader does not
care). Only numpy, rasterio, pyproj and pandas/pyarrow are needed (geopandas for the 0.7
GeoParquet registry), so the anchor venv can run it too.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EMB_DIR = "global_0.1_degree_representation"
LANDMASK_DIR = "global_0.1_degree_tiff_all"
DIM = 128


def grid_name(lon: float, lat: float) -> str:
    """geotessera's tile name: ``grid_{lon:.2f}_{lat:.2f}`` of the tile centre."""
    return f"grid_{lon:.2f}_{lat:.2f}"


def utm_epsg(lon: float, lat: float) -> int:
    """The WGS84 UTM zone EPSG code of a point (326zz north, 327zz south)."""
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def tile_georef(lon: float, lat: float, pixel_m: float) -> tuple[int, tuple[float, ...], int, int]:
    """(epsg, rasterio affine (a, b, c, d, e, f), height, width) of the tile centred at
    (lon, lat): its 0.1 degree cell's UTM bounding box (edges densified), snapped outward."""
    from pyproj import Transformer

    epsg = utm_epsg(lon, lat)
    tf = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    t = np.linspace(0.0, 1.0, 11)
    w, s, e, n = lon - 0.05, lat - 0.05, lon + 0.05, lat + 0.05
    lons = np.concatenate([w + (e - w) * t, np.full(11, e), e - (e - w) * t, np.full(11, w)])
    lats = np.concatenate([np.full(11, s), s + (n - s) * t, np.full(11, n), n - (n - s) * t])
    xs, ys = tf.transform(lons, lats)
    p = float(pixel_m)
    x0, x1 = math.floor(min(xs) / p) * p, math.ceil(max(xs) / p) * p
    y0, y1 = math.floor(min(ys) / p) * p, math.ceil(max(ys) / p) * p
    width, height = round((x1 - x0) / p), round((y1 - y0) / p)
    return epsg, (p, 0.0, x0, 0.0, -p, y1), height, width


def tile_arrays(
    lon: float, lat: float, year: int, height: int, width: int, seed: int, scales_3d: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded (int8 (H, W, 128), float32 scales) of one tile; the seed mixes in the
    tile and year so neighbouring tiles differ."""
    key = (int(seed), int(year), round(lon * 100) % 100_000, round(lat * 100) % 100_000)
    rng = np.random.default_rng(key)
    q = rng.integers(-127, 128, size=(height, width, DIM), dtype=np.int16).astype(np.int8)
    shape = (height, width, DIM) if scales_3d else (height, width)
    scales = rng.uniform(0.002, 0.03, size=shape).astype(np.float32)
    return q, scales


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_landmask(path: Path, epsg: int, affine: tuple[float, ...], h: int, w: int) -> None:
    import rasterio
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff", width=w, height=h, count=1, dtype="uint8",
        crs=f"EPSG:{epsg}", transform=Affine(*affine),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((1, h, w), dtype=np.uint8))


def _write_registries(root: Path, rows: list[dict], which: Iterable[str]) -> None:
    import pandas as pd

    which = set(which)
    df = pd.DataFrame(rows)
    if "manifest" in which:  # geotessera 0.11: file-scan inventory schema
        df[["year", "lon", "lat", "grid_size", "scales_size"]].to_parquet(
            root / "manifest.parquet", index=False
        )
    if "registry" in which:  # geotessera 0.7.x: GeoParquet of tile centres
        import geopandas as gpd

        reg = df[["year", "lon", "lat", "hash", "scales_hash", "file_size"]].copy()
        gdf = gpd.GeoDataFrame(reg, geometry=gpd.points_from_xy(reg.lon, reg.lat), crs=4326)
        gdf.to_parquet(root / "registry.parquet", index=False)
    if "landmasks" in which or which & {"manifest", "registry"}:
        lm = df.drop_duplicates(["lon", "lat"])[["lon", "lat", "lm_hash", "lm_size"]]
        lm = lm.rename(columns={"lm_hash": "hash", "lm_size": "file_size"})
        lm.to_parquet(root / "landmasks.parquet", index=False)


def write_tessera_tiles(
    root: str | Path,
    tiles: Iterable[tuple[float, float]],
    *,
    years: Iterable[int] = (2021,),
    seed: int = 0,
    pixel_m: float = 50.0,
    scales_3d: bool = False,
    registries: Iterable[str] = ("registry", "manifest"),
    unlisted: Iterable[tuple[float, float]] = (),
) -> Path:
    """Write tiles centred at ``tiles`` (x.x5 degrees) for each year under ``root``; return
    ``root``. ``registries``: which registry files to write (``()`` for none). Tiles in
    ``unlisted`` are written to disk but left out of the registries."""
    root = Path(root)
    rows: list[dict] = []
    skip = {(round(a, 2), round(b, 2)) for a, b in unlisted}
    for year in years:
        for lon, lat in tiles:
            lon, lat = round(float(lon), 2), round(float(lat), 2)
            name = grid_name(lon, lat)
            epsg, affine, h, w = tile_georef(lon, lat, pixel_m)
            q, scales = tile_arrays(lon, lat, year, h, w, seed, scales_3d)
            d = root / EMB_DIR / str(year) / name
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / f"{name}.npy", q)
            np.save(d / f"{name}_scales.npy", scales)
            lm = root / LANDMASK_DIR / f"{name}.tiff"
            if not lm.exists():
                _write_landmask(lm, epsg, affine, h, w)
            if (lon, lat) in skip:
                continue
            rows.append(
                {
                    "year": int(year),
                    "lon": lon,
                    "lat": lat,
                    "hash": _sha256(d / f"{name}.npy"),
                    "scales_hash": _sha256(d / f"{name}_scales.npy"),
                    "file_size": (d / f"{name}.npy").stat().st_size,
                    "grid_size": (d / f"{name}.npy").stat().st_size,
                    "scales_size": (d / f"{name}_scales.npy").stat().st_size,
                    "lm_hash": _sha256(lm),
                    "lm_size": lm.stat().st_size,
                }
            )
    regs = tuple(registries)
    if regs and rows:
        _write_registries(root, rows, regs)
    log.info("wrote %d tessera tiles under %s", len(rows), root)
    return root


def write_tessera_geotiffs(root: str | Path, out: str | Path, year: int = 2021) -> list[Path]:
    """Export every tile of ``year`` as ``grid_{lon}_{lat}_{year}.tiff`` (float32, 128 bands,
    the tile's UTM CRS), the files ``geotessera --format tiff`` writes and TorchGeo's
    ``TesseraEmbeddings`` reads."""
    import rasterio

    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for d in sorted((root / EMB_DIR / str(year)).iterdir()):
        name = d.name
        q = np.load(d / f"{name}.npy")
        s = np.load(d / f"{name}_scales.npy")
        emb = q.astype(np.float32) * (s[..., None] if s.ndim == 2 else s)
        with rasterio.open(root / LANDMASK_DIR / f"{name}.tiff") as lm:
            crs, transform = lm.crs, lm.transform
        h, w, c = emb.shape
        path = out / f"{name}_{year}.tiff"
        profile = dict(
            driver="GTiff", width=w, height=h, count=c, dtype="float32",
            crs=crs, transform=transform, nodata=np.nan,
        )  # fmt: skip
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.moveaxis(emb, -1, 0))
        written.append(path)
    return written


__all__ = [
    "DIM",
    "EMB_DIR",
    "LANDMASK_DIR",
    "grid_name",
    "tile_arrays",
    "tile_georef",
    "utm_epsg",
    "write_tessera_geotiffs",
    "write_tessera_tiles",
]
