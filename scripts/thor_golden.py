"""Golden outputs of the official THOR v1 encoder for tests/oracle/test_oracle_thor.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/thor`` is FM4CS/THOR v1.0.2 and
``_vendor/thor_vit.py`` the loader/wrapper of FM4CS/thor_terratorch_ext) and this repo on
``PYTHONPATH`` only for the numpy-only value rule of ``testing/checkpoints_thor.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/thor_golden.py \\
        tests/oracle/data/thor_golden.npz

The official base encoder (all channel groups) is filled with ``thor_values(seed=0)`` and
saved in the published format (``{"state_dict": {"encoder.<key>": ...}}``); every case loads
that file through the official loader (``load_thor_model(..., ckpt=...)``). What it stores
(float32 unless said):

* ``enc_<case>_*``: the official wrapper on fixed normalised inputs (``x``): the last block's
  tokens and rs-embed's group grid (``group_merge=mean``). Cases: ``s2`` (batch 2, 10 bands,
  32 px: 10 m and 20 m groups), ``s1`` (VV/VH, 24 px);
* ``ad_<case>_*``: rs-embed's own ``THORBaseEmbedder.get_embedding`` on raw inputs rebuilt
  by the test from their seeds (``input_chw``), pooled and grid: ``snap_crop`` (S2 40 px,
  native_snap -> 32), ``snap_pad`` (S2 44 px -> 48, zero pad), ``snap_s1`` (S1 28 px -> 24),
  ``rect`` (S2 40 x 56: too far from square, fixed at 32), ``fixed288`` (S2 40 px resized to
  the default 288; its grid stored every 5th row and column).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_thor import thor_values

warnings.simplefilter("ignore")
SEED = 0
S2_MODEL_BANDS = [
    "BLUE",
    "GREEN",
    "RED",
    "RED_EDGE_1",
    "RED_EDGE_2",
    "RED_EDGE_3",
    "NIR_BROAD",
    "NIR_NARROW",
    "SWIR_1",
    "SWIR_2",
]


def raw_input(case: str) -> np.ndarray:
    """The raw adapter inputs (the test rebuilds them from the same seeds)."""
    if case == "snap_s1":
        return np.random.RandomState(3).gamma(1.0, 0.1, size=(2, 28, 28)).astype(np.float32)
    shape = {"snap_crop": (10, 40, 40), "snap_pad": (10, 44, 44), "rect": (10, 40, 56)}
    seed = {"snap_crop": 2, "snap_pad": 4, "rect": 6, "fixed288": 5}[case]
    return np.random.RandomState(seed).randint(0, 6000, size=shape.get(case, (10, 40, 40)))


def write_ckpt(path: Path) -> None:
    from rs_embed.embedders._vendor.thor_vit import load_thor_model

    model = load_thor_model("thor_v1_base", out_indices=[-1], pretrained=False).model
    sd = model.state_dict()
    vals = thor_values({k: tuple(v.shape) for k, v in sd.items()}, SEED)
    state = {f"encoder.{k}": torch.from_numpy(vals[k]) if k in vals else v for k, v in sd.items()}
    torch.save({"state_dict": state}, path)


def official(ckpt: Path, bands: list[str], cover: int):
    from rs_embed.embedders._vendor.thor_vit import load_thor_model

    return load_thor_model(
        "thor_v1_base",
        model_bands=bands,
        out_indices=[-1],
        pretrained=False,
        return_channel_params=True,
        input_params={"ground_covers": [cover], "flexivit_patch_size_seqs": [8]},
        ckpt=str(ckpt),
    ).eval()


def encoder_case(ckpt: Path, bands: list[str], x: np.ndarray, out: dict, name: str) -> None:
    from rs_embed.embedders.onthefly_thor import _thor_group_grid_from_tokens

    wrapper = official(ckpt, bands, x.shape[-1] * 10)
    with torch.no_grad():
        feats, cp = wrapper(torch.from_numpy(x))
        grid, _ = _thor_group_grid_from_tokens(
            feats[-1], channel_params=cp, groups=wrapper.groups, merge="mean"
        )
    out[f"enc_{name}_x"] = x
    out[f"enc_{name}_tokens"] = feats[-1].numpy()
    out[f"enc_{name}_grid"] = grid.numpy()


def adapter_case(case: str, out: dict, *, mode: str, img: int) -> None:
    from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
    from rs_embed.embedders.onthefly_thor import THORBaseEmbedder

    os.environ["RS_EMBED_THOR_RESIZE_MODE"] = mode
    os.environ["RS_EMBED_THOR_IMG"] = str(img)
    raw = raw_input(case).astype(np.float32)
    emb = THORBaseEmbedder()
    sensor = THORBaseEmbedder._default_sensor("s1" if raw.shape[0] == 2 else "s2")
    kw = dict(
        spatial=PointBuffer(lon=10.0, lat=45.0, buffer_m=200),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=sensor,
        backend="auto",
        device="cpu",
        input_chw=raw,
    )
    pooled = emb.get_embedding(output=OutputSpec.pooled(), **kw)
    grid = emb.get_embedding(output=OutputSpec.grid(), **kw)
    g = np.asarray(getattr(grid.data, "values", grid.data), np.float32)
    out[f"ad_{case}_raw_sum"] = np.array(raw.astype(np.float64).sum())
    out[f"ad_{case}_vec"] = np.asarray(pooled.data, np.float32)
    out[f"ad_{case}_grid"] = g[:, ::5, ::5] if case == "fixed288" else g
    out[f"ad_{case}_side"] = np.array(int(pooled.meta["effective_image_size"]))
    print(case, pooled.meta["preprocess_strategy"], pooled.meta["effective_image_size"], g.shape)


def main(dest: str) -> None:
    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "thor_v1_vit_base.pt"
        write_ckpt(ckpt)
        rs = np.random.RandomState(1)
        x2 = rs.standard_normal((2, 10, 32, 32)).astype(np.float32)
        encoder_case(ckpt, S2_MODEL_BANDS, x2, out, "s2")
        x1 = rs.standard_normal((1, 2, 24, 24)).astype(np.float32)
        encoder_case(ckpt, ["VV", "VH"], x1, out, "s1")

        os.environ["RS_EMBED_THOR_CKPT"] = str(ckpt)
        os.environ["HF_HUB_OFFLINE"] = "1"
        adapter_case("snap_crop", out, mode="native_snap", img=288)
        adapter_case("snap_pad", out, mode="native_snap", img=288)
        adapter_case("snap_s1", out, mode="native_snap", img=288)
        adapter_case("rect", out, mode="native_snap", img=32)
        adapter_case("fixed288", out, mode="fixed", img=288)
    tmp_dest = dest + ".tmp.npz"
    np.savez_compressed(tmp_dest, **out)
    os.replace(tmp_dest, dest)
    print(f"wrote {dest}: {sorted(out)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/thor_golden.npz")
