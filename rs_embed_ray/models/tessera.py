"""GeoTessera (``tessera``): the precomputed 128-D annual 10 m product, read from a local tile
folder and resampled onto our EPSG:3857 10 m grid.

Why a "model" that reads files: the embedding *is* the pixel of the published product
(Tessera, via the ``geotessera`` package's tile format). Nothing is fetched from a provider
and no network runs forward; the place's spatial selects the tiles (spec §1.10).

* the tile folder is resolved like weights: ``weights={"tessera": DIR}``, then
  ``model_config["cache_dir"]``, then ``$RS_EMBED_TESSERA_CACHE``. It is the folder
  ``geotessera download --output DIR`` fills (geotessera's ``embeddings_dir``):
  ``global_0.1_degree_representation/{year}/grid_{lon}_{lat}/grid_{lon}_{lat}.npy`` (int8
  (H, W, 128)) + ``.._scales.npy`` (float32 (H, W) or (H, W, 128)), and
  ``global_0.1_degree_tiff_all/grid_{lon}_{lat}.tiff`` (the landmask GeoTIFF giving the
  tile's UTM CRS and affine). Verified against geotessera 0.7.5 and 0.11.0, which read the
  same layout. Nothing is ever downloaded: a needed tile that is not on disk is refused at
  plan time, before Ray starts (:func:`check_places`, each tile stat'ed once), with the
  ``geotessera download`` command that gets it (and again at read time, should it vanish);
* which tiles exist comes from the folder's registry when it has one (``registry.parquet``
  of geotessera 0.7.x, ``manifest.parquet`` of 0.11, also under a geotessera cache layout
  ``[registry/]<dataset>/manifest.parquet``; the registry cache folder itself is accepted
  as the folder too, which is how rs-embed 0.3.1 is pointed at tiles: run in the tile folder
  with ``RS_EMBED_TESSERA_CACHE=<tiles>/registry``): a tile the registry does not list for
  the year is not part of the product (open water) and leaves its pixels uncovered; a listed
  tile missing
  on disk is refused. Without a registry every intersecting 0.1 degree tile must be on disk;
* values: ``int8 * scales`` in float32 (geotessera's ``dequantize_embedding``), gathered
  only at the pixels the output needs (the npy files are memory-mapped, never read whole);
* resampling: nearest neighbour, each output pixel centre projected (pyproj) into the tile's
  CRS and floored through the inverse affine; tiles in (lon, lat) order, the first tile
  that covers a pixel wins (rs-embed 0.3.1 ``_resample_tiles_to_common_grid``); tiles from
  more than one UTM zone are logged as a seam;
* the grid: ``model_config["grid"]="provider"`` (default) is the grid our providers cut
  (:func:`rs_embed_ray.geo.grid_for`: a PointBuffer gets ``round(2*buffer/10)`` pixels a
  side, so the places of a run stack); ``"common_grid"`` is rs-embed 0.3.1's
  ``common_grid`` (the ROI's 3857 rectangle snapped outward, so a PointBuffer may get one
  more pixel). For a BBox both are the same grid;
* pooled: mean (or max for ``pooling="max"``) over H, W, uncovered pixels counting as 0
  as in rs-embed; ``model_config["mask_uncovered"]=True`` makes them NaN and pools with
  nanmean/nanmax instead. An ROI with no covered pixel raises. grid: (128, H, W) on the
  EPSG:3857 10 m grid, north-up, with ``transform`` in the meta;
* temporal: year windows; ``year(y)``, a range's start year, or (no window) 2021 as in
  rs-embed.

Departures from rs-embed 0.3.1 (kept reachable where they change values): rs-embed passes
the folder as ``GeoTessera(cache_dir=...)``, which geotessera reads as the *registry* cache
while tiles come from (and are downloaded into) the working directory; here the folder is
the tile folder and nothing is downloaded. geotessera 0.7.5 skips a tile it cannot fetch
(0.11 raises); here a missing tile is always refused.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import grid_embedding, nan_pool, pooled_embedding
from rs_embed_ray.models.runtime import Batch, BatchEmbedder
from rs_embed_ray.specs import BBox, OutputSpec, PointBuffer, SpatialSpec, TemporalSpec

log = logging.getLogger(__name__)

EMB_DIR = "global_0.1_degree_representation"
LANDMASK_DIR = "global_0.1_degree_tiff_all"
DIM = 128
SCALE_M = 10.0
DEFAULT_YEAR = 2021
CACHE_ENV = "RS_EMBED_TESSERA_CACHE"
CONFIG_KEYS = ("cache_dir", "grid", "mask_uncovered")
GRIDS = ("provider", "common_grid")
REGISTRY_FILES = ("manifest.parquet", "registry.parquet")
_RANDOM = frozenset({"random", "random-init", "random_init"})
_TILE_CACHE = 32  # open tiles kept per embedder (memory maps: cheap)


# ---------------------------------------------------------------------------------------
# request checks (plan time: no tile is opened)
# ---------------------------------------------------------------------------------------


def tessera_year(temporal: TemporalSpec | None) -> int:
    """The product year of a window: ``year`` mode's year, a range's start year, or 2021."""
    if temporal is None:
        return DEFAULT_YEAR
    if temporal.mode == "year":
        return int(temporal.year)  # type: ignore[arg-type]
    return int(str(temporal.start)[:4])


def _download_hint(root: str | Path, year: int | None = None) -> str:
    y = f"--year {year} " if year is not None else "--year YEAR "
    return (
        "Get the tiles on a machine with network (geotessera), then point tessera at the "
        f"folder:\n  geotessera download --bbox MINLON,MINLAT,MAXLON,MAXLAT {y}"
        f"--output {root}\nand pass it with weights={{'tessera': DIR}} (CLI --weights "
        f"tessera=DIR), model_config cache_dir, or ${CACHE_ENV}."
    )


def find_registry(folder: str | os.PathLike[str]) -> Path | None:
    """geotessera's registry in ``folder``: ``manifest.parquet`` (0.11) or ``registry.parquet``
    (0.7.x) there, or 0.11's cache layout one or two levels down (``v1.1-cam/manifest.parquet``,
    ``registry/v1.1-cam/manifest.parquet``); None when there is none."""
    p = Path(folder).expanduser()
    for name in REGISTRY_FILES:
        if (p / name).is_file():
            return p / name
    for pattern in (f"*/{REGISTRY_FILES[0]}", f"*/*/{REGISTRY_FILES[0]}"):
        nested = sorted(q for q in p.glob(pattern) if q.is_file())
        if nested:
            return nested[0]
    return None


def find_tile_root(path: str | os.PathLike[str]) -> Path | None:
    """The tile folder at ``path`` (holding ``global_0.1_degree_representation``); the parent
    when ``path`` is that folder itself, or a registry cache inside the tile folder (rs-embed
    0.3.1's ``RS_EMBED_TESSERA_CACHE=<tiles>/registry`` run in ``<tiles>``); else None."""
    p = Path(path).expanduser()
    if (p / EMB_DIR).is_dir():
        return p
    if p.name == EMB_DIR and p.is_dir():
        return p.parent
    if p.is_dir() and (p.parent / EMB_DIR).is_dir() and find_registry(p) is not None:
        return p.parent
    return None


def parse_config(model_config: dict[str, Any] | None) -> dict[str, Any]:
    """The checked model_config: unknown keys, a bad ``grid`` and a non-folder
    ``cache_dir`` are refused with the fix."""
    cfg = dict(model_config or {})
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(
            f"tessera: unknown model_config key(s) {unknown}; known: {list(CONFIG_KEYS)}."
        )
    grid = str(cfg.get("grid", "provider"))
    if grid not in GRIDS:
        raise ModelError(f"tessera: model_config grid={grid!r}; use one of {list(GRIDS)}.")
    cache = cfg.get("cache_dir")
    if cache is not None and (not isinstance(cache, (str, os.PathLike)) or not str(cache)):
        raise ModelError("tessera: model_config cache_dir must be a folder path.")
    return {
        "cache_dir": cache,
        "grid": grid,
        "mask_uncovered": bool(cfg.get("mask_uncovered", False)),
    }


@dataclass(frozen=True)
class ResolvedRoot:
    """The tile folder and where its path came from."""

    path: Path
    source: str
    tried: tuple[str, ...] = ()


def resolve_tile_root(weights: str | None, model_config: dict[str, Any] | None) -> ResolvedRoot:
    """The tile folder: explicit weights path > model_config cache_dir > $RS_EMBED_TESSERA_CACHE.
    Raises WeightsError listing what was tried (no download, no default folder)."""
    if weights is not None and str(weights).strip():
        spec = str(weights).strip()
        if spec.lower() in _RANDOM:
            raise ModelError(
                "tessera is a precomputed product: there are no weights to initialise at "
                f"random, so weights={spec!r} makes no sense. Pass the tile folder: "
                'weights={"tessera": "/path/to/tiles"}.'
            )
        hit = find_tile_root(spec)
        if hit is None:
            raise WeightsError(
                f"tessera: {spec!r} is not a GeoTessera tile folder (no {EMB_DIR}/ in it).\n"
                + _download_hint(spec)
            )
        return ResolvedRoot(hit.resolve(), "explicit", (f"explicit: {spec}",))
    cfg = parse_config(model_config)
    tried: list[str] = []
    for source, folder in (
        ("model_config.cache_dir", cfg["cache_dir"]),
        (f"env:{CACHE_ENV}", os.environ.get(CACHE_ENV, "").strip() or None),
    ):
        if not folder:
            tried.append(f"{source}: not set")
            continue
        tried.append(f"{source}: {folder}")
        hit = find_tile_root(folder)
        if hit is None:
            raise WeightsError(
                f"tessera: {source} {str(folder)!r} is not a GeoTessera tile folder (no "
                f"{EMB_DIR}/ in it).\n" + _download_hint(folder)
            )
        return ResolvedRoot(hit.resolve(), source, tuple(tried))
    raise WeightsError(
        "tessera: no tile folder given. Tried:\n"
        + "\n".join(f"  - {t}" for t in tried)
        + "\n"
        + _download_hint("DIR")
    )


def check_request(
    *,
    weights: str | None,
    model_config: dict[str, Any] | None,
    temporals: list[TemporalSpec | None],
) -> None:
    """Plan-time checks: the model_config, the tile folder, and that each window's year has
    a ``{year}/`` folder in it."""
    parse_config(model_config)
    root = resolve_tile_root(weights, model_config).path
    for t in temporals:
        year = tessera_year(t)
        if not (root / EMB_DIR / str(year)).is_dir():
            have = sorted(p.name for p in (root / EMB_DIR).iterdir() if p.is_dir())
            raise ModelError(
                f"tessera: the tile folder {root} has no tiles for {year} (years present: "
                f"{have or 'none'}). Pick one of those years (CLI --year) or download "
                f"{year}.\n" + _download_hint(root, year)
            )


# ---------------------------------------------------------------------------------------
# geometry (pure functions)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutGrid:
    """A north-up EPSG:3857 pixel grid: pixel (r, c) has its top-left corner at
    (x0 + c*s, y0 - r*s)."""

    x0: float
    y0: float
    scale: float
    height: int
    width: int

    def transform(self) -> list[float]:
        """Rasterio order (a, b, c, d, e, f)."""
        return [self.scale, 0.0, self.x0, 0.0, -self.scale, self.y0]

    def centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of every pixel centre, two (H, W) float64 arrays."""
        xs = self.x0 + (np.arange(self.width, dtype=np.float64) + 0.5) * self.scale
        ys = self.y0 - (np.arange(self.height, dtype=np.float64) + 0.5) * self.scale
        return np.meshgrid(xs, ys)

    def bounds_4326(self) -> tuple[float, float, float, float]:
        from rs_embed_ray.geo import xy3857_to_lonlat

        lon0, lat0 = xy3857_to_lonlat(self.x0, self.y0 - self.height * self.scale)
        lon1, lat1 = xy3857_to_lonlat(self.x0 + self.width * self.scale, self.y0)
        return (lon0, lat0, lon1, lat1)


def output_grid(spatial: SpatialSpec, grid: str = "provider", scale_m: float = SCALE_M) -> OutGrid:
    """The output grid of a place: our providers' grid, or rs-embed's ``common_grid``
    (snapped outward, eps 1e-9 px)."""
    from rs_embed_ray.geo import bounds_3857, grid_for

    if not isinstance(spatial, (BBox, PointBuffer)):
        raise ModelError(
            f"tessera needs a BBox or PointBuffer place, got {type(spatial).__name__}."
        )
    spatial.validate()
    s = float(scale_m)
    if grid == "provider":
        g = grid_for(spatial, s)
        return OutGrid(g.x0, g.y0, s, g.height, g.width)
    minx, miny, maxx, maxy = bounds_3857(spatial)
    eps = 1e-9
    c0, c1 = math.floor(minx / s + eps), math.ceil(maxx / s - eps)
    r0, r1 = math.floor(-maxy / s + eps), math.ceil(-miny / s - eps)
    return OutGrid(c0 * s, -r0 * s, s, max(1, r1 - r0), max(1, c1 - c0))


def tiles_for_bounds(bounds: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Centres (lon, lat) of the 0.1 degree tiles whose cells intersect ``bounds``, in
    (lon, lat) order."""
    minlon, minlat, maxlon, maxlat = bounds
    eps = 1e-9
    i0, i1 = math.floor(minlon * 10 + eps), math.ceil(maxlon * 10 - eps)
    j0, j1 = math.floor(minlat * 10 + eps), math.ceil(maxlat * 10 - eps)
    return [
        (round(i / 10 + 0.05, 2), round(j / 10 + 0.05, 2))
        for i in range(i0, max(i1, i0 + 1))
        for j in range(j0, max(j1, j0 + 1))
    ]


def grid_name(lon: float, lat: float) -> str:
    return f"grid_{lon:.2f}_{lat:.2f}"


# ---------------------------------------------------------------------------------------
# the tile folder
# ---------------------------------------------------------------------------------------


@dataclass
class Tile:
    """One opened tile: memory-mapped int8 values and scales, CRS and affine."""

    lon: float
    lat: float
    q: np.ndarray
    scales: np.ndarray
    crs: str
    inv: tuple[float, float, float, float, float, float]  # inverse affine (a..f)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.q.shape[0]), int(self.q.shape[1])


class TileFolder:
    """Reads tiles of a GeoTessera tile folder (thread-safe; a small LRU of open tiles)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._open: OrderedDict[tuple[int, float, float], Tile] = OrderedDict()
        self.registry_path = self._find_registry()
        self._listed: dict[int, np.ndarray] | None = None
        if self.registry_path is not None:
            self._listed = self._load_registry(self.registry_path)

    def _find_registry(self) -> Path | None:
        return find_registry(self.root)

    @staticmethod
    def _load_registry(path: Path) -> dict[int, np.ndarray]:
        """Per year, the sorted int64 keys ``lon_i * 100_000 + lat_i`` (hundredths of a
        degree) of the listed tiles: compact for a global registry of millions of rows."""
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(path, columns=["year", "lon", "lat"])
            year = np.asarray(t.column("year").to_numpy(), dtype=np.int64)
            lon = np.rint(np.asarray(t.column("lon").to_numpy(), dtype=np.float64) * 100)
            lat = np.rint(np.asarray(t.column("lat").to_numpy(), dtype=np.float64) * 100)
        except Exception as exc:
            raise WeightsError(
                f"tessera: cannot read the registry {path} ({exc}); it must be geotessera's "
                "registry.parquet / manifest.parquet (columns year, lon, lat)."
            ) from exc
        keys = lon.astype(np.int64) * 100_000 + lat.astype(np.int64)
        return {int(y): np.unique(keys[year == y]) for y in np.unique(year)}

    def paths(self, year: int, lon: float, lat: float) -> tuple[Path, Path, Path]:
        name = grid_name(lon, lat)
        d = self.root / EMB_DIR / str(year) / name
        return (
            d / f"{name}.npy",
            d / f"{name}_scales.npy",
            self.root / LANDMASK_DIR / f"{name}.tiff",
        )

    def candidates(
        self, year: int, bounds: tuple[float, float, float, float]
    ) -> list[tuple[float, float]]:
        """The product's tiles for ``bounds`` in ``year``: those the registry lists (every
        intersecting cell when there is no registry), on disk or not."""
        cands = tiles_for_bounds(bounds)
        if self._listed is not None and cands:
            listed = self._listed.get(int(year), np.zeros(0, dtype=np.int64))
            keys = np.array([round(lo * 100) * 100_000 + round(la * 100) for lo, la in cands])
            hit = np.isin(keys, listed)
            cands = [c for c, h in zip(cands, hit, strict=True) if h]
        return cands

    def on_disk(self, year: int, lon: float, lat: float) -> bool:
        return all(p.is_file() for p in self.paths(year, lon, lat))

    def refuse_missing(
        self, year: int, missing: list[tuple[float, float]], bounds: tuple[float, ...]
    ) -> ModelError:
        """The error for needed tiles that are not on disk, with the download command."""
        names = ", ".join(grid_name(*c) for c in missing[:6])
        more = f" (+{len(missing) - 6} more)" if len(missing) > 6 else ""
        why = (
            f"listed in the registry {self.registry_path.name} but"
            if self.registry_path is not None
            else "needed (the folder has no registry to say they are open water) but"
        )
        return ModelError(
            f"tessera: tile(s) {names}{more} for {year} are {why} not in {self.root} "
            f"(npy, scales and landmask). No download at run time.\n"
            + _download_hint(self.root, year).replace(
                "MINLON,MINLAT,MAXLON,MAXLAT", ",".join(f"{v:.4f}" for v in bounds)
            )
        )

    def needed(
        self, year: int, bounds: tuple[float, float, float, float]
    ) -> list[tuple[float, float]]:
        """The product's tiles for ``bounds`` in ``year``; a needed tile that is not on disk
        raises (with the command that downloads it)."""
        cands = self.candidates(year, bounds)
        missing = [c for c in cands if not self.on_disk(year, *c)]
        if missing:
            raise self.refuse_missing(year, missing, bounds)
        return cands

    def tile(self, year: int, lon: float, lat: float) -> Tile:
        key = (int(year), lon, lat)
        with self._lock:
            t = self._open.get(key)
            if t is not None:
                self._open.move_to_end(key)
                return t
        t = self._read(year, lon, lat)
        with self._lock:
            self._open[key] = t
            while len(self._open) > _TILE_CACHE:
                self._open.popitem(last=False)
        return t

    def _read(self, year: int, lon: float, lat: float) -> Tile:
        import rasterio
        from affine import Affine

        npy, sc, lm = self.paths(year, lon, lat)
        try:
            q = np.load(npy, mmap_mode="r")
            s = np.load(sc, mmap_mode="r")
            with rasterio.open(lm) as ds:
                crs, transform = ds.crs, ds.transform
                lm_hw = (ds.height, ds.width)
        except Exception as exc:
            raise ModelError(f"tessera: cannot read tile {grid_name(lon, lat)} ({exc}).") from exc
        if q.ndim != 3 or q.shape[-1] != DIM:
            raise ModelError(
                f"tessera: {npy} has shape {q.shape}; expected (H, W, {DIM}) quantised values."
            )
        if s.shape not in (q.shape[:2], q.shape):
            raise ModelError(f"tessera: {sc} has shape {s.shape}; expected {q.shape[:2]}.")
        if crs is None or tuple(lm_hw) != q.shape[:2]:
            raise ModelError(
                f"tessera: landmask {lm} (CRS {crs}, {lm_hw}) does not georeference the "
                f"{q.shape[:2]} tile."
            )
        inv = ~Affine(*tuple(transform)[:6])
        return Tile(lon, lat, q, s, crs.to_string(), tuple(inv)[:6])  # type: ignore[arg-type]


_TLS = threading.local()


def _transformer(crs: str) -> Any:
    """EPSG:3857 -> ``crs``, built once per thread and CRS (building one costs ~10 ms; a
    pyproj Transformer must not be shared across threads)."""
    from pyproj import Transformer

    cache = _TLS.__dict__.setdefault("transformers", {})
    if crs not in cache:
        cache[crs] = Transformer.from_crs("EPSG:3857", crs, always_xy=True)
    return cache[crs]


def resample_tiles(
    folder: TileFolder,
    year: int,
    tiles: list[tuple[float, float]],
    grid: OutGrid,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(128, H, W) float32 canvas (0 where uncovered), the covered mask, and the tile CRSs."""
    canvas = np.zeros((grid.height, grid.width, DIM), dtype=np.float32)
    filled = np.zeros((grid.height, grid.width), dtype=bool)
    gx, gy = grid.centers()
    by_crs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for lon, lat in tiles:
        t = folder.tile(year, lon, lat)
        if t.crs not in by_crs:
            x, y = _transformer(t.crs).transform(gx.ravel(), gy.ravel())
            by_crs[t.crs] = (np.reshape(x, gx.shape), np.reshape(y, gy.shape))
        x, y = by_crs[t.crs]
        a, b, c, d, e, f = t.inv
        col_f, row_f = a * x + b * y + c, d * x + e * y + f
        ok = np.isfinite(col_f) & np.isfinite(row_f)
        cols = np.floor(np.where(ok, col_f, -1.0)).astype(np.int64)
        rows = np.floor(np.where(ok, row_f, -1.0)).astype(np.int64)
        h, w = t.hw
        inside = ok & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & ~filled
        if not inside.any():
            continue
        r, cc = rows[inside], cols[inside]
        q = np.asarray(t.q[r, cc, :], dtype=np.float32)
        s = np.asarray(t.scales[r, cc], dtype=np.float32)
        canvas[inside] = q * (s[:, None] if s.ndim == 1 else s)
        filled |= inside
    return np.moveaxis(canvas, -1, 0), filled, sorted(by_crs)


def check_places(
    *,
    weights: str | None,
    model_config: dict[str, Any] | None,
    spatials: list[SpatialSpec],
    temporals: list[TemporalSpec | None],
) -> None:
    """Plan time: every tile the places need is on disk (each tile stat'ed once), so a missing
    tile is refused before any cluster work, with one download command covering them all.
    ``temporals``: one window per place, or one for the run."""
    cfg = parse_config(model_config)
    folder = TileFolder(resolve_tile_root(weights, model_config).path)
    seen: dict[tuple[int, float, float], bool] = {}
    missing: dict[int, list[tuple[float, float]]] = {}
    box = [math.inf, math.inf, -math.inf, -math.inf]
    for i, sp in enumerate(spatials):
        t = temporals[i] if len(temporals) == len(spatials) else temporals[0]
        year = tessera_year(t)
        bounds = output_grid(sp, cfg["grid"]).bounds_4326()
        for c in folder.candidates(year, bounds):
            key = (year, *c)
            if key not in seen:
                seen[key] = folder.on_disk(year, *c)
                if not seen[key]:
                    missing.setdefault(year, []).append(c)
                    lo, la = c
                    box = [
                        min(box[0], lo - 0.05),
                        min(box[1], la - 0.05),
                        max(box[2], lo + 0.05),
                        max(box[3], la + 0.05),
                    ]
    for year, tiles in sorted(missing.items()):
        raise folder.refuse_missing(year, tiles, tuple(box))


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


class Tessera(BatchEmbedder):
    """Read GeoTessera tiles for places: pooled (128,) or grid (128, H, W) on EPSG:3857 10 m.

    ``model_config``: ``cache_dir`` (the tile folder), ``grid`` (``provider`` |
    ``common_grid``), ``mask_uncovered`` (bool, default False: uncovered pixels are 0).
    """

    @classmethod
    def check_request(
        cls,
        *,
        weights: str | None,
        model_config: dict[str, Any] | None,
        temporals: list[TemporalSpec | None],
    ) -> None:
        check_request(weights=weights, model_config=model_config, temporals=temporals)

    @classmethod
    def check_places(
        cls,
        *,
        weights: str | None,
        model_config: dict[str, Any] | None,
        spatials: list[SpatialSpec],
        temporals: list[TemporalSpec | None],
    ) -> None:
        check_places(
            weights=weights, model_config=model_config, spatials=spatials, temporals=temporals
        )

    info: ClassVar[ModelInfo] = CATALOG["tessera"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    manages_own_input_prep = True
    batch_size_cpu = 64
    batch_size_cuda = 64

    def _load(self, weights: str | None) -> None:
        self.cfg = parse_config(self.model_config)
        found = resolve_tile_root(weights, self.model_config)
        self.folder = TileFolder(found.path)
        reg = self.folder.registry_path
        self.weights_record = {
            "weights": str(found.path),
            "sha256": None,
            "source": found.source,
            "product": "geotessera tiles",
            "registry": None if reg is None else str(reg),
        }
        log.info("tessera tile folder %s (source=%s, registry=%s)", found.path, found.source, reg)

    def embed_one(self, spatial: SpatialSpec, output: OutputSpec, year: int) -> Embedding:
        """One place's embedding (the unit batched calls repeat)."""
        grid = output_grid(spatial, self.cfg["grid"])
        bounds = grid.bounds_4326()
        tiles = self.folder.needed(year, bounds)
        if not tiles:
            raise ModelError(
                f"tessera: no tile of the product covers {tuple(round(v, 5) for v in bounds)} "
                f"in {year} (the registry lists none there: open water or outside coverage)."
            )
        chw, filled, crss = resample_tiles(self.folder, year, tiles, grid)
        if not filled.any():
            raise ModelError("tessera: the ROI does not overlap the tiles' pixels.")
        if len(crss) > 1:
            log.warning("tessera: the ROI spans UTM zones %s; expect a seam", crss)
        meta: dict[str, Any] = {
            "model": "tessera",
            "kind": "precomputed",
            "weights": dict(self.weights_record),
            "year": int(year),
            "output_crs": "EPSG:3857",
            "scale_m": SCALE_M,
            "transform": grid.transform(),
            "grid_convention": self.cfg["grid"],
            "resampling": "nearest",
            "bbox_4326": [float(v) for v in bounds],
            "tiles": [grid_name(*t) for t in tiles],
            "tile_crs": crss,
            "coverage": float(filled.mean()),
            "y_axis_direction": "north_to_south",
            "output_mode": output.mode,
        }
        if self.cfg["mask_uncovered"]:
            chw[:, ~filled] = np.nan
        if output.mode == "pooled":
            if self.cfg["mask_uncovered"]:
                meta["pooling"] = f"nan{output.pooling}"
                return pooled_embedding(nan_pool(chw, output.pooling), meta)
            meta["pooling"] = f"{output.pooling}_hw"
            vec = chw.max(axis=(1, 2)) if output.pooling == "max" else chw.mean(axis=(1, 2))
            return pooled_embedding(vec, meta)
        return grid_embedding(chw, meta, "pixels_epsg3857")

    def _embed(self, batch: Batch) -> list[Embedding]:
        """One embedding per place, read from the tiles; ``inputs`` are placeholders."""
        year = tessera_year(batch.temporal)
        if batch.temporal is None:
            log.info("tessera: no time window; using the default year %d", DEFAULT_YEAR)
        return [self.embed_one(s, batch.output, year) for s in batch.spatials]


__all__ = [
    "DIM",
    "OutGrid",
    "Tessera",
    "TileFolder",
    "check_places",
    "check_request",
    "find_registry",
    "find_tile_root",
    "output_grid",
    "parse_config",
    "resample_tiles",
    "resolve_tile_root",
    "tessera_year",
    "tiles_for_bounds",
]
