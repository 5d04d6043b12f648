"""Compare our terramind embeddings with rs-embed 0.3.1's adapter on the same checkpoint and
input, in both preprocessing modes (``upstream`` and ``rs_embed``), and print the max abs
differences as JSON.

Needs the anchor venv (/work/shared/anchor/setup_anchor.sh; rs-embed 0.3.1 with terratorch):
``python scripts/compare_terramind_rs_embed.py --anchor-python /tmp/anchor-venv312/bin/python``.
The checkpoint is a seeded random file in the published layout, placed in a private Hugging
Face cache where rs-embed (through terratorch's ``hf_hub_download``) finds it offline. The
input holds DN below 0 and above 10000 and one NaN, where the two modes differ (rs-embed
clips, and sets NaN to DN 0 before its z-score).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ANCHOR_CODE = """
import sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from rs_embed.embedders.onthefly_terramind import TerraMindEmbedder
from rs_embed.core.specs import OutputSpec
x = np.load(sys.argv[1])
emb = TerraMindEmbedder().get_embeddings_batch_from_inputs(
    spatials=[None] * len(x), input_chws=list(x), output=OutputSpec.grid(),
    backend="tensor", device="cpu")
np.save(sys.argv[2], np.stack([np.asarray(e.data) for e in emb]).astype(np.float32))
"""


def main() -> None:
    """Write the checkpoint and input, run both sides, print the differences."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchor-python", default="/tmp/anchor-venv312/bin/python")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from rs_embed_ray.models.terramind import MODEL_KEYS, TerraMind
    from rs_embed_ray.specs import OutputSpec
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry
    from rs_embed_ray.testing.checkpoints_terramind import write_terramind_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ckpt = write_terramind_checkpoint(d / "ckpt", seed=args.seed)
        repo, filename = MODEL_KEYS["terramind_v1_small"]
        write_hf_cache_entry(d / "hub", repo, filename, ckpt)
        rng = np.random.default_rng(args.seed)
        x = rng.uniform(-300, 12000, size=(2, 12, 64, 64)).astype(np.float32)
        x[0, 3, 5, 5] = np.nan  # a missing pixel: the modes treat it differently too
        np.save(d / "x.npy", x)
        env = dict(os.environ, HF_HUB_OFFLINE="1", HUGGINGFACE_HUB_CACHE=str(d / "hub"))
        env["HF_HUB_CACHE"] = str(d / "hub")
        subprocess.run(
            [args.anchor_python, "-c", ANCHOR_CODE, str(d / "x.npy"), str(d / "theirs.npy")],
            check=True,
            env=env,
        )
        theirs = np.load(d / "theirs.npy")
        result: dict[str, float] = {}
        for mode in ("upstream", "rs_embed"):
            m = TerraMind(
                device="cpu",
                weights=str(ckpt),
                precision="float32",
                model_config={"preprocess": mode},
            )
            ours = m.embed_batch(
                list(x), output=OutputSpec.grid(), spatials=[None] * 2, temporal=None,
                fetch_metas=[{}] * 2,
            )  # fmt: skip
            got = np.stack([e.data for e in ours])
            result[f"max_abs_grid_{mode}"] = float(np.abs(got - theirs).max())
            result[f"max_abs_pooled_{mode}"] = float(
                np.abs(got.mean(axis=(2, 3)) - theirs.mean(axis=(2, 3))).max()
            )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
