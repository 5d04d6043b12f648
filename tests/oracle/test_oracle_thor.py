"""THOR v1 base against the official encoder (no package installs: rs-embed 0.3.1's vendored
copy of FM4CS/THOR v1.0.2 and of the thor_terratorch_ext wrapper), through a golden file.

``scripts/thor_golden.py`` (run in the rs-embed venv) filled the official base encoder with
``thor_values(seed=0)``, saved it in the published format, loaded it through the official
loader and ran it on fixed inputs; the outputs are in ``tests/oracle/data/thor_golden.npz``.
Here the same values are written in the published format by our writer, loaded strictly,
and compared (max abs <= 1e-4):

* encoder cases: S2 (batch 2, 10 m + 20 m groups) and S1 VV/VH on fixed normalised inputs:
  tokens and the group-mean grid;
* rs-embed's own adapter end to end on raw inputs: native_snap with a crop, a zero pad, S1,
  a non-square fallback to fixed, and the default 288 fixed resize (our ``resize_mode``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

GOLDEN = Path(__file__).parent / "data" / "thor_golden.npz"
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine spinning threads are much slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_thor import write_thor_checkpoint

    return write_thor_checkpoint(module_scratch("thor_base"), seed=0)


@pytest.fixture(scope="module")
def encoder(ckpt: Path):
    from rs_embed_ray.models.runtime import load_prepared
    from rs_embed_ray.models.thor import build_thor, prepare_state_dict

    return load_prepared(build_thor("base"), ckpt, prepare_state_dict).eval()


@pytest.mark.parametrize("case", ["s2", "s1"])
def test_encoder_matches_official(case: str, golden: dict, encoder) -> None:
    import torch

    from rs_embed_ray.models.thor import S1_CHANNELS, S2_CHANNELS, merge_groups, to_bands

    x = torch.from_numpy(golden[f"enc_{case}_x"])
    channels = S1_CHANNELS if case == "s1" else S2_CHANNELS
    side = x.shape[-1]
    with torch.inference_mode():
        tok, layout = encoder.forward_tokens(to_bands(x, channels, side), ground_cover=side * 10)
        grid = merge_groups(tok, layout)
    assert tok.shape == golden[f"enc_{case}_tokens"].shape
    assert np.abs(tok.numpy() - golden[f"enc_{case}_tokens"]).max() <= TOL
    assert np.abs(grid.numpy() - golden[f"enc_{case}_grid"]).max() <= TOL


def _raw(case: str) -> np.ndarray:
    if case == "snap_s1":
        return np.random.RandomState(3).gamma(1.0, 0.1, size=(2, 28, 28)).astype(np.float32)
    shape = {"snap_crop": (10, 40, 40), "snap_pad": (10, 44, 44), "rect": (10, 40, 56)}
    seed = {"snap_crop": 2, "snap_pad": 4, "rect": 6, "fixed288": 5}[case]
    raw = np.random.RandomState(seed).randint(0, 6000, size=shape.get(case, (10, 40, 40)))
    return raw.astype(np.float32)


_models: dict[tuple, object] = {}


def _model(ckpt: Path, cfg: dict):
    from rs_embed_ray.models.thor import Thor

    key = tuple(sorted(cfg.items()))
    if key not in _models:
        _models[key] = Thor(device="cpu", weights=str(ckpt), model_config=cfg)
    return _models[key]


@pytest.mark.parametrize(
    "case,cfg",
    [
        ("snap_crop", {"resize_mode": "native_snap"}),
        ("snap_pad", {"resize_mode": "native_snap"}),
        ("snap_s1", {"resize_mode": "native_snap"}),
        ("rect", {"resize_mode": "native_snap", "image_size": 32}),
        ("fixed288", {}),
    ],
)
def test_embedder_matches_rs_embed_adapter(case: str, cfg: dict, golden: dict, ckpt) -> None:
    from rs_embed_ray.specs import OutputSpec

    raw = _raw(case)
    assert float(raw.astype(np.float64).sum()) == float(golden[f"ad_{case}_raw_sum"])
    model = _model(ckpt, cfg)
    if case == "fixed288":  # one 288 px forward (1,620 tokens): tokens and grid from it
        from rs_embed_ray.models.thor import prepare

        p = prepare(raw, model.cfg)
        tok, grid = model.forward([p])
        side, vec, g = p.side, tok[0].mean(axis=0), grid[0][:, ::5, ::5]
    else:
        kw = dict(spatials=[None], temporal=None, fetch_metas=[{}])
        (e,) = model.embed_batch([raw], output=OutputSpec.pooled(), **kw)
        (eg,) = model.embed_batch([raw], output=OutputSpec.grid(), **kw)
        side, vec, g = e.meta["image_size"], e.data, eg.data
    assert side == int(golden[f"ad_{case}_side"])
    assert np.abs(vec - golden[f"ad_{case}_vec"]).max() <= TOL
    assert g.shape == golden[f"ad_{case}_grid"].shape
    assert np.abs(g - golden[f"ad_{case}_grid"]).max() <= TOL
