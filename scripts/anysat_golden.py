"""Golden outputs of the official AnySat for tests/oracle/test_oracle_anysat.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/anysat`` is gastruc/AnySat's ``hubconf.py``
and ``src/models/networks/encoder``) and this repo on ``PYTHONPATH`` only for the numpy-only
value rule of ``testing/checkpoints_anysat.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/anysat_golden.py \
        tests/oracle/data/anysat_golden.npz

What it stores (float32 unless said):

* ``keys`` / ``shapes``: every key of the official ``AnyModule`` state dict (base) and its
  shape, so the test can check our writer produces exactly the published layout;
* ``enc_<case>_*``: the official ``AnySat.forward`` (``flash_attn=False``) filled with
  ``anysat_values(seed=0)`` on a seeded input (``RandomState(<seed>)`` normal (B, T, 10, S,
  S) and day-of-year integers): ``tile``, ``patch`` (subsampled as noted) and ``dense``
  (subsampled). Cases ``a``: B=2, T=8, 24 px, patch 10 m; ``b``: B=1, T=3, 12 px, patch 30 m;
* ``adapter_*``: rs-embed's own ``AnySatEmbedder.get_embedding`` (input_chw path) on a raw
  (8, 10, 32, 32) DN series with that checkpoint: pooled (patch mean), pooled with
  ``pooled_source="tile"``, grid ``dense`` (default) and grid ``patch``, subsampled, plus
  the day-of-year values it used.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_anysat import anysat_values

SEED = 0
CASES = {
    "a": dict(seed=11, b=2, t=8, side=24, patch=10, ps=5, ds=6),
    "b": dict(seed=12, b=1, t=3, side=12, patch=30, ps=1, ds=2),
}
WINDOW = ("2022-03-01", "2022-11-01")


def case_input(seed: int, b: int, t: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded (B, T, 10, S, S) input and (B, T) day-of-year dates of a case."""
    rs = np.random.RandomState(seed)
    x = rs.standard_normal((b, t, 10, side, side)).astype(np.float32)
    d = np.sort(rs.randint(0, 365, size=(b, t)), axis=1).astype(np.int64)
    return x, d


def adapter_raw() -> np.ndarray:
    """The raw (8, 10, 32, 32) DN series of the adapter case (the test rebuilds it)."""
    rs = np.random.RandomState(3)
    base = rs.randint(200, 4000, size=(1, 10, 1, 1))
    return (base + rs.randint(0, 2000, size=(8, 10, 32, 32))).astype(np.float32)


def main(dest: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from rs_embed.embedders._vendor.anysat.hubconf import AnySat
    torch.manual_seed(0)
    model = AnySat(model_size="base", flash_attn=False).eval()
    sd = model.model.state_dict()
    vals = anysat_values({k: tuple(v.shape) for k, v in sd.items()}, SEED)
    model.model.load_state_dict({k: torch.from_numpy(v) for k, v in vals.items()}, strict=True)
    out: dict[str, np.ndarray] = {
        "keys": np.array(sorted(sd)),
        "shapes": np.array([",".join(map(str, sd[k].shape)) for k in sorted(sd)]),
    }
    for name, c in CASES.items():
        x, d = case_input(c["seed"], c["b"], c["t"], c["side"])
        inp = {"s2": torch.from_numpy(x), "s2_dates": torch.from_numpy(d)}
        with torch.no_grad():
            tile = model(inp, patch_size=c["patch"], output="tile")
            patch = model(inp, patch_size=c["patch"], output="patch")
            dense = model(inp, patch_size=c["patch"], output="dense")
        ps, ds = c["ps"], c["ds"]
        out[f"enc_{name}_tile"] = tile.numpy()
        out[f"enc_{name}_patch_mean"] = patch.mean(dim=(1, 2)).numpy()
        out[f"enc_{name}_patch"] = patch[:, ::ps, ::ps].numpy()  # (B, h, w, 768)
        out[f"enc_{name}_dense"] = dense[:, ::ds, ::ds].numpy()  # (B, H, W, 1536)

    raw = adapter_raw()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "AnySat.pth"
        torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in vals.items()}}, ckpt)
        os.environ["RS_EMBED_ANYSAT_CKPT"] = str(ckpt)
        os.environ["HF_HUB_OFFLINE"] = "1"
        from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
        from rs_embed.embedders.onthefly_anysat import AnySatEmbedder

        emb = AnySatEmbedder()
        kw = dict(
            spatial=PointBuffer(lon=10.0, lat=45.0, buffer_m=160),
            temporal=TemporalSpec.range(*WINDOW),
            sensor=None,
            backend="auto",
            device="cpu",
            input_chw=raw,
        )
        pooled = emb.get_embedding(output=OutputSpec.pooled(), **kw)
        tile = emb.get_embedding(
            output=OutputSpec.pooled(), model_config={"pooled_source": "tile"}, **kw
        )
        dense = emb.get_embedding(output=OutputSpec.grid(), **kw)
        patch = emb.get_embedding(
            output=OutputSpec.grid(), model_config={"grid_feature_mode": "patch"}, **kw
        )

        def arr(e):
            return np.asarray(getattr(e.data, "values", e.data), np.float32)

        out["adapter_raw_sum"] = np.array(raw.astype(np.float64).sum())
        out["adapter_vec"] = arr(pooled)
        out["adapter_tile"] = arr(tile)
        out["adapter_dense"] = arr(dense)[:, ::4, ::4]
        out["adapter_patch"] = arr(patch)[:, ::3, ::3]
        out["adapter_doy"] = np.asarray(pooled.meta["doy0_values"], np.int64)
        out["adapter_window"] = np.array(WINDOW)
    tmp_dest = dest + ".tmp.npz"
    np.savez_compressed(tmp_dest, **out)
    os.replace(tmp_dest, dest)
    print(f"wrote {dest}: {sorted(out)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/anysat_golden.npz")
