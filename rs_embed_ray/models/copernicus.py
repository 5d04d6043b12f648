"""Copernicus-Embed (``copernicus``): the precomputed 768-D global product, read from one file.

Why a "model" that reads a file: the embedding *is* the pixel of the published map
(HF dataset ``torchgeo/copernicus_embed``, ``embed_map_310k.tif`` at a pinned revision): a
global EPSG:4326 GeoTIFF of 721 x 1440 cells at 0.25 deg, 768 bands, one vector per cell,
aggregated over 2021 (empty cells, mostly ocean, hold 0). Nothing is fetched from a provider
and no network runs forward: the place's spatial selects a window of the map (spec §1.10).

* the product file is resolved like weights (:func:`resolve_product`): explicit path
  (``weights={"copernicus": PATH}``, a ``.tif`` or a folder holding ``embed_map_*.tif``),
  ``model_config["data_dir"]``, ``$RS_EMBED_COP_DIR``, ``$RS_EMBED_RAY_WEIGHTS_DIR``, the
  Hugging Face cache (dataset repo, pinned revision), then a download that fails fast
  offline. A git-LFS pointer file (a clone without ``git lfs``) is detected by its content
  and refused with the way to get the real file. ``"random"`` is refused: a product has no
  random init;
* the file is opened once per embedder (once per Ray actor) with rasterio and read by
  windows, never whole; its sha256 is computed once per process
  (:func:`~rs_embed_ray.models.weights.file_sha256`, cached by path + size + mtime);
* georeferencing from the GeoTIFF tags (ModelPixelScale / ModelTiepoint, read by GDAL);
  an untagged file of the published 721 x 1440 shape falls back to left=-180,
  top=90.125, 0.25 deg (spec §1.10);
* BBox -> row/col window rounded outward; PointBuffer -> degrees with 111320 m/deg and
  cos(lat) (*ground* metres, unlike the EPSG:3857 squares used for fetched models); an ROI
  smaller than one cell raises; a window past the file's coverage is clipped (recorded);
* pooled: ``nanmean`` (or ``nanmax`` for ``pooling="max"``) over H, W -> (768,); an ROI with
  no valid cell raises. grid: the (768, h, w) cells on the product's 4326 grid, north-up,
  NaN kept. ``model_config["mask_empty"]=True`` treats all-zero cells (the product's "no
  data") as NaN; by default they count, as in rs-embed. ``empty_fraction`` is recorded;
* temporal: the product covers 2021 only. ``year(2021)``, a range starting in 2021, or no
  window; anything else is refused at plan time (:func:`check_request`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
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

HF_REPO = "torchgeo/copernicus_embed"
HF_FILENAME = "embed_map_310k.tif"
HF_REVISION = "435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb"
PRODUCT = f"hf-dataset:{HF_REPO}/{HF_FILENAME}@{HF_REVISION}"
PRODUCT_YEAR = 2021
DIM = 768
GLOBAL_HW = (721, 1440)
RES_DEG = 0.25
FALLBACK_LEFT = -180.0  # spec §1.10: used only when the file has no georeferencing tags
FALLBACK_TOP = 90.125
M_PER_DEG = 111_320.0
COP_DIR_ENV = "RS_EMBED_COP_DIR"
LFS_MAGIC = b"version https://git-lfs"
CONFIG_KEYS = ("data_dir", "mask_empty")
_EPS = 1e-9  # edges that sit on a cell boundary up to float noise do not grow the window
_RANDOM = frozenset({"random", "random-init", "random_init"})


# ---------------------------------------------------------------------------------------
# request checks (pure Python, run at plan time: no rasterio, no torch)
# ---------------------------------------------------------------------------------------


def product_year(temporal: TemporalSpec | None) -> int | None:
    """The year a window asks for: ``year`` mode's year, a range's start year, or None."""
    if temporal is None:
        return None
    if temporal.mode == "year":
        return int(temporal.year)  # type: ignore[arg-type]
    return int(str(temporal.start)[:4])


def check_year(temporal: TemporalSpec | None) -> int:
    """The product year (2021) if ``temporal`` asks for it (or for nothing); else raise."""
    year = product_year(temporal)
    if year is not None and year != PRODUCT_YEAR:
        what = f"year({year})" if temporal.mode == "year" else f"a range starting in {year}"  # type: ignore[union-attr]
        raise ModelError(
            f"copernicus is a single-year product (aggregated over {PRODUCT_YEAR}); the "
            f"request asks for {what}. Use TemporalSpec.year({PRODUCT_YEAR}) (CLI --year "
            f"{PRODUCT_YEAR}), a range that starts in {PRODUCT_YEAR}, or no time window, "
            "or drop copernicus from the models of this run."
        )
    return PRODUCT_YEAR


def is_lfs_pointer(path: str | os.PathLike[str]) -> bool:
    """True when the file is a git-LFS pointer text instead of the product's bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(LFS_MAGIC)) == LFS_MAGIC
    except OSError:
        return False


def _get_the_file() -> str:
    return (
        "Get the real file (GB-sized) on a machine with network, then pass it with "
        'weights={"copernicus": PATH} (CLI --weights copernicus=PATH) or put it in '
        f"${COP_DIR_ENV}:\n"
        f"  * hf download {HF_REPO} {HF_FILENAME} --repo-type dataset --revision "
        f"{HF_REVISION}\n"
        f"  * or https://huggingface.co/datasets/{HF_REPO}/resolve/{HF_REVISION}/{HF_FILENAME}\n"
        "  * or, in a git clone of the dataset repo: git lfs install && git lfs pull"
    )


def check_not_lfs(path: str | os.PathLike[str]) -> None:
    """Refuse a git-LFS pointer with the ways to get the real product file."""
    if is_lfs_pointer(path):
        size = os.path.getsize(path)
        raise WeightsError(
            f"copernicus: {path} is a git-LFS pointer ({size} bytes of text starting with "
            f"'{LFS_MAGIC.decode()}'), not the product GeoTIFF: the repo was cloned without "
            "git-lfs, so only the pointer was checked out.\n" + _get_the_file()
        )


def find_product_in(path: str | os.PathLike[str]) -> Path | None:
    """A product file at ``path``: the file itself, or in a folder ``embed_map_310k.tif``
    first, else the first ``embed_map_*.tif`` by name; None when there is none."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        return None
    if (p / HF_FILENAME).is_file():
        return p / HF_FILENAME
    found = sorted(q for q in p.glob("embed_map_*.tif*") if q.is_file())
    return found[0] if found else None


def _explicit(weights: str | None) -> Path | None:
    """The explicit product path, checked; None when none was given."""
    if weights is None or not str(weights).strip():
        return None
    spec = str(weights).strip()
    if spec.lower() in _RANDOM:
        raise ModelError(
            "copernicus is a precomputed product: there are no weights to initialise at "
            f"random, so weights={spec!r} makes no sense. Drop the weights entry, or pass "
            'the product file: weights={"copernicus": "/path/embed_map_310k.tif"}.'
        )
    hit = find_product_in(spec)
    if hit is None:
        where = "has no embed_map_*.tif" if Path(spec).expanduser().is_dir() else "does not exist"
        raise WeightsError(
            f"copernicus: the explicit product path {spec!r} {where}.\n" + _get_the_file()
        )
    check_not_lfs(hit)
    return hit


def check_request(
    *,
    weights: str | None,
    model_config: dict[str, Any] | None,
    temporals: list[TemporalSpec | None],
) -> None:
    """Plan-time checks (cheap, no file is opened beyond a pointer sniff): the year of every
    window, the weights entry (no "random"; an explicit path must hold the product and not
    be an LFS pointer) and the model_config keys."""
    for t in temporals:
        check_year(t)
    _explicit(weights)
    cfg = dict(model_config or {})
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(
            f"copernicus: unknown model_config key(s) {unknown}; known: {list(CONFIG_KEYS)}."
        )
    data_dir = cfg.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir).strip():
            raise ModelError("copernicus: model_config data_dir must be a folder path.")
        if not Path(data_dir).expanduser().exists():
            raise ModelError(
                f"copernicus: model_config data_dir {str(data_dir)!r} does not exist "
                "(a folder holding embed_map_*.tif, or the file itself)."
            )


# ---------------------------------------------------------------------------------------
# resolution of the product file (explicit, data_dir, env dirs, HF cache, download)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedProduct:
    """Where the product file comes from (``source``) and what was tried before."""

    path: Path
    source: str
    tried: tuple[str, ...] = ()


def resolve_product(
    weights: str | None,
    model_config: dict[str, Any] | None = None,
    *,
    allow_download: bool = True,
) -> ResolvedProduct:
    """Find the product file; the first hit wins (module docstring). Only files found by
    ``resolve_weights`` (weights dir, HF cache, download) are hashed here, into the same
    per-process cache the embedder reads.

    Raises WeightsError listing every location tried and how to get the file.
    """
    from rs_embed_ray.models.weights import resolve_weights

    hit = _explicit(weights)
    if hit is not None:
        return ResolvedProduct(Path(os.path.abspath(hit)), "explicit", (f"explicit: {hit}",))
    tried: list[str] = []
    cfg = dict(model_config or {})
    places = [
        ("model_config.data_dir", cfg.get("data_dir")),
        (f"env:{COP_DIR_ENV}", os.environ.get(COP_DIR_ENV, "").strip() or None),
    ]
    for source, folder in places:
        if not folder:
            tried.append(f"{source}: not set")
            continue
        tried.append(f"{source}: {folder} (embed_map_*.tif)")
        hit = find_product_in(folder)
        if hit is not None:
            check_not_lfs(hit)
            return ResolvedProduct(Path(os.path.abspath(hit)), source, tuple(tried))
    try:
        rw = resolve_weights(
            "copernicus",
            None,
            filename=HF_FILENAME,
            hf_repo=HF_REPO,
            hf_revision=HF_REVISION,
            hf_repo_type="dataset",
            allow_download=allow_download,
            random_ok=False,
        )
    except WeightsError as exc:
        raise WeightsError(
            "copernicus: the product file was not found. Tried:\n"
            + "\n".join(f"  - {t}" for t in tried)
            + "\n"
            + str(exc)
            + f"\n  * or set model_config data_dir / ${COP_DIR_ENV} to a folder holding it.\n"
            + _get_the_file()
        ) from None
    assert rw.path is not None
    check_not_lfs(rw.path)
    return ResolvedProduct(rw.path, rw.source, (*tried, *rw.tried))


# ---------------------------------------------------------------------------------------
# geometry (pure functions)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Georef:
    """A north-up lon/lat grid: the outer edges of cell (0, 0) and the cell size."""

    left: float
    top: float
    xres: float
    yres: float
    height: int
    width: int
    from_tags: bool = True

    @property
    def right(self) -> float:
        return self.left + self.width * self.xres

    @property
    def bottom(self) -> float:
        return self.top - self.height * self.yres

    def window_bounds(self, win: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """(minlon, minlat, maxlon, maxlat) of a (row0, row1, col0, col1) window."""
        r0, r1, c0, c1 = win
        return (
            self.left + c0 * self.xres,
            self.top - r1 * self.yres,
            self.left + c1 * self.xres,
            self.top - r0 * self.yres,
        )


def georef_from(transform: Any, crs: Any, height: int, width: int) -> Georef:
    """Georef of an opened file (rasterio ``transform`` and ``crs``): the tags, or the
    spec's fallback for an untagged file of the published shape; anything else raises."""
    identity = transform is None or tuple(transform)[:6] == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if identity and crs is None:
        if (height, width) != GLOBAL_HW:
            raise ModelError(
                f"copernicus: the product file has no georeferencing tags and is "
                f"{height} x {width} cells, not the published global {GLOBAL_HW[0]} x "
                f"{GLOBAL_HW[1]} grid, so its place on Earth is unknown. Use the published "
                "file (or add ModelPixelScale/ModelTiepoint tags)."
            )
        msg = (
            "copernicus: the product file has no georeferencing tags; assuming the published "
            f"global grid (left={FALLBACK_LEFT}, top={FALLBACK_TOP}, {RES_DEG} deg)."
        )
        log.warning(msg)
        return Georef(FALLBACK_LEFT, FALLBACK_TOP, RES_DEG, RES_DEG, height, width, False)
    if crs is not None:
        epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
        if epsg != 4326:
            raise ModelError(
                f"copernicus: the product file's CRS is {crs}, expected EPSG:4326 (lon/lat)."
            )
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    if b != 0.0 or d != 0.0 or a <= 0.0 or e >= 0.0:
        raise ModelError(
            "copernicus: the product file's grid is rotated or not north-up "
            f"(transform {a}, {b}, {c}, {d}, {e}, {f}); expected a plain lon/lat grid."
        )
    return Georef(c, f, a, -e, int(height), int(width), True)


def spatial_bbox_4326(spatial: SpatialSpec) -> tuple[float, float, float, float]:
    """(minlon, minlat, maxlon, maxlat) of a place. A PointBuffer's ``buffer_m`` is in
    *ground* metres here: 111320 m per degree of latitude, times cos(lat) for longitude
    (spec §1.10), not the EPSG:3857 metres of fetched squares."""
    if isinstance(spatial, BBox):
        spatial.validate()
        return (
            float(spatial.minlon),
            float(spatial.minlat),
            float(spatial.maxlon),
            float(spatial.maxlat),
        )
    if isinstance(spatial, PointBuffer):
        spatial.validate()
        lat = float(spatial.lat)
        dlat = float(spatial.buffer_m) / M_PER_DEG
        dlon = float(spatial.buffer_m) / (M_PER_DEG * max(1e-6, math.cos(math.radians(lat))))
        return (spatial.lon - dlon, lat - dlat, spatial.lon + dlon, lat + dlat)
    raise ModelError(f"copernicus needs a BBox or PointBuffer place, got {type(spatial).__name__}.")


def bbox_window(
    bbox: tuple[float, float, float, float], geo: Georef
) -> tuple[tuple[int, int, int, int], bool]:
    """((row0, row1, col0, col1), clipped): the cells that touch ``bbox``, rounded outward,
    clipped to the file's coverage. An ROI smaller than one cell, or one outside the
    coverage, raises."""
    minlon, minlat, maxlon, maxlat = bbox
    w_deg, h_deg = maxlon - minlon, maxlat - minlat
    if w_deg < geo.xres - _EPS or h_deg < geo.yres - _EPS:
        mid = math.radians((minlat + maxlat) / 2)
        need = 0.5 * max(geo.yres * M_PER_DEG, geo.xres * M_PER_DEG * math.cos(mid))
        raise ModelError(
            f"copernicus: the ROI is {w_deg:.4g} x {h_deg:.4g} deg, smaller than one product "
            f"cell ({geo.xres} x {geo.yres} deg); the product cannot resolve it. Use a "
            f"BBox at least {geo.xres} deg wide and {geo.yres} deg tall, or a PointBuffer "
            f"with buffer_m >= {math.ceil(need)} here."
        )
    c0 = math.floor((minlon - geo.left) / geo.xres + _EPS)
    c1 = math.ceil((maxlon - geo.left) / geo.xres - _EPS)
    r0 = math.floor((geo.top - maxlat) / geo.yres + _EPS)
    r1 = math.ceil((geo.top - minlat) / geo.yres - _EPS)
    win = (max(r0, 0), min(r1, geo.height), max(c0, 0), min(c1, geo.width))
    if win[1] <= win[0] or win[3] <= win[2]:
        raise ModelError(
            f"copernicus: the ROI {tuple(round(v, 6) for v in bbox)} is outside the product "
            f"file's coverage ({geo.left}, {geo.bottom}, {geo.right}, {geo.top})."
        )
    return win, win != (r0, r1, c0, c1)


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


class CopernicusEmbed(BatchEmbedder):
    """Read Copernicus-Embed windows for places: pooled (768,) or grid (768, h, w).

    ``model_config``: ``data_dir`` (a folder holding ``embed_map_*.tif``, or the file),
    ``mask_empty`` (bool, default False: all-zero cells count as values).
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

    info: ClassVar[ModelInfo] = CATALOG["copernicus"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset({*CONFIG_KEYS})
    manages_own_input_prep = True
    batch_size_cpu = 64
    batch_size_cuda = 64

    def _load(self, weights: str | None) -> None:
        cfg = dict(self.model_config)
        check_request(weights=weights, model_config=cfg, temporals=[])
        self.mask_empty = bool(cfg.get("mask_empty", False))
        found = resolve_product(weights, cfg)
        try:
            import rasterio
        except ImportError as exc:  # pragma: no cover - rasterio is in the local extra
            raise ModelError(
                "copernicus reads its GeoTIFF with rasterio: pip install 'rs-embed-ray[local]'"
            ) from exc
        from rs_embed_ray.models.weights import file_sha256

        self.path = found.path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NotGeoreferencedWarning: see georef_from
                self._ds = rasterio.open(self.path)
        except Exception as exc:
            raise WeightsError(
                f"copernicus: cannot open {self.path} as a GeoTIFF ({exc}); it may be a "
                "partial download.\n" + _get_the_file()
            ) from exc
        try:
            if self._ds.count != DIM:
                raise ModelError(
                    f"copernicus: {self.path} has {self._ds.count} bands, expected {DIM}: "
                    "not the Copernicus-Embed product."
                )
            ds = self._ds
            self.geo = georef_from(ds.transform, ds.crs, ds.height, ds.width)
        except ModelError:
            self._ds.close()
            raise
        nodata = self._ds.nodata
        self.nodata = None if nodata is None or not np.isfinite(nodata) else float(nodata)
        self._lock = threading.Lock()  # a rasterio dataset is not safe across threads
        sha = file_sha256(self.path)  # once per process: cached by path + size + mtime
        self.weights_record = {
            "weights": str(self.path),
            "sha256": sha,
            "source": found.source,
            "product": PRODUCT,
        }
        log.info("copernicus product %s (source=%s, sha256=%s)", self.path, found.source, sha)

    def close(self) -> None:
        """Close the product file (the actor's end does it too)."""
        ds = getattr(self, "_ds", None)
        if ds is not None and not ds.closed:
            ds.close()

    def read_window(self, win: tuple[int, int, int, int]) -> np.ndarray:
        """(768, h, w) float32 cells of a (row0, row1, col0, col1) window, north-up."""
        from rasterio.windows import Window

        r0, r1, c0, c1 = win
        with self._lock:
            a = self._ds.read(window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype="float32")
        return np.asarray(a, dtype=np.float32)

    def _embed_one(self, spatial: SpatialSpec, output: OutputSpec, year: int) -> Embedding:
        bbox = spatial_bbox_4326(spatial)
        win, clipped = bbox_window(bbox, self.geo)
        a = self.read_window(win)
        if self.nodata is not None:
            a[a == np.float32(self.nodata)] = np.nan
        a[~np.isfinite(a)] = np.nan
        empty = np.isfinite(a).all(axis=0) & (a == 0.0).all(axis=0)
        if self.mask_empty:
            a[:, empty] = np.nan
        valid = np.isfinite(a).any(axis=0)
        r0, r1, c0, c1 = win
        geo = self.geo
        meta: dict[str, Any] = {
            "model": "copernicus",
            "kind": "precomputed",
            "weights": dict(self.weights_record),
            "product": PRODUCT,
            "year": year,
            "output_crs": "EPSG:4326",
            "product_resolution_deg": [geo.xres, geo.yres],
            "bbox_4326": [float(v) for v in bbox],
            "window": {"row0": r0, "row1": r1, "col0": c0, "col1": c1},
            "window_bounds_4326": [float(v) for v in geo.window_bounds(win)],
            # the window's affine (rasterio order a, b, c, d, e, f): x = c + a*col
            "transform": [
                geo.xres,
                0.0,
                geo.left + c0 * geo.xres,
                0.0,
                -geo.yres,
                geo.top - r0 * geo.yres,
            ],
            "georef": "tags" if geo.from_tags else "fallback",
            "y_axis_direction": "north_to_south",
            "roi_clipped_to_coverage": bool(clipped),
            "empty_fraction": float(empty.mean()),
            "nodata_fraction": float(1.0 - valid.mean()),
            "output_mode": output.mode,
        }
        if isinstance(spatial, PointBuffer):
            meta["buffer_convention"] = "ground metres (111320 m/deg, cos(lat))"
        if output.mode == "pooled":
            if not valid.any():
                raise ModelError(
                    "copernicus: the ROI has no valid cell (all NaN"
                    + (" or empty" if self.mask_empty else "")
                    + "); there is no embedding to pool."
                )
            meta["pooling"] = f"nan{output.pooling}"
            return pooled_embedding(nan_pool(a, output.pooling), meta)
        return grid_embedding(a, meta, "pixels_epsg4326")

    def _embed(self, batch: Batch) -> list[Embedding]:
        """One embedding per place, read from the product; ``inputs`` are placeholders
        (nothing is fetched for copernicus) and only their count is used."""
        n, spatials = len(batch), batch.spatials
        if len(spatials) != n:
            raise ModelError(f"copernicus got {n} inputs but {len(spatials)} spatials.")
        year = check_year(batch.temporal)
        return [self._embed_one(s, batch.output, year) for s in spatials]


__all__ = [
    "DIM",
    "HF_FILENAME",
    "HF_REPO",
    "HF_REVISION",
    "CopernicusEmbed",
    "Georef",
    "ResolvedProduct",
    "bbox_window",
    "check_request",
    "check_year",
    "find_product_in",
    "georef_from",
    "is_lfs_pointer",
    "resolve_product",
    "spatial_bbox_4326",
]
