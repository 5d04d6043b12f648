"""tessera read throughput: places/s for N places inside one published-size tile.

tessera has no forward pass, so ``bench.py --forward`` does not apply; this measures the
reader instead (tile lookup, pyproj projection of the output pixel centres, memory-mapped
gather of int8 * scales, pooling), in process, one place at a time, as an actor does:

    python scripts/bench_tessera_read.py --n 1000 --buffer-m 160 [--pixel-m 10]

The tile is written by ``rs_embed_ray.testing.checkpoints_tessera`` at the product's 10 m
(about 1,110 x 790 pixels x 128 int8, ~110 MB) in a temp folder, removed after. Prints one
JSON line per output mode.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--buffer-m", type=float, default=160.0)
    ap.add_argument("--pixel-m", type=float, default=10.0)
    a = ap.parse_args()

    from rs_embed_ray.models.tessera import Tessera
    from rs_embed_ray.specs import OutputSpec, PointBuffer
    from rs_embed_ray.testing.checkpoints_tessera import write_tessera_tiles

    work = Path(tempfile.mkdtemp(prefix="tessera_bench_"))
    try:
        t0 = time.perf_counter()
        root = write_tessera_tiles(work / "tiles", [(15.05, 45.05)], pixel_m=a.pixel_m)
        write_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        lons = rng.uniform(15.01, 15.09, a.n)
        lats = rng.uniform(45.01, 45.09, a.n)
        places = [
            PointBuffer(float(x), float(y), a.buffer_m) for x, y in zip(lons, lats, strict=True)
        ]
        for mode, output in (("pooled", OutputSpec.pooled()), ("grid", OutputSpec.grid())):
            m = Tessera(weights=str(root))  # a fresh reader: the first place opens the tile
            t0 = time.perf_counter()
            for p in places:
                m.embed_one(p, output, 2021)
            dt = time.perf_counter() - t0
            shape = list(m.embed_one(places[0], output, 2021).data.shape)
            row = {
                "model": "tessera",
                "output": mode,
                "places": a.n,
                "embedding": shape,
                "places_per_s": round(a.n / dt, 1),
                "ms_per_place": round(1000 * dt / a.n, 2),
                "tile_px": a.pixel_m,
                "tile_write_s": round(write_s, 1),
            }
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
