"""Google Satellite Embedding (``gse``): the precomputed annual 64-D product, no network weights.

Why a "model" with no weights: the embedding *is* the pixels of
``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` (bands ``A00``..``A63``, one 64-D unit vector per
10 m pixel and year). The provider fetches it like any sensor (mosaic over the year, EPSG:3857
lattice at ``scale_m``, ``-9999`` fill -> NaN, spec §1.10); this class only reduces it.

* input: (64, H, W) float32 in the catalog band order (a 1-frame TCHW is squeezed); any
  remaining ``-9999`` fill (user data) is turned into NaN as well;
* the fetch-square ROI window (``fetch_meta["roi_window_geo"]``) is cropped back in pixel
  units (rounded outward) first;
* pooled: ``nanmean`` (or ``nanmax`` for ``pooling="max"``) over H, W per band -> (64,).
  An ROI with no valid pixel raises :class:`ModelError` (rs-embed does the same);
* grid: the (64, h, w) pixel grid itself, NaN kept where there is no data (rs-embed's
  behaviour). ``model_config["grid_nodata"]`` (a number) fills those pixels instead, e.g.
  for a pipeline that rejects NaN embeddings.

Tiling does not apply (``manages_own_input_prep``): the grid is already per pixel, so the
tiler passes the whole patch through. Temporal: year (a range uses its start year; the
provider does that and warns).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG, GSE
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, nan_pool, pooled_embedding
from rs_embed_ray.models.preprocess import roi_window_from_meta
from rs_embed_ray.models.runtime import Batch, BatchEmbedder

log = logging.getLogger(__name__)

GSE_FILL = -9999.0


class GoogleSatelliteEmbedding(BatchEmbedder):
    """Reduce fetched GSE pixels to pooled (64,) or grid (64, h, w) embeddings.

    ``model_config``: ``grid_nodata`` (float; default: keep NaN), ``bands`` (the band names
    of the input's channels when a custom sensor fetched a subset; default A00..A63).
    """

    info: ClassVar[ModelInfo] = CATALOG["gse"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset({"grid_nodata", "bands"})
    manages_own_input_prep = True
    batch_size_cpu = 64
    batch_size_cuda = 64

    def _load(self, weights: str | None) -> None:
        if weights is not None and str(weights).strip():
            raise ModelError(
                "gse is a precomputed product (Earth Engine pixels); it has no weights, so "
                f"weights={weights!r} cannot apply. Drop the weights entry for gse."
            )
        cfg = self.model_config
        self.bands = tuple(cfg.get("bands") or self.info.sensor.bands)  # type: ignore[union-attr]
        fill = cfg.get("grid_nodata")
        self.grid_nodata = None if fill is None else float(fill)
        self.weights_record = {
            "weights": "none (precomputed product)",
            "sha256": None,
            "source": f"gee:{GSE}",
        }

    def _as_chw(self, x: Any) -> np.ndarray:
        a = np.array(x, dtype=np.float32)  # a copy: NaN-marking must not touch the caller's
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        c = len(self.bands)
        if a.ndim != 3 or a.shape[0] != c:
            raise ModelError(
                f"gse expects (C, H, W) input with C={c} bands "
                f"({self.bands[0]}..{self.bands[-1]}), got {tuple(a.shape)}."
            )
        if a.shape[1] < 1 or a.shape[2] < 1:
            raise ModelError(f"gse got an empty input of shape {tuple(a.shape)}.")
        a[a == GSE_FILL] = np.nan
        a[~np.isfinite(a)] = np.nan
        return a

    def _embed(self, batch: Batch) -> list[Embedding]:
        output, temporal = batch.output, batch.temporal
        year = None
        if temporal is not None:
            year = temporal.year if temporal.mode == "year" else int(str(temporal.start)[:4])
        out: list[Embedding] = []
        for i in range(len(batch)):
            a = self._as_chw(batch.inputs[i])
            h0, w0 = int(a.shape[1]), int(a.shape[2])
            win = roi_window_from_meta(batch.metas[i])
            meta: dict[str, Any] = {
                "model": "gse",
                "kind": "precomputed",
                "weights": dict(self.weights_record),
                "collection": GSE,
                "bands": list(self.bands),
                "input_hw": [h0, w0],
                "output_mode": output.mode,
            }
            if year is not None:
                meta["year"] = int(year)
            grid_meta = (batch.metas[i] or {}).get("grid")
            if isinstance(grid_meta, dict) and grid_meta.get("scale_m"):
                meta["scale_m"] = float(grid_meta["scale_m"])
            a = crop_to_roi(a, win, meta, box_key="roi_pixel_box")
            valid = np.isfinite(a).any(axis=0)
            meta["nodata_fraction"] = float(1.0 - valid.mean())
            if output.mode == "pooled":
                if not valid.any():
                    raise ModelError(
                        "gse: every pixel of the ROI is nodata (-9999) for this year; there is "
                        "no embedding to pool. Check the year and the place (GSE covers land "
                        "from 2017 on)."
                    )
                meta["pooling"] = f"nan{output.pooling}"
                out.append(pooled_embedding(nan_pool(a, output.pooling), meta))
            else:
                if self.grid_nodata is not None:
                    a = np.where(np.isfinite(a), a, np.float32(self.grid_nodata))
                    meta["grid_nodata"] = self.grid_nodata
                out.append(grid_embedding(a, meta, "pixels_epsg3857"))
        return out


__all__ = ["GSE_FILL", "GoogleSatelliteEmbedding"]
