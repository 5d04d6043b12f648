"""Golden outputs of the official Galileo encoder for tests/oracle/test_oracle_galileo.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/galileo_single_file.py`` is the official
``single_file_galileo.py`` of nasaharvest/galileo, trimmed to the encoder) and this repo on
``PYTHONPATH`` only for the numpy-only value rule of ``testing/checkpoints_galileo.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/galileo_golden.py \
        tests/oracle/data/galileo_golden.npz

What it stores (all float32 unless said):

* ``enc_<case>_*``: the official ``Encoder`` on fixed inputs built here (masks, months,
  patch size, input resolution), filled with ``galileo_values(seed=0)``: the visible-token
  mean (``average_tokens``) and the per-patch grid
  (``apply_mask_and_average_tokens_per_patch``). Cases: ``s2`` (S2 groups, 3 frames, 10 m,
  patch 8), ``ndvi`` (S2 + NDVI, frame 1 of item 0 masked, 35 m), ``p4`` (patch 4: the
  FlexiPatchEmbed kernel resize);
* ``adapter_*``: rs-embed's own ``GalileoEmbedder.get_embedding`` on a raw (T, 10, 64, 64)
  DN series (``adapter_raw``: RandomState(2) integers 0..5999) with that checkpoint folder
  (its default recipe: no normalisation, NDVI masked), pooled and grid, plus the months and
  a checksum of the raw input;
* ``up_*``: the upstream recipe on the same raw input, written here independently of the
  package: the 2-sigma Normalizer of Galileo's ``dataset.py`` with its pretraining
  statistics, NDVI from DN, then the official encoder at 10 m.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from rs_embed.embedders._vendor import galileo_single_file as G

from rs_embed_ray.testing.checkpoints_galileo import GALILEO_NANO_CONFIG, galileo_values

SEED = 0


def official_encoder() -> G.Encoder:
    enc_cfg = dict(GALILEO_NANO_CONFIG["model"]["encoder"])
    enc = G.Encoder(**enc_cfg)
    sd = enc.state_dict()
    vals = galileo_values({k: tuple(v.shape) for k, v in sd.items()}, SEED)
    missing = [k for k in sd if k not in vals and k not in ("pos_embed", "month_embed.weight")]
    assert not missing, missing
    enc.load_state_dict({k: torch.from_numpy(vals[k]) if k in vals else v for k, v in sd.items()})
    return enc.eval()


def adapter_raw() -> np.ndarray:
    """The raw (T=3, 10, 64, 64) DN series of the adapter cases (the test rebuilds it)."""
    return np.random.RandomState(2).randint(0, 6000, size=(3, 10, 64, 64)).astype(np.float32)


def run_case(enc, s2_groups_x, t_mask, months, *, ndvi, patch, res):
    """s2_groups_x: (B, H, W, T, 13) space-time bands; t_mask: (B, T) 1 = masked frame."""
    b, h, w, t, _ = s2_groups_x.shape
    names = list(G.SPACE_TIME_BANDS_GROUPS_IDX)
    s_t_m = torch.ones(b, h, w, t, len(names))
    for i, g in enumerate(names):
        if "S2" in g or (ndvi and g == "NDVI"):
            s_t_m[..., i] = t_mask[:, None, None, :].float()
    sp_x = torch.zeros(b, h, w, len(G.SPACE_BANDS))
    t_x = torch.zeros(b, t, len(G.TIME_BANDS))
    st_x = torch.zeros(b, len(G.STATIC_BANDS))
    sp_m = torch.ones(b, h, w, len(G.SPACE_BAND_GROUPS_IDX))
    t_m = torch.ones(b, t, len(G.TIME_BAND_GROUPS_IDX))
    st_m = torch.ones(b, len(G.STATIC_BAND_GROUPS_IDX))
    with torch.no_grad():
        out = enc(
            s2_groups_x,
            sp_x,
            t_x,
            st_x,
            s_t_m,
            sp_m,
            t_m,
            st_m,
            months,
            patch_size=patch,
            input_resolution_m=res,
        )
        vec = enc.average_tokens(*out[:8])
        grid = enc.apply_mask_and_average_tokens_per_patch(*out[:8])
    hp = out[0].shape[1]
    return vec.numpy(), grid.reshape(b, hp, hp, -1).permute(0, 3, 1, 2).numpy()


def main(dest: str) -> None:
    torch.manual_seed(0)
    enc = official_encoder()
    rs = np.random.RandomState(1)
    out: dict[str, np.ndarray] = {}
    s2_idx = [G.SPACE_TIME_BANDS.index(bn) for bn in G.S2_BANDS]
    ndvi_idx = G.SPACE_TIME_BANDS.index("NDVI")
    cases = {
        "s2": dict(b=2, t=3, side=16, ndvi=False, patch=8, res=10.0, mask=None),
        "ndvi": dict(b=2, t=2, side=16, ndvi=True, patch=8, res=35.0, mask=(0, 1)),
        "p4": dict(b=1, t=2, side=16, ndvi=True, patch=4, res=10.0, mask=None),
    }
    for name, c in cases.items():
        x = np.zeros((c["b"], c["side"], c["side"], c["t"], 13), np.float32)
        groups = rs.standard_normal((c["b"], c["t"], 11, c["side"], c["side"])).astype(np.float32)
        x[..., s2_idx] = groups[:, :, :10].transpose(0, 3, 4, 1, 2)
        if c["ndvi"]:
            x[..., ndvi_idx] = groups[:, :, 10].transpose(0, 2, 3, 1)
        months = rs.randint(0, 12, size=(c["b"], c["t"]))
        t_mask = torch.zeros(c["b"], c["t"])
        if c["mask"] is not None:
            t_mask[c["mask"]] = 1.0
        vec, grid = run_case(
            enc,
            torch.from_numpy(x),
            t_mask,
            torch.from_numpy(months),
            ndvi=c["ndvi"],
            patch=c["patch"],
            res=c["res"],
        )
        out[f"enc_{name}_groups"] = groups  # (B, T, 10 S2 bands + NDVI, S, S)
        out[f"enc_{name}_months"] = months.astype(np.int64)
        out[f"enc_{name}_frame_ok"] = (1 - t_mask.numpy()).astype(bool)
        out[f"enc_{name}_params"] = np.array([c["patch"], c["res"], int(c["ndvi"])], np.float64)
        out[f"enc_{name}_vec"] = vec
        out[f"enc_{name}_grid"] = grid

    # rs-embed's adapter end to end (input_chw path) on a raw DN series
    raw = adapter_raw()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "galileo-nano"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(GALILEO_NANO_CONFIG))
        sd = {k: v for k, v in enc.state_dict().items()}
        torch.save(sd, folder / "encoder.pt")
        os.environ["RS_EMBED_GALILEO_MODEL_PATH"] = str(folder)
        os.environ["HF_HUB_OFFLINE"] = "1"
        from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
        from rs_embed.embedders.onthefly_galileo import GalileoEmbedder

        emb = GalileoEmbedder()
        sp = PointBuffer(lon=10.0, lat=45.0, buffer_m=320)
        tm = TemporalSpec.range("2022-05-01", "2022-08-01")
        kw = dict(
            spatial=sp,
            temporal=tm,
            sensor=None,
            backend="auto",
            device="cpu",
            input_chw=raw,
            model_config={"temporal_mode": "multi"},
        )
        pooled = emb.get_embedding(output=OutputSpec.pooled(), **kw)
        grid = emb.get_embedding(output=OutputSpec.grid(), **kw)
        out["adapter_raw_sum"] = np.array(raw.astype(np.float64).sum())
        out["adapter_vec"] = np.asarray(pooled.data, np.float32)
        out["adapter_grid"] = np.asarray(getattr(grid.data, "values", grid.data), np.float32)
        out["adapter_months"] = np.asarray(pooled.meta["month_indices"], np.int64)
        out["adapter_window"] = np.array(["2022-05-01", "2022-08-01"])

    # the upstream recipe on the same raw series, written independently
    mean = np.asarray(G_STATS_MEAN, np.float64)
    std = np.asarray(G_STATS_STD, np.float64)
    shift, div = mean - 2 * std, 4 * std
    shift[-1], div[-1] = 0.0, 1.0  # NDVI is not rescaled (Normalizer.std_bands)
    x = np.zeros((1, 64, 64, 3, 13), np.float64)
    x[0][..., s2_idx] = raw.transpose(2, 3, 0, 1)
    b8, b4 = x[..., G.SPACE_TIME_BANDS.index("B8")], x[..., G.SPACE_TIME_BANDS.index("B4")]
    with np.errstate(invalid="ignore", divide="ignore"):
        x[..., ndvi_idx] = np.where(b8 + b4 > 0, (b8 - b4) / (b8 + b4), 0.0)
    x = ((x - shift) / div).astype(np.float32)
    months = torch.from_numpy(out["adapter_months"][None])
    vec, grid = run_case(
        enc, torch.from_numpy(x), torch.zeros(1, 3), months, ndvi=True, patch=8, res=10.0
    )
    out["up_vec"] = vec[0]
    out["up_grid"] = grid[0]
    tmp_dest = dest + ".tmp.npz"
    np.savez_compressed(tmp_dest, **out)
    os.replace(tmp_dest, dest)
    print(f"wrote {dest}: {sorted(out)}")


# config/normalization.json of nasaharvest/galileo, key "13" (S1 VV, VH, S2 x10, NDVI)
from rs_embed.embedders.onthefly_galileo import _GALILEO_PRETRAIN_STATS  # noqa: E402

G_STATS_MEAN = _GALILEO_PRETRAIN_STATS["13"]["mean"]
G_STATS_STD = _GALILEO_PRETRAIN_STATS["13"]["std"]

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/galileo_golden.npz")
