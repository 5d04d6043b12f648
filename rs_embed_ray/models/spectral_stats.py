"""``spectral_stats``: a parameter-free baseline embedding of a Sentinel-2 patch.

Why it exists: a quick, deterministic reference to compare foundation-model embeddings
against (and a second model with a different band set, so runs can share one band-union
fetch), which needs no weights. Pooled: per band mean, std and the 10/50/90th percentiles
of reflectance (DN / 10000) -> 5 x 4 = 20-D. Grid: per band block means on a 4 x 4 grid.
"""

from __future__ import annotations

import numpy as np

from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.runtime import Batch, BatchEmbedder
from rs_embed_ray.specs import SensorSpec

GRID = 4
BANDS = ("B2", "B3", "B4", "B8")

INFO = ModelInfo(
    model_id="spectral_stats",
    status="available",
    sensor=SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=BANDS, scale_m=10),
    dim_pooled=5 * len(BANDS),
    dim_grid=len(BANDS),
    grid_hw=(GRID, GRID),
    weights_source="none (parameter-free baseline)",
    notes="Not a foundation model: band statistics, for comparison and smoke tests.",
)


def _block_means(x: np.ndarray, n: int) -> np.ndarray:
    c, h, w = x.shape
    rows = np.array_split(np.arange(h), n)
    cols = np.array_split(np.arange(w), n)
    out = np.empty((c, n, n), dtype=np.float32)
    for i, r in enumerate(rows):
        for j, cc in enumerate(cols):
            block = x[:, r[0] : r[-1] + 1, cc[0] : cc[-1] + 1] if len(r) and len(cc) else x[:, :0]
            out[:, i, j] = np.nanmean(block.reshape(c, -1), axis=1) if block.size else np.nan
    return out


class SpectralStats(BatchEmbedder):
    info = INFO
    CONFIG_KEYS = frozenset()

    def _load(self, weights: str | None) -> None:
        self.weights_record = {"weights": "none (parameter-free)", "sha256": None}

    def _embed(self, batch: Batch) -> list[Embedding]:
        output = batch.output
        out = []
        for x in batch.inputs:
            arr = np.asarray(x, dtype=np.float32)
            if arr.ndim == 4:  # time series: average the frames
                arr = np.nanmean(arr, axis=0)
            refl = np.clip(arr, 0, 10000) / 10000.0
            if output.mode == "grid":
                vec = _block_means(refl, GRID)
            else:
                flat = refl.reshape(refl.shape[0], -1)
                q = np.nanpercentile(flat, [10, 50, 90], axis=1)
                vec = np.concatenate(
                    [np.nanmean(flat, axis=1), np.nanstd(flat, axis=1), *q]
                ).astype(np.float32)
            meta = {
                "model": "spectral_stats",
                "input_hw": list(arr.shape[-2:]),
                "output_mode": output.mode,
                "features": "mean,std,p10,p50,p90 per band"
                if output.mode == "pooled"
                else "4x4 block means per band",
            }
            out.append(Embedding(np.asarray(vec, dtype=np.float32), meta))
        return out
