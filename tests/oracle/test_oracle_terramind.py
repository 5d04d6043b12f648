"""Oracle: terratorch's own TerraMind v1 small (``BACKBONE_REGISTRY.build("terramind_v1_small",
modalities=["S2L2A"])``, the implementation rs-embed 0.3.1 runs) loaded from the same
published-format file gives the same tokens as ours on the same preprocessed input.

terratorch comes from the ``oracle`` extra (scripts/setup_env.sh); it is not a dependency of
the product, which builds the encoder itself (a few hundred lines against terratorch's tree of
mmseg/lightning/torchgeo dependencies). The comparison with rs-embed's adapter itself (both
preprocessing modes) is scripts/compare_terramind_rs_embed.py, which needs the anchor venv.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.oracle
torch = pytest.importorskip("torch")


def test_terratorch_terramind_v1_small_same_tokens(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry = pytest.importorskip("terratorch.registry")
        from terratorch.models.backbones.terramind.model.terramind_register import (
            checkpoint_filter_fn,
        )

        oracle = registry.BACKBONE_REGISTRY.build(
            "terramind_v1_small", pretrained=False, modalities=["S2L2A"]
        )
    from rs_embed_ray.models.terramind import TerraMind
    from rs_embed_ray.specs import OutputSpec
    from rs_embed_ray.testing.checkpoints_terramind import write_terramind_checkpoint

    path = write_terramind_checkpoint(tmp_path, seed=1)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    # terratorch's own pretrained path: filter to its keys, then a strict load
    oracle.load_state_dict(checkpoint_filter_fn(sd, oracle), strict=True)
    oracle.eval()
    ours = TerraMind(device="cpu", weights=str(path), precision="float32")
    rng = np.random.default_rng(0)
    raw = [rng.uniform(0, 9000, size=(12, 224, 224)).astype(np.float32) for _ in range(2)]
    x = ours.preprocess(raw)
    with torch.no_grad():
        want = oracle({"S2L2A": x})[-1].numpy()
    grids = ours.embed_batch(
        raw, output=OutputSpec.grid(), spatials=[None] * 2, temporal=None, fetch_metas=[{}] * 2
    )
    for i in range(2):
        got = grids[i].data.transpose(1, 2, 0).reshape(196, 384)
        assert np.abs(got - want[i]).max() <= 1e-4
    pooled = ours.embed_batch(
        raw, output=OutputSpec.pooled(), spatials=[None] * 2, temporal=None, fetch_metas=[{}] * 2
    )
    assert np.abs(pooled[1].data - want[1].mean(axis=0)).max() <= 1e-4
