"""TerraFM against a golden file made by the official ``terrafm.py`` (no package ships it).

Neither the package index nor terratorch 1.2.11 has TerraFM, so the oracle is the official
source (github.com/mbzuai-oryx/TerraFM, ``terrafm.py`` at commit e186ad8), run once by
``scripts/terrafm_golden.py``, which records in ``data/terrafm_golden.npz``:

* the official ``terrafm_base()`` state-dict layout (key names and shapes, in its order);
* for a portable formula checkpoint over that layout (``rs_embed_ray.testing.golden``, loaded
  into the official model with ``strict=True``) and three 224 px inputs in model units, the
  official outputs: ``model(x)`` (CLS after ``norm``; pooled) and ``extract_feature(x,
  out_indices=[11])`` (normed patch tokens; grid, every 16th channel stored) for the default
  stem (L1C: the official forward never passes ``is_l2a``), for ``PatchEmbed.forward(x,
  is_l2a=True)`` (the L2A stem) and for a 2-channel S1 input.

Here the same checkpoint is rebuilt from the layout, saved as the published ``TerraFM-B.pth``
(a bare ``torch.save`` state dict) and loaded by our ``TerraFM`` through the normal weights
path, so the key layout is proven too. Float32 on CPU, max abs difference <= 1e-4.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.specs import OutputSpec

pytestmark = pytest.mark.oracle

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

log = logging.getLogger(__name__)
TOL = 1e-4
GOLDEN = Path(__file__).parent / "data" / "terrafm_golden.npz"


@pytest.fixture(autouse=True)
def _terrafm_oracle_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No weights dir, an empty private hub cache, hub offline: only the explicit file loads."""
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def terrafm_golden(module_scratch):
    """(golden arrays, path of the rebuilt ``TerraFM-B.pth``)."""
    from rs_embed_ray.testing.golden import golden_state_dict

    with np.load(GOLDEN) as z:
        golden = {k: z[k] for k in z.files}
    layout = json.loads(str(golden["layout"]))
    path = module_scratch("terrafm_oracle") / "TerraFM-B.pth"
    torch.save(golden_state_dict(layout), path)
    return golden, path


def _s2_raw():
    """The golden S2 inputs (model units, [0, 1]) as Sentinel-2 DN: ours divides by 10000."""
    from rs_embed_ray.testing.golden import golden_image

    return [golden_image(12, 224, i) * np.float32(10000.0) for i in (0, 1)]


def _diffs(golden, name, pooled, grid):
    step = json.loads(str(golden["provenance"]))["grid_channel_step"]
    d_pooled = float(np.abs(pooled - golden[f"pooled_{name}"]).max())
    d_grid = float(np.abs(grid[:, ::step] - golden[f"grid_{name}"]).max())
    log.info("terrafm %s vs official: max abs pooled %.2e, grid %.2e", name, d_pooled, d_grid)
    return d_pooled, d_grid


def test_golden_file_records_the_official_layout(terrafm_golden):
    golden, _ = terrafm_golden
    layout = dict((k, tuple(s)) for k, s in json.loads(str(golden["layout"])))
    prov = json.loads(str(golden["provenance"]))
    assert prov["official_commit"].startswith("e186ad8")
    assert len(layout) == 164 and not any(k.startswith("head.") for k in layout)
    assert layout["patch_embed.conv2d_s2_l1c.weight"] == (2304, 12, 16, 16)
    assert layout["patch_embed.conv2d_s1.weight"] == (2304, 2, 16, 16)
    assert "patch_embed.projection.proj1.bias" not in layout


@pytest.mark.parametrize("stem", ["l1c", "l2a"])
def test_terrafm_s2_matches_official(terrafm_golden, stem):
    from rs_embed_ray.models.terrafm import TerraFM

    golden, path = terrafm_golden
    cfg = {} if stem == "l1c" else {"s2_stem": "l2a"}  # l1c is the default
    ours = TerraFM(device="cpu", weights=str(path), precision="float32", model_config=cfg)
    assert ours.s2_stem == stem
    raw = _s2_raw()
    kw = dict(spatials=[None, None], temporal=None, fetch_metas=[{}, {}])
    pooled = ours.embed_batch(raw, output=OutputSpec.pooled(), **kw)
    grid = ours.embed_batch(raw, output=OutputSpec.grid(), **kw)
    assert [e.meta["patch_embed"] for e in grid] == [stem, stem]
    # only the L2A option differs from the official forward (and rs-embed): the meta says so
    assert [("reference_difference" in e.meta) for e in pooled] == [stem == "l2a"] * 2
    d_pooled, d_grid = _diffs(
        golden, stem, np.stack([e.data for e in pooled]), np.stack([e.data for e in grid])
    )
    assert d_pooled <= TOL and d_grid <= TOL, (d_pooled, d_grid)


def test_terrafm_s1_stem_matches_official(terrafm_golden):
    """The S1 stem on the golden 2-channel image, fed as the model's input (our S1
    normalisation, log1p/p99, is rs-embed's and is tested in tests/models/test_terrafm.py)."""
    from rs_embed_ray.models.terrafm import TerraFM
    from rs_embed_ray.testing.golden import golden_image

    golden, path = terrafm_golden
    ours = TerraFM(device="cpu", weights=str(path), precision="float32")
    x = torch.from_numpy(golden_image(2, 224, 2)[None])
    tok = ours.forward(x, "s1")  # (1, 197, 768): final-norm [CLS, patches]
    grid = tok[:, 1:].reshape(1, 14, 14, 768).transpose(0, 3, 1, 2)
    d_pooled, d_grid = _diffs(golden, "s1", tok[:, 0], grid)
    assert d_pooled <= TOL and d_grid <= TOL, (d_pooled, d_grid)
