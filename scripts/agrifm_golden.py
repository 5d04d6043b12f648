"""Golden outputs of the official AgriFM encoder for tests/oracle/test_oracle_agrifm.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/agrifm_video_swin_transformer.py`` is
flyakon/AgriFM's ``AgriFM/models/video_swin_transformer.py``, imported behind rs-embed's
in-process mmseg/mmengine shims) and this repo on ``PYTHONPATH`` only for the numpy-only
value rule of ``testing/checkpoints_agrifm.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/agrifm_golden.py \
        tests/oracle/data/agrifm_golden.npz

What it does and stores (float32 unless said):

* builds ``PretrainingSwinTransformer3DEncoder`` with rs-embed's (= the published
  ``configs/cropland_mapping.py``) S2 configuration, writes a ``{"state_dict": ...}`` file
  in the published layout (``S2_patch_emd.*``, ``backbone.*``, the HLS/MODIS stems) filled with
  ``agrifm_values(seed=0)``, and loads it through the official ``init_cfg`` path
  (``load_checkpoint`` with its ``revise_keys``); every tensor of the loaded model is checked
  to come from the file;
* ``keys`` / ``shapes``: the official model's state dict layout;
* ``enc_<case>``: ``encoder_features`` of the official forward on a seeded
  ``RandomState(<seed>)`` normal (B, T, 10, S, S) input. Cases ``a``: B=2, T=8, 32 px
  (shifted windows at stages 0-1); ``b``: B=1, T=5, 46 px (T, H, W padded to the patch; odd
  grids padded by the merges and to whole windows); ``c``: B=1, T=16, 16 px;
* ``adapter_*``: rs-embed's own ``AgriFMEmbedder.get_embedding`` (input_chw path, image size
  48 via ``RS_EMBED_AGRIFM_IMG``) on a raw (8, 10, 32, 32) DN series holding NaN and values
  above 10000: pooled (mean), grid; and on its first frame as (10, 32, 32) (repeated to 8).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_agrifm import agrifm_values, other_stem_shapes

SEED = 0
CASES = {
    "a": dict(seed=21, b=2, t=8, side=32),
    "b": dict(seed=22, b=1, t=5, side=46),
    "c": dict(seed=23, b=1, t=16, side=16),
}
ADAPTER_IMG = 48
PATCH_CFG = dict(type="SwinPatchEmbed3D", patch_size=(4, 2, 2), in_chans=10, embed_dim=128)


def case_input(seed: int, b: int, t: int, side: int) -> np.ndarray:
    """The seeded (B, T, 10, S, S) input of a case (the test rebuilds it)."""
    return np.random.RandomState(seed).standard_normal((b, t, 10, side, side)).astype(np.float32)


def adapter_raw() -> np.ndarray:
    """The raw (8, 10, 32, 32) DN series of the adapter case, NaN and > 10000 included."""
    rs = np.random.RandomState(5)
    x = rs.randint(0, 12000, size=(8, 10, 32, 32)).astype(np.float32)
    x[0, 2, 3, 4] = np.nan
    x[5, 7, 10:12, 20] = np.nan
    return x


def backbone_cfg() -> dict:
    return dict(
        type="SwinTransformer3D",
        pretrained=None,
        pretrained2d=False,
        patch_size=(4, 2, 2),
        embed_dim=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=(8, 7, 7),
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.2,
        patch_norm=False,
        frozen_stages=-1,
        use_checkpoint=False,
        downsample_steps=((2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
        feature_fusion="cat",
        mean_frame_down=True,
    )


def main(dest: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from rs_embed.embedders.onthefly_agrifm import _import_agrifm_swin

        mod = _import_agrifm_swin()
    cls = mod.PretrainingSwinTransformer3DEncoder
    torch.manual_seed(0)
    fresh = cls(patch_emd_cfg=dict(PATCH_CFG), backbone_cfg=backbone_cfg())
    sd = fresh.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    vals = agrifm_values({**shapes, **other_stem_shapes()}, SEED)
    file_state = {}
    for k in sorted({**shapes, **other_stem_shapes()}):
        v = sd[k].clone() if k.endswith("relative_position_index") else torch.from_numpy(vals[k])
        file_state[
            k.replace("patch_emd.", "S2_patch_emd.", 1) if k.startswith("patch_emd.") else k
        ] = v
    out: dict[str, np.ndarray] = {
        "keys": np.array(sorted(sd)),
        "shapes": np.array([",".join(map(str, sd[k].shape)) for k in sorted(sd)]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "AgriFM.pth"
        torch.save({"state_dict": file_state}, ckpt)
        torch.manual_seed(1)  # a different init: a key the loader missed would show
        model = cls(
            patch_emd_cfg=dict(PATCH_CFG),
            backbone_cfg=backbone_cfg(),
            init_cfg={"checkpoint": str(ckpt), "strict": False},
        ).eval()
        for k, v in model.state_dict().items():
            if not k.endswith("relative_position_index"):
                assert np.array_equal(v.numpy(), vals[k]), f"official load missed {k}"
        for name, c in CASES.items():
            x = torch.from_numpy(case_input(c["seed"], c["b"], c["t"], c["side"]))
            with torch.no_grad():
                feats = model(x, mode="tensor")["encoder_features"]
            out[f"enc_{name}"] = feats.numpy()

        os.environ["RS_EMBED_AGRIFM_CKPT"] = str(ckpt)
        os.environ["RS_EMBED_AGRIFM_IMG"] = str(ADAPTER_IMG)
        os.environ["HF_HUB_OFFLINE"] = "1"
        from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
        from rs_embed.embedders.onthefly_agrifm import AgriFMEmbedder

        emb = AgriFMEmbedder()
        raw = adapter_raw()
        kw = dict(
            spatial=PointBuffer(lon=10.0, lat=45.0, buffer_m=160),
            temporal=TemporalSpec.range("2022-03-01", "2022-11-01"),
            sensor=None,
            backend="auto",
            device="cpu",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pooled = emb.get_embedding(output=OutputSpec.pooled(), input_chw=raw, **kw)
            grid = emb.get_embedding(output=OutputSpec.grid(), input_chw=raw, **kw)
            single = emb.get_embedding(output=OutputSpec.pooled(), input_chw=raw[0], **kw)

        def arr(e):
            return np.asarray(getattr(e.data, "values", e.data), np.float32)

        out["adapter_vec"] = arr(pooled)
        out["adapter_grid"] = arr(grid)
        out["adapter_single_vec"] = arr(single)
        out["adapter_img"] = np.array(ADAPTER_IMG)
        out["adapter_raw_nansum"] = np.array(np.nansum(raw.astype(np.float64)))
    tmp_dest = dest + ".tmp.npz"
    np.savez_compressed(tmp_dest, **out)
    os.replace(tmp_dest, dest)
    print(f"wrote {dest}: {sorted(out)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/agrifm_golden.npz")
