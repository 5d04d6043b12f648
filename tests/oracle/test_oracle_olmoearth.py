"""Oracle: OlmoEarth v1.2 Base, our whole path against olmoearth-pretrain-minimal's own
documented end-to-end usage (its README "Sample Code").

What is independent and what is not: the network code is the same package on both sides
(our model builds its ``LatentMIM`` from olmoearth-pretrain-minimal; nothing else
implements OlmoEarth), so this test does not check the transformer. It checks everything
around it that we wrote: reading ``config.json`` + ``weights.pth`` (ours: our resolver, our
strict key check; theirs: the package's ``load_model_from_path``), the band axis handed to
the package's ``Normalizer(std_multiplier=2.0)``, the sample we build (bands-last data,
the visibility mask, ``(day, month0, year)`` timestamps from the frame dates, patch size and
input resolution), and the pooled / grid reductions of the output tokens. The checkpoint is
the package's own model, built by ``load_model_from_path(load_weights=False)`` from the
published-format ``config.json``, seeded, perturbed and saved as ``weights.pth`` (a
``torch.save`` of the whole state dict, as published). Limitation: that ``config.json`` is
the one this project writes (``published_v12_config``, from the published Nano test
artifact's structure); the real Base file is unreachable offline, so a wrong config value
would be shared by both sides.

Input: 2 frames of 32 x 32 px (square and at ``image_size``, so our pad/resize step is the
identity and the package's usage, which has none, sees the same pixels), patch 4.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from tests.oracle._helpers_b import assert_close, embed_both, perturb_, seeded_build

pytestmark = pytest.mark.oracle

torch = pytest.importorskip("torch")
oe = pytest.importorskip("olmoearth_pretrain_minimal")

SIZE, PATCH = 32, 4
FRAMES = [("2022-05-01", "2022-05-31"), ("2022-05-31", "2022-06-30")]


@pytest.fixture(scope="module")
def pair(module_scratch):
    """(the package's model loaded by its own loader, our OlmoEarth) on one checkpoint."""
    from rs_embed_ray.models.olmoearth import OlmoEarth, published_v12_config

    folder = module_scratch("olmoearth_pkg")
    (folder / "config.json").write_text(json.dumps(published_v12_config("base_v1_2")))
    built = seeded_build(lambda: oe.load_model_from_path(folder, load_weights=False), seed=51)
    perturb_(built, seed=52)
    torch.save(built.state_dict(), folder / "weights.pth")
    del built
    theirs = oe.load_model_from_path(folder, load_weights=True).eval()
    ours = OlmoEarth(
        device="cpu",
        weights=str(folder / "weights.pth"),
        model_config={"image_size": SIZE, "patch_size": PATCH},
        precision="float32",
    )
    return theirs, ours


def package_usage(model, raw_tchw: np.ndarray, frames=FRAMES):
    """The README's sample: normalise bands-last data, build the sample, run the encoder."""
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.nn.flexi_vit import PoolingType
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
        MaskedOlmoEarthSample,
    )

    data = raw_tchw.transpose(2, 3, 0, 1)[None]  # (B, H, W, T, C)
    norm = oe.Normalizer(std_multiplier=2.0).normalize(Modality.SENTINEL2_L2A, data)
    stamps = []
    for s, _ in frames:
        d = date.fromisoformat(s)
        stamps.append([d.day, d.month - 1, d.year])
    b, h, w, t, _ = norm.shape
    sample = MaskedOlmoEarthSample(
        timestamps=torch.tensor([stamps], dtype=torch.long),
        sentinel2_l2a=torch.from_numpy(np.asarray(norm)).float(),
        sentinel2_l2a_mask=torch.zeros(b, h, w, t, 1, dtype=torch.long),
    )
    with torch.no_grad():
        out = model.encoder(sample, patch_size=PATCH, input_res=10, fast_pass=True)
        tm = out["tokens_and_masks"]
        pooled = tm.pool_unmasked_tokens(pooling_type=PoolingType.MEAN)[0].numpy()
        tok = tm.sentinel2_l2a[0]  # (h, w, T, band sets, D)
    grid = tok.mean(dim=(2, 3)).permute(2, 0, 1).numpy()
    return pooled, grid


def test_whole_path_matches_package_usage(pair):
    from rs_embed_ray.specs import TemporalSpec

    theirs, ours = pair
    rng = np.random.default_rng(13)
    raw = rng.uniform(0, 6000, size=(2, 12, SIZE, SIZE)).astype(np.float32)
    metas = [{"frames": [{"start": s, "end": e} for s, e in FRAMES]}]
    temporal = TemporalSpec.range(FRAMES[0][0], FRAMES[-1][1])
    pooled, grid = embed_both(ours, [raw], temporal=temporal, metas=metas)
    want_pooled, want_grid = package_usage(theirs, raw)
    assert want_grid.shape == (768, SIZE // PATCH, SIZE // PATCH)
    assert_close(grid[0], want_grid, "olmoearth grid")
    assert_close(pooled[0], want_pooled, "olmoearth pooled")
    # the comparison sees the dates: frames a quarter later give a clearly different vector
    later = [("2022-08-01", "2022-08-31"), ("2022-08-31", "2022-09-30")]
    other, _ = package_usage(theirs, raw, later)
    assert float(np.abs(other - want_pooled).max()) > 1e-3


def test_preprocessing_matches_package_normalizer(pair):
    """Our normalised frames equal the package's Normalizer on the bands-last array."""
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.constants import Modality

    _, ours = pair
    rng = np.random.default_rng(14)
    raw = rng.uniform(0, 9000, size=(2, 12, SIZE, SIZE)).astype(np.float32)
    xs, _ = ours.preprocess([raw])
    want = oe.Normalizer(std_multiplier=2.0).normalize(
        Modality.SENTINEL2_L2A, raw.transpose(0, 2, 3, 1)
    )
    assert_close(xs[0].numpy(), np.asarray(want).transpose(0, 3, 1, 2), "olmoearth prep", 1e-6)
