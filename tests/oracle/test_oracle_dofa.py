"""DOFA against torchgeo's independent implementation (``torchgeo.models.dofa``, 0.8.1).

The checkpoint is built with torchgeo's own classes (``dofa_base_patch16_224``, seeded random
init; parameters torchgeo initialises to a constant -- LayerNorms, ``cls_token``, the zero
``pos_embed`` -- get random offsets so that a swapped or dropped key shows), saved in the
published ``earthflow/DOFA`` ``DOFA_ViT_base_e100.pth`` layout (a bare ``torch.save`` state
dict whose final LayerNorm is ``norm``, no classifier head) and loaded by our ``DOFA`` through
the normal weights path. Both get the same preprocessed tensor; pooled is torchgeo's
``forward_features`` (global pool + ``fc_norm``), grid the output of its last block (a forward
hook), patch tokens only. Float32 on CPU, max abs difference <= 1e-4.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.specs import OutputSpec

pytestmark = pytest.mark.oracle

torch = pytest.importorskip("torch")
dofa_tg = pytest.importorskip("torchgeo.models.dofa")

log = logging.getLogger(__name__)
TOL = 1e-4
# the 9-band Sentinel-2 statistics (0..255 scale) and wavelengths (um) of the official DOFA
# README (github.com/zhu-xlab/DOFA, "Load Sentinel-2 data with 9 channels"), band order
# B4,B3,B2,B5,B6,B7,B8,B11,B12; torchgeo leaves normalisation to the user, so these are quoted
OFFICIAL_S2_MEAN = [
    114.1099739,
    114.81779093,
    126.63977424,
    84.33539309,
    97.84789168,
    103.94461911,
    101.435633,
    72.32804172,
    56.66528851,
]
OFFICIAL_S2_STD = [
    77.84352553,
    69.96844919,
    67.42465279,
    64.57022983,
    61.72545487,
    61.34187099,
    60.29744676,
    47.88519516,
    42.55886798,
]
OFFICIAL_S2_WAVES = [0.665, 0.56, 0.49, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19]


@pytest.fixture(autouse=True)
def _dofa_oracle_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No weights dir, an empty private hub cache, hub offline: only the explicit file loads."""
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def dofa_pair(module_scratch):
    """(torchgeo DOFA-base, our DOFA loaded from the file torchgeo's weights were saved to)."""
    from rs_embed_ray.models.dofa import DOFA

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20240315)
        ref = dofa_tg.dofa_base_patch16_224()  # global_pool=True: fc_norm, a 45-way head
        with torch.no_grad():
            for p in ref.parameters():
                if float(p.std()) == 0.0:  # constant init (LN 1/0, cls 0, pos_embed 0)
                    p.add_(0.05 * torch.randn_like(p))
    ref.eval()
    sd = {k: v.detach().clone() for k, v in ref.state_dict().items() if not k.startswith("head.")}
    for suffix in ("weight", "bias"):  # pretraining checkpoints name the final LN ``norm``
        sd[f"norm.{suffix}"] = sd.pop(f"fc_norm.{suffix}")
    path = module_scratch("dofa_oracle") / "DOFA_ViT_base_e100.pth"
    torch.save(sd, path)
    ours = DOFA(device="cpu", weights=str(path), precision="float32")
    return ref, ours, path


def _reference(ref, x):
    """torchgeo's pooled vector and last-block patch tokens as (B, D, 14, 14)."""
    got = {}
    hook = ref.blocks[-1].register_forward_hook(lambda m, i, o: got.update(tok=o))
    try:
        with torch.no_grad():
            pooled = ref.forward_features(x, OFFICIAL_S2_WAVES)
    finally:
        hook.remove()
    tok = got["tok"][:, 1:, :]
    grid = tok.reshape(tok.shape[0], 14, 14, -1).permute(0, 3, 1, 2)
    return pooled.numpy(), grid.numpy()


def test_dofa_matches_torchgeo_pooled_and_grid(dofa_pair):
    ref, ours, _ = dofa_pair
    rng = np.random.default_rng(7)
    raw = [
        rng.uniform(0, 10000, size=(9, 224, 224)).astype(np.float32),
        rng.uniform(0, 6000, size=(9, 64, 64)).astype(np.float32),  # resized to 224
    ]
    x, _ = ours.preprocess(raw)
    want_pooled, want_grid = _reference(ref, x)
    kw = dict(spatials=[None, None], temporal=None, fetch_metas=[{}, {}])
    pooled = np.stack([e.data for e in ours.embed_batch(raw, output=OutputSpec.pooled(), **kw)])
    grid = np.stack([e.data for e in ours.embed_batch(raw, output=OutputSpec.grid(), **kw)])
    d_pooled = float(np.abs(pooled - want_pooled).max())
    d_grid = float(np.abs(grid - want_grid).max())
    log.info("dofa vs torchgeo: max abs pooled %.2e, grid %.2e", d_pooled, d_grid)
    assert grid.shape == want_grid.shape == (2, 768, 14, 14)
    assert d_pooled <= TOL and d_grid <= TOL, (d_pooled, d_grid)
    # the comparison can fail: the outputs are not trivially small or constant
    assert float(np.abs(want_grid).mean()) > 0.1 and float(want_pooled.std()) > 0.1


def test_dofa_wavelengths_and_preprocessing_match_the_official_recipe(dofa_pair):
    """Our 224 px input == torchgeo's DOFA weights transform (``CenterCrop(224)``) applied to
    the raw patch normalised with the official README's statistics on the 0..255 scale.

    DN -> 0..255 (``clip(DN, 0, 10000) / 10000 * 255``) is rs-embed's mapping of Sentinel-2
    reflectance onto the 8-bit scale of DOFA's PNG training data; torchgeo ships no
    normalisation for DOFA. For other sizes torchgeo centre-crops where we pad to a square
    and resize (rs-embed's choice, docs/models.md)."""
    _, ours, _ = dofa_pair
    from rs_embed_ray.models.dofa import S2_WAVELENGTH_UM

    assert [S2_WAVELENGTH_UM[b] for b in ours.bands] == OFFICIAL_S2_WAVES
    raw = np.random.default_rng(3).uniform(-50, 12000, size=(9, 224, 224)).astype(np.float32)
    x, _ = ours.preprocess([raw])
    mean = torch.tensor(OFFICIAL_S2_MEAN).view(-1, 1, 1)
    std = torch.tensor(OFFICIAL_S2_STD).view(-1, 1, 1)
    t = (torch.from_numpy(np.clip(raw, 0, 10000)) / 10000 * 255 - mean) / std
    want = dofa_tg.DOFABase16_Weights.DOFA_MAE.transforms(t[None])
    assert tuple(want.shape) == (1, 9, 224, 224)
    np.testing.assert_allclose(x.numpy(), want.numpy(), atol=1e-5, rtol=0)


def test_dofa_checkpoint_writer_keeps_the_published_layout(dofa_pair, tmp_path):
    """``write_dofa_checkpoint`` (used by the other tests) writes exactly the keys and shapes
    of the file saved from torchgeo's model above."""
    from rs_embed_ray.testing.checkpoints import write_dofa_checkpoint

    _, _, path = dofa_pair
    theirs = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    ours = torch.load(
        write_dofa_checkpoint(tmp_path), map_location="cpu", weights_only=True, mmap=True
    )
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }
