"""Bytes per place and the smallest cosine to float32 of each storage dtype (issue 23).

    python scripts/get_sample_data.py --out data/sample      # the real Sentinel-2 scene
    python scripts/bench_dtype.py WORK_DIR [--source data/sample/s2]
                                           [--points data/sample/points.csv]

Exports the real Sentinel-2 sample scene's places once per dtype (float32, float16, int8)
with real model code: remoteclip (ViT-B/32) and DOFA base, their checkpoints written by
``rs_embed_ray.testing.checkpoints`` with seed 0 (random-valued weights, real architectures:
no model hub here). Prints, per model and dtype, the stored bytes of one vector (the npz
members of the model, with int8's scale and offset, over the places) and the smallest cosine
similarity of the loaded (decoded) vectors to the float32 export's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from rs_embed_ray import TemporalSpec
from rs_embed_ray.api import export_batch
from rs_embed_ray.io.load import load_export
from rs_embed_ray.io.points import read_places
from rs_embed_ray.io.quantize import cosine_min
from rs_embed_ray.testing.checkpoints import write_dofa_checkpoint, write_remoteclip_checkpoint


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--source", default="data/sample/s2")
    ap.add_argument("--points", default="data/sample/points.csv")
    a = ap.parse_args()
    weights = {
        "remoteclip": str(write_remoteclip_checkpoint(a.work / "ckpt_rc", seed=0)),
        "dofa": str(write_dofa_checkpoint(a.work / "ckpt_dofa", seed=0)),
    }
    places, _, _ = read_places(a.points, buffer_m=320.0)
    out: dict[str, dict[str, object]] = {}
    ref: dict[str, np.ndarray] = {}
    for dtype in ("float32", "float16", "int8"):
        path = a.work / f"bench_{dtype}.npz"
        t0 = time.perf_counter()
        export_batch(spatials=places, temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
                     models=list(weights), weights=weights, backend="local", source=a.source,
                     out=str(path), layout="combined", format="npz", save_inputs=False,
                     show_progress=False, dtype=dtype)  # fmt: skip
        took = time.perf_counter() - t0
        res = load_export(path)
        with zipfile.ZipFile(path) as zf:
            sizes = {i.filename: i.file_size for i in zf.infolist()}
        for m in weights:
            e = np.asarray(res.embedding(m))
            ref.setdefault(m, e)
            stored = sum(v for k, v in sizes.items() if k.endswith(f"__{m}.npy"))
            out[f"{m}/{dtype}"] = {
                "places": len(places),
                "dim": int(e.shape[1]),
                "bytes_per_place": round(stored / len(places), 1),
                "min_cosine_to_float32": round(cosine_min(ref[m], e), 6),
                "export_s": round(took, 1),
            }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
