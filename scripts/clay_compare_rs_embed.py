"""Compare our clay with rs-embed 0.3.1's Clay adapter: same checkpoint, same raw input.

Run with our venv; it calls the anchor venv's python (``--anchor-python``, default
``/tmp/anchor-venv312/bin/python``, see ../shared/anchor/README.md) on this same file for
rs-embed's side, which imports only rs_embed. Prints one JSON line: the max abs difference
of the pooled (CLS) and grid embeddings for each input, in both of our recipes:

* ``recipe="rs_embed"`` should match rs-embed everywhere (float noise only);
* ``recipe="upstream"`` (the default) matches where no resize happens (a 256 px input) and
  departs where rs-embed resizes and still calls the pixels 10 m (a 224 px input).

    python scripts/clay_compare_rs_embed.py [--ckpt FILE] [--anchor-python PY]

Without ``--ckpt`` a seeded random checkpoint in the published layout is written to a
temporary folder (1.25 GB). Everything runs on CPU; expect a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PLACES = [(15.0, 45.0, 1280.0), (-70.6, -33.9, 1120.0)]  # lon, lat, buffer_m
SIDES = [256, 224]  # 256: no resize; 224: resized to 256 (the recipes differ)
WINDOW = ("2022-06-01", "2022-09-01")


def _inputs():
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.uniform(0, 8000, size=(10, s, s)).astype(np.float32) for s in SIDES]


def rs_embed_side(ckpt: str, out: str) -> None:
    """rs-embed's Clay adapter on the inputs (runs in the anchor venv)."""
    import numpy as np

    os.environ["RS_EMBED_CLAY_WEIGHTS"] = ckpt
    from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
    from rs_embed.embedders.onthefly_clay import ClayEmbedder

    emb = ClayEmbedder()
    spatials = [PointBuffer(lon=lon, lat=lat, buffer_m=b) for lon, lat, b in PLACES]
    res = {}
    for mode, spec in (("pooled", OutputSpec.pooled()), ("grid", OutputSpec.grid())):
        got = emb.get_embeddings_batch_from_inputs(
            spatials=spatials,
            input_chws=_inputs(),
            temporal=TemporalSpec.range(*WINDOW),
            output=spec,
            device="cpu",
        )
        for i, e in enumerate(got):
            res[f"{mode}_{i}"] = np.asarray(getattr(e.data, "values", e.data), dtype=np.float32)
    np.savez(out, **res)


def ours(ckpt: str, recipe: str) -> dict:
    from rs_embed_ray.models.clay import Clay
    from rs_embed_ray.specs import OutputSpec, PointBuffer, TemporalSpec

    m = Clay(weights=ckpt, model_config={"recipe": recipe}, precision="float32")
    spatials = [PointBuffer(lon, lat, b) for lon, lat, b in PLACES]
    res = {}
    for mode, spec in (("pooled", OutputSpec.pooled()), ("grid", OutputSpec.grid())):
        got = m.embed_batch(
            _inputs(),
            output=spec,
            spatials=spatials,
            temporal=TemporalSpec.range(*WINDOW),
            fetch_metas=[{}] * len(PLACES),
        )
        for i, e in enumerate(got):
            res[f"{mode}_{i}"] = e.data
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", help="a clay-v1.5.ckpt (default: write a seeded random one)")
    ap.add_argument("--anchor-python", default="/tmp/anchor-venv312/bin/python")
    ap.add_argument("--rs-embed-side", nargs=2, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rs_embed_side:
        rs_embed_side(*args.rs_embed_side)
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if not ckpt:
            from rs_embed_ray.testing.checkpoints_clay import write_clay_checkpoint

            ckpt = str(write_clay_checkpoint(Path(tmp) / "ckpt"))
        out = str(Path(tmp) / "rs_embed.npz")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["HF_HUB_OFFLINE"] = "1"
        subprocess.run(
            [args.anchor_python, __file__, "--rs-embed-side", ckpt, out], check=True, env=env
        )
        with np.load(out) as z:
            theirs = {k: z[k] for k in z.files}
        report = {"sides_px": SIDES}
        for recipe in ("rs_embed", "upstream"):
            mine = ours(ckpt, recipe)
            report[recipe] = {k: float(np.abs(mine[k] - theirs[k]).max()) for k in sorted(theirs)}
        report["scale"] = float(np.abs(theirs["pooled_0"]).max())
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
