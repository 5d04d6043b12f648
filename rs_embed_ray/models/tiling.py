"""Input prep for patches larger than a model's input: tile + stitch, or pass through (resize).

Why tile: a 512 px patch squeezed into a 224 px ViT loses half its resolution. Tiling runs
the model at native resolution on ``tile_size`` squares and merges the outputs back into
one embedding per place. Behaviour follows the export contract (spec §1.6):

* tile size: ``InputPrepSpec.tile_size``, else the embedder's
  ``resolve_input_image_size(model_config)`` hook if it has one, else ``info.image_size``;
  no size at all degrades to a plain call;
* layout "cover_shift": starts ``0, T, 2T, ...`` and the last tile is shifted back to end at
  the edge (stride == tile size only); an axis shorter than a tile gets one tile, padded to
  ``T`` by edge replication when ``pad_edges``;
* snap: an axis whose overhang past a multiple of ``T`` is at most
  ``round(tile_snap_frac * T)`` px is downscaled (bilinear) to that multiple, so the shifted
  last tile does not almost duplicate its neighbour;
* ``tile``: more than ``max_tiles_hard`` tiles -> ModelError, more than ``max_tiles`` -> a
  UserWarning; ``auto``: tiles only for grid output with ``1 < count <= max_tiles`` (and, for
  a model without a fixed input size, only when both axes exceed the tile); ``resize``:
  pass-through;
* merge: pooled = mean of tile vectors weighted by each tile's OWNED area (midpoint cuts,
  so every pixel counts once; weighted by the owned area inside the ROI window when the
  patch was squared), or max over the tiles that touch the ROI; grid = midpoint-cut stitch,
  then a crop to the ROI window (rounded outward).

Tiles of all inputs are flattened and sent to ``embed_batch`` in chunks of ``batch_size``.
A single-tile input (and every fall-back) is one plain call that keeps its fetch meta, so
the embedder crops to the ROI itself; its ``input_prep`` says ``resolved_mode: "resize"``.
Pure numpy: no torch, no ray.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedder, Embedding
from rs_embed_ray.models.preprocess import RoiWindow, roi_token_box, roi_window_from_meta
from rs_embed_ray.specs import (
    BBox,
    InputPrepSpec,
    OutputSpec,
    SpatialSpec,
    TemporalSpec,
    resolve_input_prep,
)

log = logging.getLogger(__name__)

INPUT_PREP_VERSION = 1


# ---------------------------------------------------------------------------------------
# geometry (pure functions, unit-tested)
# ---------------------------------------------------------------------------------------


def tile_starts(dim: int, tile: int, stride: int | None = None) -> list[int]:
    """Cover-shift starts along one axis: 0, s, 2s, ... and a last tile ending at ``dim``."""
    stride = int(stride or tile)
    if dim <= tile:
        return [0]
    starts = [0]
    while starts[-1] + stride + tile < dim:
        starts.append(starts[-1] + stride)
    last = dim - tile
    if last != starts[-1]:
        starts.append(last)
    return starts


def tile_count(h: int, w: int, tile: int, stride: int | None = None) -> int:
    return len(tile_starts(h, tile, stride)) * len(tile_starts(w, tile, stride))


def snap_length(dim: int, tile: int, snap_frac: float) -> int:
    """Drop a small overhang (<= round(snap_frac * tile) px) past a multiple of ``tile``."""
    if tile <= 0 or snap_frac <= 0.0 or dim <= tile:
        return int(dim)
    rem = int(dim) % int(tile)
    if 0 < rem <= round(snap_frac * tile):
        return int(dim) - rem
    return int(dim)


def resize_bilinear(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes (half-pixel centres, no antialias), float32.

    Same sampling as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)``; used only for the small snap downscale.
    """
    a = np.asarray(x, dtype=np.float32)
    h, w = a.shape[-2:]
    oh, ow = int(out_hw[0]), int(out_hw[1])

    def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, None)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = (src - i0).astype(np.float32)
        return i0, i1, lam

    if oh != h:
        i0, i1, lam = _axis(h, oh)
        lam_y = lam[:, None]
        a = a[..., i0, :] * (1.0 - lam_y) + a[..., i1, :] * lam_y
    if ow != w:
        i0, i1, lam = _axis(w, ow)
        a = a[..., i0] * (1.0 - lam) + a[..., i1] * lam
    return np.ascontiguousarray(a, dtype=np.float32)


def owned_ranges(starts: list[int], ends: list[int], dim: int) -> list[tuple[int, int]]:
    """Midpoint cuts: tile k owns [cut(k-1), cut(k)), cut(k) = (end_k + start_(k+1)) // 2."""
    out: list[tuple[int, int]] = []
    lo = 0
    for k in range(len(starts)):
        hi = dim if k == len(starts) - 1 else (ends[k] + starts[k + 1]) // 2
        hi = max(hi, lo + 1)
        out.append((lo, hi))
        lo = hi
    return out


def feature_range(rel_lo: int, rel_hi: int, span: int, n_feat: int) -> tuple[int, int]:
    """Input-pixel range inside a tile -> feature cells (floor start, ceil end, >= 1 cell)."""
    fs = math.floor(rel_lo / span * n_feat)
    fe = math.ceil(rel_hi / span * n_feat)
    fs = max(0, min(n_feat - 1, fs))
    fe = max(fs + 1, min(n_feat, fe))
    return fs, fe


def sub_spatial(spatial: SpatialSpec, *, hw: tuple[int, int], box: tuple[int, ...]) -> SpatialSpec:
    """The lon/lat box of a tile (linear in the patch; BBox only, PointBuffer unchanged)."""
    if not isinstance(spatial, BBox):
        return spatial
    h, w = hw
    y0, y1, x0, x1 = box
    dlon = spatial.maxlon - spatial.minlon
    dlat = spatial.maxlat - spatial.minlat
    return BBox(
        minlon=spatial.minlon + dlon * x0 / w,
        maxlon=spatial.minlon + dlon * x1 / w,
        maxlat=spatial.maxlat - dlat * y0 / h,
        minlat=spatial.maxlat - dlat * y1 / h,
        crs=spatial.crs,
    )


# ---------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------


@dataclass
class _Job:
    x: np.ndarray
    spatial: Any
    fetch_meta: dict[str, Any]


@dataclass
class _Plan:
    index: int
    jobs: list[_Job]
    prep_meta: dict[str, Any]
    tiled: bool = False
    input_hw: tuple[int, int] = (0, 0)
    tile_size: int = 0
    pad_edges: bool = False
    ys: list[int] = field(default_factory=list)
    xs: list[int] = field(default_factory=list)
    roi: RoiWindow | None = None
    orig_hw: tuple[int, int] = (0, 0)


def _minimal_meta(requested: str) -> dict[str, Any]:
    return {
        "prep_version": INPUT_PREP_VERSION,
        "requested_mode": requested,
        "resolved_mode": "resize",
    }


def resolve_tile_size(embedder: Embedder, prep: InputPrepSpec) -> tuple[int, bool]:
    """(tile size or 0, whether the model has a fixed input size)."""
    model_size: int | None = None
    hook = getattr(embedder, "resolve_input_image_size", None)
    if callable(hook):
        try:
            model_size = hook(getattr(embedder, "model_config", None))
        except TypeError:
            model_size = hook()
    if model_size is None:
        model_size = getattr(getattr(embedder, "info", None), "image_size", None)
    fixed = model_size is not None and int(model_size) > 0
    size = int(prep.tile_size or (model_size if fixed else 0) or 0)
    return size, fixed


def _plan_one(
    i: int,
    x: np.ndarray,
    spatial: Any,
    fetch_meta: dict[str, Any],
    *,
    prep: InputPrepSpec,
    output: OutputSpec,
    tile: int,
    fixed_size: bool,
    requested: str,
) -> _Plan:
    plain = _Plan(i, [_Job(x, spatial, fetch_meta)], _minimal_meta(requested))
    if prep.mode == "resize" or tile <= 0:
        return plain
    if x.ndim not in (3, 4):
        raise ModelError(f"Tiling supports CHW or TCHW inputs only, got shape {tuple(x.shape)}.")
    stride = int(prep.tile_stride or tile)
    if stride != tile:
        raise ModelError(
            "Current tiled input preprocessing supports tile_stride == tile_size only; "
            f"got tile_size={tile}, tile_stride={stride}."
        )
    h0, w0 = int(x.shape[-2]), int(x.shape[-1])
    h = snap_length(h0, tile, prep.tile_snap_frac)
    w = snap_length(w0, tile, prep.tile_snap_frac)
    count = tile_count(h, w, tile)
    if prep.mode == "auto":
        small = (h <= tile or w <= tile) and not fixed_size
        if output.mode != "grid" or count <= 1 or count > prep.max_tiles or small:
            return plain
    else:
        if count > prep.max_tiles_hard:
            raise ModelError(
                f"input_prep tile would create {count} tiles (> max_tiles_hard="
                f"{prep.max_tiles_hard}) for an input of {h0}x{w0} px at tile_size={tile}; "
                "reduce the requested area, raise max_tiles_hard, or use input_prep='resize'."
            )
        if count > prep.max_tiles:
            msg = (
                f"input_prep tile is producing {count} tiles (> max_tiles={prep.max_tiles}); "
                "this request may be slow or memory-heavy. Tiling proceeds; raise max_tiles "
                "to silence this warning."
            )
            log.warning(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)
    if count <= 1:
        return plain

    xs_arr = np.asarray(x, dtype=np.float32)
    snapped = (h, w) != (h0, w0)
    if snapped:
        xs_arr = resize_bilinear(xs_arr, (h, w))
    ys, xs = tile_starts(h, tile), tile_starts(w, tile)
    pad = bool(prep.pad_edges)
    tile_meta = {k: v for k, v in (fetch_meta or {}).items() if k != "roi_window_geo"}
    jobs: list[_Job] = []
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            t = xs_arr[..., y0:y1, x0:x1]
            if pad and (y1 - y0 < tile or x1 - x0 < tile):
                widths = [(0, 0)] * (t.ndim - 2) + [(0, tile - (y1 - y0)), (0, tile - (x1 - x0))]
                t = np.pad(t, widths, mode="edge")
            jobs.append(
                _Job(
                    np.ascontiguousarray(t),
                    sub_spatial(spatial, hw=(h, w), box=(y0, y1, x0, x1)),
                    dict(tile_meta),
                )
            )
    prep_meta: dict[str, Any] = {
        "prep_version": INPUT_PREP_VERSION,
        "requested_mode": requested,
        "resolved_mode": "tile",
        "tile_layout": "cover_shift",
        "tile_size": tile,
        "tile_stride": stride,
        "tile_count": len(jobs),
        "pad_edges": pad,
        "pad_policy": "edge_replicate" if pad else "none",
        "max_tiles": int(prep.max_tiles),
        "max_tiles_hard": int(prep.max_tiles_hard),
        "input_hw": [h, w],
        "tile_snap_frac": float(prep.tile_snap_frac),
    }
    if snapped:
        prep_meta["snapped_from_hw"] = [h0, w0]
        prep_meta["snapped_to_hw"] = [h, w]
    return _Plan(
        i,
        jobs,
        prep_meta,
        tiled=True,
        input_hw=(h, w),
        tile_size=tile,
        pad_edges=pad,
        ys=ys,
        xs=xs,
        roi=roi_window_from_meta(fetch_meta),
        orig_hw=(h0, w0),
    )


# ---------------------------------------------------------------------------------------
# merging
# ---------------------------------------------------------------------------------------


def _axis_layout(
    starts: list[int], dim: int, tile: int, pad: bool, n_feat: int
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per tile along one axis: (owned pixel range, feature cell range)."""
    ends = [min(dim, s + tile) for s in starts]
    owned = owned_ranges(starts, ends, dim)
    out = []
    for s, e, (lo, hi) in zip(starts, ends, owned, strict=True):
        span = tile if pad else (e - s)
        out.append(((lo, hi), feature_range(lo - s, hi - s, span, n_feat)))
    return out


def _merge(plan: _Plan, embs: list[Embedding], output: OutputSpec) -> Embedding:
    meta = dict(embs[0].meta or {})
    prep_meta = dict(plan.prep_meta)
    h, w = plan.input_hw
    meta["input_hw"] = list(plan.orig_hw)
    ny, nx = len(plan.ys), len(plan.xs)

    if output.mode == "pooled":
        mat = np.stack([np.asarray(e.data, dtype=np.float32).reshape(-1) for e in embs])
        rows = _axis_layout(plan.ys, h, plan.tile_size, plan.pad_edges, 1)
        cols = _axis_layout(plan.xs, w, plan.tile_size, plan.pad_edges, 1)
        roi = plan.roi
        weights = np.zeros(len(embs), dtype=np.float64)
        for r in range(ny):
            (ylo, yhi), _ = rows[r]
            for c in range(nx):
                (xlo, xhi), _ = cols[c]
                if roi is not None:
                    oy = max(0.0, min(yhi, roi[1] * h) - max(ylo, roi[0] * h))
                    ox = max(0.0, min(xhi, roi[3] * w) - max(xlo, roi[2] * w))
                    weights[r * nx + c] = oy * ox
                else:
                    weights[r * nx + c] = (yhi - ylo) * (xhi - xlo)
        if weights.sum() <= 0.0:  # ROI between cells: fall back to plain ownership
            weights[:] = 1.0
        if output.pooling == "max":
            vec = mat[weights > 0].max(axis=0)
        else:
            vec = (mat * (weights / weights.sum())[:, None].astype(np.float32)).sum(axis=0)
        prep_meta["merged_output"] = "pooled_reduce"
        if roi is not None:
            prep_meta["roi_cropped"] = True
        meta["input_prep"] = prep_meta
        return Embedding(data=np.ascontiguousarray(vec, dtype=np.float32), meta=meta)

    arrays = [np.asarray(e.data, dtype=np.float32) for e in embs]
    lead, gh, gw = arrays[0].shape[:-2], arrays[0].shape[-2], arrays[0].shape[-1]
    if arrays[0].ndim < 2 or any(a.shape != arrays[0].shape for a in arrays):
        raise ModelError(
            "Tiled grid merge needs equal per-tile grid shapes, got "
            f"{sorted({tuple(a.shape) for a in arrays})}."
        )
    rows = _axis_layout(plan.ys, h, plan.tile_size, plan.pad_edges, gh)
    cols = _axis_layout(plan.xs, w, plan.tile_size, plan.pad_edges, gw)
    out_h = sum(f[1] - f[0] for _, f in rows)
    out_w = sum(f[1] - f[0] for _, f in cols)
    out = np.zeros((*lead, out_h, out_w), dtype=np.float32)
    oy = 0
    for r in range(ny):
        fy0, fy1 = rows[r][1]
        ox = 0
        for c in range(nx):
            fx0, fx1 = cols[c][1]
            out[..., oy : oy + fy1 - fy0, ox : ox + fx1 - fx0] = arrays[r * nx + c][
                ..., fy0:fy1, fx0:fx1
            ]
            ox += fx1 - fx0
        oy += fy1 - fy0
    prep_meta["merged_output"] = "grid_stitch"
    prep_meta["stitched_grid_shape"] = [out_h, out_w]
    prep_meta["stitch_policy"] = "midpoint_cut"
    if plan.roi is not None:
        y0, y1, x0, x1 = roi_token_box(plan.roi, grid_h=out_h, grid_w=out_w)
        out = np.ascontiguousarray(out[..., y0:y1, x0:x1])
        prep_meta["roi_cropped"] = True
        prep_meta["roi_grid_shape"] = [int(out.shape[-2]), int(out.shape[-1])]
        meta["roi_window_geo"] = list(plan.roi)
    meta["grid_hw"] = [int(out.shape[-2]), int(out.shape[-1])]
    meta["input_prep"] = prep_meta
    return Embedding(data=out, meta=meta)


# ---------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------


def embed_with_prep(
    embedder: Embedder,
    inputs: list[np.ndarray],
    *,
    prep: InputPrepSpec | str | None,
    output: OutputSpec,
    spatials: list[SpatialSpec],
    temporal: TemporalSpec | None,
    fetch_metas: list[dict[str, Any]] | None,
    batch_size: int,
) -> list[Embedding]:
    """Embed raw patches with input prep; one embedding per input, in order.

    Tiles of all inputs are flattened and embedded in chunks of ``batch_size`` (tiles);
    results are merged per input and carry an ``input_prep`` meta block.
    """
    n = len(inputs)
    if n == 0:
        return []
    if len(spatials) != n:
        raise ModelError(f"embed_with_prep got {n} inputs but {len(spatials)} spatials.")
    metas = [dict(m or {}) for m in (fetch_metas or [{}] * n)]
    if len(metas) != n:
        raise ModelError(f"embed_with_prep got {n} inputs but {len(metas)} fetch_metas.")
    spec = resolve_input_prep(prep)
    requested = str(spec.mode)
    if getattr(embedder, "manages_own_input_prep", False):
        spec = InputPrepSpec.resize()
    tile, fixed = resolve_tile_size(embedder, spec)
    plans = [
        _plan_one(
            i,
            np.asarray(inputs[i]),
            spatials[i],
            metas[i],
            prep=spec,
            output=output,
            tile=tile,
            fixed_size=fixed,
            requested=requested,
        )
        for i in range(n)
    ]

    flat: list[tuple[int, _Job]] = [(p.index, j) for p in plans for j in p.jobs]
    results: list[Embedding] = []
    bs = max(1, int(batch_size))
    for k in range(0, len(flat), bs):
        chunk = flat[k : k + bs]
        got = embedder.embed_batch(
            [j.x for _, j in chunk],
            output=output,
            spatials=[j.spatial for _, j in chunk],
            temporal=temporal,
            fetch_metas=[j.fetch_meta for _, j in chunk],
        )
        if len(got) != len(chunk):
            raise ModelError(
                f"{type(embedder).__name__}.embed_batch returned {len(got)} embeddings for "
                f"{len(chunk)} inputs."
            )
        results.extend(got)

    out: list[Embedding] = []
    pos = 0
    for p in plans:
        embs = results[pos : pos + len(p.jobs)]
        pos += len(p.jobs)
        if p.tiled:
            out.append(_merge(p, embs, output))
        else:
            e = embs[0]
            meta = dict(e.meta or {})
            meta["input_prep"] = dict(p.prep_meta)
            out.append(Embedding(data=e.data, meta=meta))
    return out


__all__ = [
    "INPUT_PREP_VERSION",
    "embed_with_prep",
    "feature_range",
    "owned_ranges",
    "resize_bilinear",
    "resolve_tile_size",
    "roi_token_box",
    "snap_length",
    "sub_spatial",
    "tile_count",
    "tile_starts",
]
