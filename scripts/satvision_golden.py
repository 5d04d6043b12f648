"""Golden outputs of the official SatVision-TOA SwinV2 for tests/oracle/test_oracle_satvision.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/satvision_caney.py`` is pytorch-caney's
``models/encoders/swinv2.py`` + ``models/mim.py``, the code SatVision-TOA was trained with)
and this repo on ``PYTHONPATH`` only for the numpy-only value rule of
``testing/checkpoints_satvision.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/satvision_golden.py \\
        tests/oracle/data/satvision_golden.npz

The giant (2.6e9 parameters, 10 GB in float32) is never materialised: it is built on
``torch.device("meta")`` only to list its state-dict keys and shapes (``giant_keys``). The
numbers come from the official class built with the reduced TEST-ONLY config ``test_tiny``
(embed 16, depths (2, 2, 6, 2), heads (2, 4, 8, 16), window 8, NORM_PERIOD 6: the same code
paths, the window clamped to the 4 x 4 last stage, shifted masks, one periodic extra norm,
three merges), filled with ``satvision_values(seed=0)`` and saved in the published format
(``{"module": ...}``). What it stores (float32 unless said):

* ``enc_pooled``, ``enc_grid``: the official ``forward_features`` and
  ``extra_features(x)[-1]`` on fixed unit inputs (batch 2, ``RandomState(1).rand``; the
  test rebuilds them);
* ``ad_<case>_*``: rs-embed's own ``SatVisionTOAEmbedder.get_embedding`` (its builder
  swapped for the reduced config, its loader reading the file above) pooled and grid, on
  inputs the test rebuilds from their seeds: ``proxy`` (7 raw MOD09GA + MOD21A1D bands,
  40 px, assembled by rs-embed's own ``_fetch_toa_proxy_chw_from_gee`` with its fetch
  stubbed to return them; ``ad_proxy_assembled`` is its 14-channel stack), ``proxy_roi``
  (the same with a fetch-square ROI window: the grid is cropped), ``toa_raw`` (a 33 px
  14-channel stack in percent / kelvin: ``norm=auto`` -> raw), ``toa_unit`` (64 px in
  [0, 1.2]: ``auto`` -> unit, clipped).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_satvision import FROZEN_SUFFIXES, satvision_values

warnings.simplefilter("ignore")
SEED = 0
TINY = {"embed_dim": 16, "depths": (2, 2, 6, 2), "num_heads": (2, 4, 8, 16)}
GIANT = {"embed_dim": 512, "depths": (2, 2, 42, 2), "num_heads": (16, 32, 64, 128)}
ROI = (0.0, 1.0, 0.25, 0.75)


def build(arch: dict, **_: object):
    from rs_embed.embedders._vendor.satvision_caney import SwinTransformerV2ForSimMIM

    return SwinTransformerV2ForSimMIM(
        img_size=128,
        patch_size=4,
        in_chans=14,
        num_classes=0,
        window_size=8,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.1,
        pretrained_window_sizes=(0, 0, 0, 0),
        extra_norm_period=6,
        extra_norm_stage=False,
        **arch,
    )


def giant_keys() -> np.ndarray:
    """``name:shape`` of every state-dict entry of the official giant, built on meta."""
    real = torch.linspace
    torch.linspace = lambda *a, **k: real(*a, **{**k, "device": "cpu"})  # drop-path rates
    try:
        with torch.device("meta"):
            model = build(GIANT)
    finally:
        torch.linspace = real
    return np.array([f"{k}:{'x'.join(map(str, v.shape))}" for k, v in model.state_dict().items()])


def raw_input(case: str) -> np.ndarray:
    """The raw inputs (the test rebuilds them from the same seeds)."""
    if case == "proxy":
        rs = np.random.RandomState(2)
        ref = rs.randint(-100, 10500, size=(6, 40, 40))
        lst = rs.randint(12000, 16500, size=(1, 40, 40))
        return np.concatenate([ref, lst]).astype(np.float32)
    if case == "toa_raw":
        rs = np.random.RandomState(3)
        x = rs.uniform(0.0, 100.0, size=(14, 33, 33))
        x[[5, 7, 8, 9, 10, 11, 12, 13]] = rs.uniform(190.0, 330.0, size=(8, 33, 33))
        return x.astype(np.float32)
    return np.random.RandomState(4).uniform(0.0, 1.2, size=(14, 64, 64)).astype(np.float32)


def assemble(raw: np.ndarray) -> tuple[np.ndarray, dict]:
    """rs-embed's own proxy assembly, its two collection fetches stubbed with ``raw``."""
    import rs_embed.embedders.onthefly_satvision_toa as sv
    from rs_embed.core.specs import PointBuffer, TemporalSpec

    def fake_fetch(provider, *, spatial, temporal, sensor, to_float_image):
        return raw[:6] if sensor.collection.endswith("MOD09GA") else raw[6:]

    sv._fetch_sensor_patch_chw = fake_fetch
    sensor = sv.SatVisionTOAEmbedder._default_sensor()
    return sv._fetch_toa_proxy_chw_from_gee(
        None,
        PointBuffer(lon=10.0, lat=45.0, buffer_m=20000),
        TemporalSpec.range("2022-06-01", "2022-06-02"),
        sensor,
    )


def adapter_case(name: str, x: np.ndarray, meta: dict, out: dict) -> None:
    from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
    from rs_embed.embedders.onthefly_satvision_toa import SatVisionTOAEmbedder

    emb = SatVisionTOAEmbedder()
    kw = dict(
        spatial=PointBuffer(lon=10.0, lat=45.0, buffer_m=20000),
        temporal=TemporalSpec.range("2022-06-01", "2022-06-02"),
        sensor=None,
        backend="auto",
        device="cpu",
        input_chw=x,
        fetch_meta=dict(meta),
    )
    pooled = emb.get_embedding(output=OutputSpec.pooled(), **kw)
    grid = emb.get_embedding(output=OutputSpec.grid(), **kw)
    out[f"ad_{name}_pooled"] = np.asarray(pooled.data, np.float32)
    out[f"ad_{name}_grid"] = np.asarray(getattr(grid.data, "values", grid.data), np.float32)
    print(name, pooled.meta.get("norm_mode_effective"), out[f"ad_{name}_grid"].shape)


def main(dest: str) -> None:
    import rs_embed.embedders.onthefly_satvision_toa as sv

    torch.manual_seed(0)
    model = build(TINY).eval()
    sd = model.state_dict()
    vals = satvision_values({k: tuple(v.shape) for k, v in sd.items()}, SEED)
    state = {k: torch.from_numpy(vals[k]) if k in vals else v for k, v in sd.items()}
    assert all(k.endswith(FROZEN_SUFFIXES) for k in set(sd) - set(vals))
    model.load_state_dict(state, strict=True)
    out: dict[str, np.ndarray] = {"giant_keys": giant_keys()}
    x = np.random.RandomState(1).rand(2, 14, 128, 128).astype(np.float32)
    with torch.no_grad():
        out["enc_pooled"] = model.forward_features(torch.from_numpy(x)).numpy()
        out["enc_grid"] = model.extra_features(torch.from_numpy(x))[-1].numpy()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "mp_rank_00_model_states.pt"
        torch.save({"module": state}, ckpt)
        os.environ["RS_EMBED_SATVISION_TOA_CKPT"] = str(ckpt)
        sv._build_satvision_official_compatible_model = lambda **kw: build(TINY, **kw)
        assembled, meta = assemble(raw_input("proxy"))
        out["ad_proxy_assembled"] = np.asarray(assembled, np.float32)
        adapter_case("proxy", assembled, meta, out)
        adapter_case("proxy_roi", assembled, {**meta, "roi_window_geo": ROI}, out)
        adapter_case("toa_raw", raw_input("toa_raw"), {}, out)
        adapter_case("toa_unit", raw_input("toa_unit"), {}, out)
    np.savez_compressed(dest, **out)
    print("wrote", dest, os.path.getsize(dest), "bytes;", len(out["giant_keys"]), "giant keys")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/satvision_golden.npz")
