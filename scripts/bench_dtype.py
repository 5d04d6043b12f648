"""Bytes per place and the smallest cosine to float32 of each storage dtype (issue 23).

    python scripts/get_sample_data.py --out data/sample      # the real Sentinel-2 scene
    python scripts/bench_dtype.py WORK_DIR [--source data/sample/s2]
                                           [--points data/sample/points.csv]

Exports the real Sentinel-2 sample scene's places once (float32) with real model code:
remoteclip (ViT-B/32) and DOFA base, their checkpoints written by
``rs_embed_ray.testing.checkpoints`` with seed 0 (random-valued weights, real architectures:
no model hub here). Then, per model and dtype, encodes those vectors with io.quantize (what
the writers store for that dtype) and prints the stored bytes of one vector (with int8's
scale and offset) and the smallest cosine similarity of the decoded vectors to float32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from rs_embed_ray import TemporalSpec
from rs_embed_ray.api import export_batch
from rs_embed_ray.io.load import load_export
from rs_embed_ray.io.points import read_places
from rs_embed_ray.io.quantize import DTYPES, cosine_min, decode, encode
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
    path = a.work / "bench_float32.npz"
    t0 = time.perf_counter()
    export_batch(spatials=places, temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
                 models=list(weights), weights=weights, backend="local", source=a.source,
                 out=str(path), layout="combined", format="npz", save_inputs=False,
                 show_progress=False)  # fmt: skip
    took = time.perf_counter() - t0
    res = load_export(path)
    out: dict[str, dict[str, object]] = {"export_s": {"float32, both models": round(took, 1)}}
    for m in weights:
        ref = np.asarray(res.embedding(m))
        for dtype in DTYPES:  # what the writers store for each dtype, decoded as the loader does
            codes, scale, offset = encode(ref, dtype)
            stored = codes.nbytes + sum(x.nbytes for x in (scale, offset) if x is not None)
            out[f"{m}/{dtype}"] = {
                "places": len(places),
                "dim": int(ref.shape[1]),
                "bytes_per_place": stored / len(places),
                "min_cosine_to_float32": round(cosine_min(ref, decode(codes, scale, offset)), 6),
            }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
