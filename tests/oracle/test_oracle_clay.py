"""Clay against the upstream Clay v1.5 code: the same checkpoint file and the same
preprocessed input give the same CLS and patch tokens (max abs <= 1e-4, float32).

The oracle is ``terratorch.models.backbones.clay_v15`` (terratorch 1.2.11, the oracle
extra), which ships the Clay repository's ``Encoder`` / ``DynamicEmbedding`` /
``Transformer``. The official ``claymodel==1.5.0`` wheel cannot serve: it installs its
modules at the top level of site-packages and imports ``src.*``. The file is the published
Lightning layout with the real large encoder (random values); the oracle gets the
``model.encoder.*`` tensors, strictly, and the upstream ``datacube`` dict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.specs import OutputSpec, PointBuffer, TemporalSpec

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.oracle

PLACES = [PointBuffer(15.0, 45.0, 160.0), PointBuffer(-70.6, -33.9, 80.0)]
T = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture(scope="module")
def clay_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs_embed_ray.testing.checkpoints_clay import write_clay_checkpoint

    return write_clay_checkpoint(tmp_path_factory.getbasetemp() / "clay-ckpt", reuse=True)


@pytest.fixture(scope="module")
def oracle(clay_ckpt: Path):
    before = torch.get_float32_matmul_precision()
    try:  # importing it sets the process-wide matmul precision to "medium"
        mod = pytest.importorskip("terratorch.models.backbones.clay_v15.model")
    finally:
        torch.set_float32_matmul_precision(before)
    with torch.device("meta"):  # no init pass; every tensor comes from the file
        enc = mod.Encoder(
            mask_ratio=0.0,
            patch_size=8,
            shuffle=False,
            dim=1024,
            depth=24,
            heads=16,
            dim_head=64,
            mlp_ratio=4,
        )
    sd = torch.load(clay_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    sd = {k[len("model.encoder.") :]: v for k, v in sd.items() if k.startswith("model.encoder.")}
    enc.load_state_dict(sd, strict=True, assign=True)
    return enc.eval()


def test_same_file_same_input_same_embedding(clay_ckpt, oracle):
    from rs_embed_ray.models.clay import S2_WAVELENGTH_UM, Clay, latlon_code

    ours = Clay(weights=str(clay_ckpt), model_config={"image_size": 32}, precision="float32")
    rng = np.random.default_rng(7)
    # 32 px (no resize, gsd 10) and 16 px (resized to 32: the upstream recipe says gsd 5)
    for hw, gsd in (((32, 32), 10.0), ((16, 16), 5.0)):
        xs = [rng.uniform(0, 8000, size=(10, *hw)).astype(np.float32) for _ in PLACES]
        kw = dict(spatials=PLACES, temporal=T, fetch_metas=[{}, {}])
        pooled = ours.embed_batch(xs, output=OutputSpec.pooled(), **kw)
        grid = ours.embed_batch(xs, output=OutputSpec.grid(), **kw)
        x, _, gsds = ours.preprocess(xs)
        assert gsds == [gsd, gsd]
        cube = {
            "pixels": x,
            # rs-embed 0.3.1's _clay_time_vec for the window's midpoint, 2022-07-17
            "time": torch.tensor([[-0.23931566, -0.97094184, 0.0, 1.0]] * 2),
            "latlon": torch.tensor([latlon_code(p.lat, p.lon) for p in PLACES]),
            "gsd": torch.tensor(gsd),
            "waves": torch.tensor(S2_WAVELENGTH_UM),
        }
        assert pooled[0].meta["time_midpoint"] == "2022-07-17"
        with torch.no_grad():
            ref, *_ = oracle(cube)
        ref_cls = ref[:, 0].numpy()
        ref_grid = ref[:, 1:].reshape(2, 4, 4, 1024).permute(0, 3, 1, 2).numpy()
        for i in range(2):
            assert pooled[i].meta["pooling"] == "model_cls"
            assert np.abs(pooled[i].data - ref_cls[i]).max() <= 1e-4
            assert np.abs(grid[i].data - ref_grid[i]).max() <= 1e-4
        assert np.abs(ref_cls[0]).max() > 0.1  # the comparison is not between zeros
