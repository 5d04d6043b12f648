"""Golden outputs of rs-embed 0.3.1's tessera reader (geotessera 0.11.0) for
tests/oracle/test_oracle_tessera.py.

Run with the rs-embed 0.3.1 venv, this repo on ``PYTHONPATH`` only for the seeded tile
writer (``rs_embed_ray.testing.checkpoints_tessera``, numpy/rasterio/pandas):

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/tessera_golden.py \
        tests/oracle/data/tessera_golden.npz

It writes the tile folder of :func:`tiles` (seed 0, 50 m tiles, one of the four cells left
out: open water), lays out the registries where geotessera 0.11 looks for them when
``GeoTessera(cache_dir=DIR)`` is built the way rs-embed builds it (manifest under
``DIR/v1.1-cam/``, landmasks under ``DIR/v1.1/``; tiles from the working directory), and
runs ``rs_embed.embedders.precomputed_tessera.TesseraEmbedder.get_embedding`` on the
places of :data:`PLACES` with 2021: pooled mean, pooled max and the grid (stored
subsampled every :data:`STEP` pixels to keep the file small, plus its per-band sums and
shape). It also stores one tile as geotessera 0.11's ``fetch_embedding`` dequantises it
(a few rows), the oracle for the reader itself.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from rs_embed_ray.testing.checkpoints_tessera import write_tessera_tiles

SEED = 0
PIXEL_M = 50.0
YEAR = 2021
STEP = 6
# sorted by (lon, lat): the order rs-embed's registry query returns them and ours reads
TILES = [(15.05, 44.95), (15.05, 45.05), (15.15, 45.05)]  # (15.15, 44.95): open water
# (kind, args): BBox(minlon, minlat, maxlon, maxlat) / PointBuffer(lon, lat, buffer_m)
PLACES = [
    ("bbox", (15.094, 44.993, 15.107, 45.006)),  # four cells, one of them missing
    ("point", (15.03, 45.02, 300.0)),  # inside one tile
    ("point", (15.0995, 45.0004, 250.0)),  # on the corner of the cells
]


def tiles(root: Path) -> Path:
    """The seeded tile folder the test rebuilds."""
    return write_tessera_tiles(root, TILES, years=(YEAR,), seed=SEED, pixel_m=PIXEL_M)


def main(out: str) -> None:
    from rs_embed.core.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
    from rs_embed.embedders.precomputed_tessera import TesseraEmbedder

    work = Path(tempfile.mkdtemp(prefix="tessera_golden_"))
    root = tiles(work / "tiles")
    (root / "v1.1-cam").mkdir()
    (root / "v1.1").mkdir()
    shutil.copy(root / "manifest.parquet", root / "v1.1-cam" / "manifest.parquet")
    shutil.copy(root / "landmasks.parquet", root / "v1.1" / "landmasks.parquet")
    os.chdir(root)  # rs-embed's GeoTessera(cache_dir=...) reads tiles from the cwd
    emb = TesseraEmbedder()
    res: dict[str, np.ndarray] = {"seed": np.array(SEED), "pixel_m": np.array(PIXEL_M)}
    for i, (kind, args) in enumerate(PLACES):
        sp = BBox(*args) if kind == "bbox" else PointBuffer(*args)
        kw = dict(
            spatial=sp, temporal=TemporalSpec.year(YEAR), sensor=None, backend="auto",
            model_config={"cache_dir": str(root)},
        )  # fmt: skip
        mean = emb.get_embedding(output=OutputSpec.pooled("mean"), **kw)
        mx = emb.get_embedding(output=OutputSpec.pooled("max"), **kw)
        g = emb.get_embedding(output=OutputSpec.grid(), **kw)
        grid = np.asarray(g.data.values, dtype=np.float32)
        res[f"p{i}_mean"] = np.asarray(mean.data, dtype=np.float32)
        res[f"p{i}_max"] = np.asarray(mx.data, dtype=np.float32)
        res[f"p{i}_grid_sub"] = grid[:, ::STEP, ::STEP]
        res[f"p{i}_grid_sum"] = grid.sum(axis=(1, 2), dtype=np.float64)
        res[f"p{i}_grid_shape"] = np.array(grid.shape)
        res[f"p{i}_transform"] = np.array(tuple(g.meta["transform"])[:6], dtype=np.float64)
        res[f"p{i}_coverage"] = np.array(g.meta["coverage"])
        print(i, kind, grid.shape, g.meta["coverage"], g.meta["tile_crs"])
    from geotessera import GeoTessera

    gt = GeoTessera(embeddings_dir=str(root), registry_dir=str(root))
    tile, _crs, _tr = gt.fetch_embedding(15.05, 45.05, YEAR)
    res["tile_15.05_45.05_rows"] = np.asarray(tile[::40], dtype=np.float32)
    np.savez_compressed(out, **res)
    shutil.rmtree(work)
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]))
