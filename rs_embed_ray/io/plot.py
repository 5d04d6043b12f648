"""A quick look at an export as a PNG (``rs-embed-ray inspect PATH --plot OUT.png``).

* pooled outputs: the places on a lon/lat map, coloured by the first three principal
  components of their embeddings (R, G, B), one panel per model; places without an
  embedding are grey crosses;
* grid outputs: a few places, one row each: an RGB view of the saved input, then the
  embedding grid of each model with its first three principal components as RGB.

matplotlib is an optional extra (``pip install 'rs-embed-ray[plot]'``); it is used through
its object API (no pyplot, no global backend change). Every panel is ``PANEL_IN`` inches at
``dpi``: a pooled plot is ``n_models x 1`` panels, a grid plot ``(1 + n_models) x n_places``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io.atomic import atomic_path
from rs_embed_ray.io.load import ExportResult, ModelResult, _spatial_lonlat, load_export

PANEL_IN = 4.0
INSTALL_HINT = "pip install 'rs-embed-ray[plot]' (or: pip install matplotlib)"
_RGB_NAMES = (("B4", "B3", "B2"), ("RED", "GREEN", "BLUE"), ("R", "G", "B"))
_FIT_ROWS = 20000  # principal axes are fitted on at most this many vectors


class PlotUnavailable(ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(f"plotting needs matplotlib ({exc}): {INSTALL_HINT}") from None
    return matplotlib


MAX_PLOT_PIXELS = 100_000_000  # a crafted export with thousands of models draws no giant PNG


def plot_size(kind: str, n_models: int, n_places: int = 1, dpi: int = 100) -> tuple[int, int]:
    """``(width, height)`` in pixels of the PNG that :func:`plot_export` writes."""
    cols, rows = (n_models, 1) if kind == "pooled" else (1 + n_models, n_places)
    px = round(PANEL_IN * dpi)
    return cols * px, rows * px


# -- principal components ------------------------------------------------------------------


def pca_rgb(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(n, D)`` finite vectors -> ``(n, 3)`` colours in [0, 1]: the first three principal
    components, each stretched between its 2nd and 98th percentile (0.5 where flat)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.full((n, 3), 0.5)
    if n == 0:
        return out
    fit = x
    if n > _FIT_ROWS:
        fit = x[np.random.default_rng(seed).choice(n, _FIT_ROWS, replace=False)]
    mean = fit.mean(axis=0)
    fc = fit - mean
    if n >= 2 and x.shape[1] > 0:
        cov = fc.T @ fc if fc.shape[1] <= fc.shape[0] else None
        if cov is not None:
            vals, vecs = np.linalg.eigh(cov)
            axes = vecs[:, np.argsort(vals)[::-1][:3]]
        else:  # fewer vectors than dimensions: the SVD is the cheap way
            _, _, vt = np.linalg.svd(fc, full_matrices=False)
            axes = vt[:3].T
        comps = (x - mean) @ axes
        for k in range(comps.shape[1]):
            lo, hi = np.percentile(comps[:, k], [2, 98])
            if hi - lo > 1e-12 * max(1.0, abs(hi)):
                out[:, k] = np.clip((comps[:, k] - lo) / (hi - lo), 0.0, 1.0)
    return out


# -- figures -------------------------------------------------------------------------------


def _models_with_embeddings(res: ExportResult) -> list[ModelResult]:
    return [m for m in res.models.values() if m.embeddings is not None]


def _is_grid(emb: Any) -> bool:
    if isinstance(emb, list):
        return any(a is not None and np.ndim(a) >= 3 for a in emb)
    return np.ndim(emb) >= 4


def _rows(emb: Any, n: int) -> list[np.ndarray | None]:
    """One array or None per place, from a stacked (NaN rows) or ragged embedding."""
    if isinstance(emb, list):
        return [None if a is None else np.asarray(a, np.float32) for a in emb]
    arr = np.asarray(emb, dtype=np.float32)
    return [None if not np.isfinite(arr[i]).all() else arr[i] for i in range(min(n, len(arr)))]


def _lonlat(res: ExportResult) -> tuple[np.ndarray, np.ndarray]:
    pts = [_spatial_lonlat(s) for s in res.spatials]
    return np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)


def _pooled_figure(res: ExportResult, models: list[ModelResult], dpi: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = plot_size("pooled", len(models), dpi=dpi)
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    lon, lat = _lonlat(res)
    for k, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), k + 1)
        emb = np.asarray(m.embeddings, dtype=np.float32).reshape(res.n_items, -1)
        ok = np.isfinite(emb).all(axis=1) & np.isfinite(lon) & np.isfinite(lat)
        colours = pca_rgb(emb[ok])
        size = max(4.0, min(60.0, 4000.0 / max(1, res.n_items)))
        if (~ok).any():
            ax.scatter(lon[~ok], lat[~ok], c="0.6", marker="x", s=size, label="no embedding")
            ax.legend(loc="lower right", fontsize=7)
        ax.scatter(lon[ok], lat[ok], c=colours, s=size, edgecolors="none")
        ax.set_title(
            f"{m.name}: PCA(3) of {emb.shape[1]}-D, {int(ok.sum())}/{res.n_items} places",
            fontsize=9,
        )
        ax.set_xlabel("lon", fontsize=8)
        ax.set_ylabel("lat", fontsize=8)
        ax.tick_params(labelsize=7)
        mid = np.nanmean(lat) if np.isfinite(lat).any() else 0.0
        ax.set_aspect(1.0 / max(0.1, math.cos(math.radians(float(mid)))), adjustable="datalim")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.1, wspace=0.3)
    return fig


def _manifest_bands(res: ExportResult, model: str) -> list[str]:
    entries = res.manifest.get("models") if isinstance(res.manifest, dict) else None
    for e in entries or []:
        if isinstance(e, dict) and e.get("model") == model:
            bands = ((e.get("sensor") or {}) or {}).get("bands")
            if isinstance(bands, list):
                return [str(b) for b in bands]
    return []


def _stretch(img: np.ndarray) -> np.ndarray:
    out = np.zeros_like(img, dtype=np.float64)
    for c in range(img.shape[-1]):
        band = img[..., c]
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, [2, 98])
        scale = hi - lo if hi > lo else 1.0
        out[..., c] = np.clip((np.nan_to_num(band, nan=lo) - lo) / scale, 0.0, 1.0)
    return out


def input_rgb(x: np.ndarray, bands: list[str]) -> np.ndarray:
    """An ``(H, W, 3)`` view in [0, 1] of a ``(C, H, W)`` / ``(T, C, H, W)`` input: red,
    green and blue bands when the sensor names them, else the first three channels."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4:  # a time series: the mean over time
        a = np.nanmean(a, axis=0)
    upper = [b.upper() for b in bands]
    pick = next(
        ([upper.index(n) for n in names] for names in _RGB_NAMES if all(n in upper for n in names)),
        None,
    )
    if pick is None or max(pick) >= a.shape[0]:
        pick = [min(i, a.shape[0] - 1) for i in range(3)]
    return _stretch(np.moveaxis(a[pick], 0, -1))


def _input_of(models: list[ModelResult], i: int) -> tuple[ModelResult, np.ndarray] | None:
    """The first saved input of place ``i`` among the models, with its model."""
    for m in models:
        if m.inputs is None:
            continue
        x = m.inputs[i] if i < len(m.inputs) else None
        if x is not None and np.isfinite(np.asarray(x, dtype=np.float64)).any():
            return m, np.asarray(x)
    return None


def _grid_figure(
    res: ExportResult, models: list[ModelResult], max_places: int, dpi: int
) -> tuple[Any, list[int]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grids = [m for m in models if _is_grid(m.embeddings)]
    rows = {m.name: _rows(m.embeddings, res.n_items) for m in grids}
    places = [i for i in range(res.n_items) if any(rows[m.name][i] is not None for m in grids)]
    places = places[: max(1, max_places)]
    if not places:
        raise ValueError("nothing to plot: no place has a grid embedding")
    w, h = plot_size("grid", len(grids), len(places), dpi=dpi)
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ncols = 1 + len(grids)
    # one PCA per model over the pixels of every shown place: colours compare across places
    images: dict[str, dict[int, np.ndarray]] = {}
    for m in grids:
        chosen = {i: rows[m.name][i] for i in places if rows[m.name][i] is not None}
        pix = [a.reshape(a.shape[0], -1).T for a in chosen.values()]
        colours = pca_rgb(np.concatenate(pix)) if pix else np.zeros((0, 3))
        images[m.name] = {}
        pos = 0
        for i, a in chosen.items():
            hw = a.shape[1] * a.shape[2]
            images[m.name][i] = colours[pos : pos + hw].reshape(a.shape[1], a.shape[2], 3)
            pos += hw
    names = res.manifest.get("names") if isinstance(res.manifest, dict) else None
    for r, i in enumerate(places):
        label = names[i] if isinstance(names, list) and i < len(names) else f"item {i}"
        ax = fig.add_subplot(len(places), ncols, r * ncols + 1)
        src = _input_of(models, i)
        if src is not None:
            ax.imshow(input_rgb(src[1], _manifest_bands(res, src[0].name)))
            ax.set_title(f"{label}: input ({src[0].name})", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no saved input", ha="center", va="center", fontsize=9)
            ax.set_title(f"{label}: input", fontsize=8)
        ax.set_axis_off()
        for k, m in enumerate(grids):
            ax = fig.add_subplot(len(places), ncols, r * ncols + 2 + k)
            img = images[m.name].get(i)
            if img is None:
                ax.text(0.5, 0.5, "no embedding", ha="center", va="center", fontsize=9)
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{m.name}: PCA(3)", fontsize=8)
            ax.set_axis_off()
    fig.subplots_adjust(left=0.02, right=0.98, top=0.94, bottom=0.02, wspace=0.05, hspace=0.15)
    return fig, places


def plot_export(
    path: str | os.PathLike[str] | ExportResult,
    out: str | os.PathLike[str],
    *,
    max_places: int = 4,
    dpi: int = 100,
) -> dict[str, Any]:
    """Write the quick-look PNG of an export (see the module doc); return what was drawn:
    ``{"path", "kind" ("pooled" | "grid"), "models", "places" (grid), "width", "height"}``."""
    require_matplotlib()
    if int(dpi) < 10:
        raise ValueError(f"dpi must be >= 10, got {dpi}.")
    res = path if isinstance(path, ExportResult) else load_export(path)
    models = _models_with_embeddings(res)
    if not models:
        raise ValueError(
            "nothing to plot: no model of this export has embeddings "
            f"(statuses: { {k: m.status for k, m in res.models.items()} })."
        )
    w, h = plot_size("grid", len(models), int(max_places), int(dpi))  # the largest it can be
    if w * h > MAX_PLOT_PIXELS:
        raise ValueError(
            f"the plot would be up to {w} x {h} px ({len(models)} model(s), {max_places} "
            f"place(s) at {dpi} dpi), more than {MAX_PLOT_PIXELS} px: lower --dpi or "
            "--plot-places."
        )
    info: dict[str, Any]
    if any(_is_grid(m.embeddings) for m in models):
        fig, places = _grid_figure(res, models, max_places, int(dpi))
        grids = [m.name for m in models if _is_grid(m.embeddings)]
        info = {"kind": "grid", "models": grids, "places": places}
        w, h = plot_size("grid", len(grids), len(places), int(dpi))
    else:
        fig = _pooled_figure(res, models, int(dpi))
        info = {"kind": "pooled", "models": [m.name for m in models]}
        w, h = plot_size("pooled", len(models), dpi=int(dpi))
    target = Path(out)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=int(dpi))
    return {"path": str(target.resolve()), **info, "width": w, "height": h}


__all__ = ["PlotUnavailable", "pca_rgb", "plot_export", "plot_size", "require_matplotlib"]
