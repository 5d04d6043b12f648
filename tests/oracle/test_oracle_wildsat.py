"""WildSAT vitb16 against what we did not write, in two parts.

* The backbone against torchvision itself (the official backbone package, installed next to
  our torch): torchvision's own ``vit_b_16`` forward, given the same state dict, must give
  our 1000-way output, and its ``encoder`` module's output (a forward hook) our tokens.
* The whole embedding (preprocessing, backbone and image head) against rs-embed 0.3.1's
  adapter, through ``tests/oracle/data/wildsat_golden.npz``: ``scripts/wildsat_golden.py``
  (run in the rs-embed venv) wrote the published file format with ``wildsat_values(seed=0)``
  and ran rs-embed's ``WildSATEmbedder.get_embedding`` on raw inputs rebuilt here from the
  same seeds. Here our writer writes the same values, our loader reads them strictly, and
  the preprocessed uint8 image must be identical and the embeddings within 1e-4. The
  published resnet50 and swint files (torchvision ``resnet50`` / ``swin_t``) likewise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

GOLDEN = Path(__file__).parent / "data" / "wildsat_golden.npz"
TOL = 1e-4
ROI = (0.0, 1.0, 0.25, 0.75)


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
def ckpts(module_scratch):
    """variant -> its published-format file (seed 0), each written on first use."""
    from rs_embed_ray.testing.checkpoints_wildsat import write_wildsat_checkpoint

    done: dict[str, Path] = {}

    def get(variant: str = "vitb16") -> Path:
        if variant not in done:
            folder = module_scratch(f"wildsat_{variant}")
            done[variant] = write_wildsat_checkpoint(folder, seed=0, variant=variant)
        return done[variant]

    return get


@pytest.fixture(scope="module")
def ckpt(ckpts) -> Path:
    return ckpts("vitb16")


_models: dict[tuple, object] = {}


def _model(ckpt: Path, cfg: dict):
    from rs_embed_ray.models.wildsat import WildSAT

    key = tuple(sorted(cfg.items()))
    if key not in _models:
        _models[key] = WildSAT(
            device="cpu", weights=str(ckpt), model_config=cfg, precision="float32"
        )
    return _models[key]


def _raw(case: str) -> np.ndarray:
    if case == "nan":
        rs = np.random.RandomState(3)
        x = rs.uniform(-500, 12000, size=(3, 24, 30)).astype(np.float32)
        x[0, 2, 3] = np.nan
        x[2, 5, :4] = np.inf
        return x
    seed, side = {"a": (2, 40), "full": (4, 224), "unit": (5, 32), "backbone": (6, 32)}.get(
        case, (7, 48)
    )
    return np.random.RandomState(seed).randint(0, 6000, size=(3, side, side)).astype(np.float32)


def test_backbone_matches_torchvision_forward(ckpt: Path) -> None:
    """Our tokens and 1000-way output = torchvision's ``VisionTransformer.forward``."""
    import torch
    import torchvision

    from rs_embed_ray.models.wildsat import read_checkpoint

    model = _model(ckpt, {}).model
    sd, _ = read_checkpoint(str(ckpt))
    ref = torchvision.models.vit_b_16(weights=None).eval()
    ref.load_state_dict(
        {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    )
    seen: list = []
    ref.encoder.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = torch.from_numpy(np.random.RandomState(9).uniform(0, 1, (2, 3, 224, 224))).float()
    with torch.inference_mode():
        logits_ref = ref(x)
        tok, logits, img = model(x, "backbone3")
    assert tok.shape == (2, 197, 768) and logits.shape == (2, 1000) and img.shape == (2, 256)
    assert torch.abs(logits - logits_ref).max().item() <= TOL
    assert torch.abs(tok - seen[0]).max().item() <= TOL
    w3 = sd["decoder.backbone3.0.weight"]
    assert torch.abs(img - logits_ref @ w3.T).max().item() <= TOL


@pytest.mark.parametrize(
    "case,cfg",
    [
        ("a", {}),
        ("nan", {}),
        ("full", {}),
        ("unit", {"norm": "unit_scale"}),
        ("backbone", {"feature": "backbone"}),
        ("roi", {}),
        ("resnet50", {"variant": "resnet50"}),
        ("swint", {"variant": "swint"}),
    ],
)
def test_embedder_matches_rs_embed_adapter(case: str, cfg: dict, golden: dict, ckpts) -> None:
    from rs_embed_ray.models.wildsat import preprocess
    from rs_embed_ray.specs import OutputSpec

    raw = _raw(case)
    if f"{case}_u8" in golden:  # the preprocessed image, bit for bit
        x = preprocess([raw], norm=cfg.get("norm", "minmax"))[0].numpy()
        u8 = np.rint(x * 255.0).transpose(1, 2, 0)
        np.testing.assert_array_equal(u8, golden[f"{case}_u8"].astype(np.float32))
    model = _model(ckpts(cfg.get("variant", "vitb16")), cfg)
    metas = [{"roi_window_geo": list(ROI)}] if case in ("roi", "resnet50") else [{}]
    kw = dict(spatials=[None], temporal=None, fetch_metas=metas)
    (e,) = model.embed_batch([raw], output=OutputSpec.pooled(), **kw)
    assert e.data.shape == golden[f"{case}_vec"].shape
    assert np.abs(e.data - golden[f"{case}_vec"]).max() <= TOL
    if f"{case}_grid" in golden:
        (eg,) = model.embed_batch([raw], output=OutputSpec.grid(), **kw)
        assert eg.data.shape == golden[f"{case}_grid"].shape
        assert np.abs(eg.data - golden[f"{case}_grid"]).max() <= TOL
