"""satmaepp ``modality="s2_10b"`` end to end on a real local Ray cluster: through the real
earthengine-api client against the emulator in both layouts. ``modality="s2_10b"`` alone
must switch the fetch to the 10 S2 bands and the model to the grouped-channel ViT-L; the
checkpoint is the published training-checkpoint format (random values, ~1.3 GB, written
once), and manifests must name it and its sha256. One Ray worker: each loads the ViT-L.

olmoearth ``modality="s1"``: the fetch switches to VV,VH from ``COPERNICUS/S1_GRD`` (dB) in
explicit 30-day bins (one computePixels per place), an empty bin is dropped; the published
Nano v1.2 layout (random values) at image_size 32."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytest.importorskip("timm")
pytestmark = pytest.mark.usefixtures("ray_cluster")

T = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(2)]
S2_10 = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_s2o import write_s2_10b_checkpoint

    return write_s2_10b_checkpoint(module_scratch("satmaepp_s2"), seed=0)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _export(emu: EEEmulator, out: Path, layout: str, ckpt: Path, **kw):
    return export_batch(
        spatials=PLACES,
        temporal=T,
        models=["satmaepp"],
        modality="s2_10b",
        backend="gee",
        provider_options={"url": emu.url},
        weights={"satmaepp": str(ckpt)},
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=1,
        chunk_size=2,
        **kw,
    )


def test_satmaepp_s2_10b_in_both_layouts(tmp_path, ckpt):
    import torch

    from rs_embed_ray.models.satmaepp import SatMAEPP

    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ckpt)
        pixels = emu.requests_of("computePixels")
        combined = _export(emu, tmp_path / "g.npz", "combined", ckpt, output=OutputSpec.grid())
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == len(PLACES) and all(r["bands"] == S2_10 for r in pixels)
    sha = _sha(ckpt)
    for man in (per_item[0], combined):
        (m,) = man["models"]
        assert m["weights"]["weights"] == str(ckpt.resolve()) and m["weights"]["sha256"] == sha
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["embedding"]["shape"] == [1024] and m["input"]["shape"] == [10, 32, 32]
    assert '"s2_10b"' in json.dumps(man)
    with np.load(tmp_path / "pi" / "p00000.npz") as z:
        x = z["input_chw__satmaepp"]
        e = z["embedding__satmaepp"]
    with np.load(tmp_path / "g.npz") as z:
        grids = z["embeddings__satmaepp"]
        x0 = z["inputs_bchw__satmaepp"][0]
    assert grids.shape == (len(PLACES), 1024, 12, 12) and np.isfinite(grids).all()
    np.testing.assert_array_equal(x0, x)  # the same pixels in both layouts
    # the model in this process on the saved input: one forward gives both outputs
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = SatMAEPP(weights=str(ckpt), model_config={"modality": "s2_10b"}, precision="float32")
        tok = ref.forward_tokens(ref.preprocess([x]))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(e, tok[0, 1:].mean(axis=0), rtol=0, atol=1e-4)
    g = tok[0, 1:].reshape(3, 12, 12, 1024).mean(axis=0).transpose(2, 0, 1)
    np.testing.assert_allclose(grids[0], g, rtol=0, atol=1e-4)


OE_WINDOW = TemporalSpec.range("2022-01-01", "2022-03-15")  # bins Jan 1, Jan 31, Mar 2
OE_CFG = {"variant": "nano_v1_2", "image_size": 32}


@pytest.fixture(scope="module")
def nano_ckpt(module_scratch) -> Path:
    pytest.importorskip("olmoearth_pretrain_minimal")
    from rs_embed_ray.testing.checkpoints import write_olmoearth_checkpoint

    return write_olmoearth_checkpoint(module_scratch("oe_s1"), variant="nano_v1_2")


def test_olmoearth_s1_in_both_layouts(tmp_path, nano_ckpt):
    from rs_embed_ray.models.olmoearth import OlmoEarth
    from rs_embed_ray.testing.ee_emulator import date_range_starts

    def run(emu, out, layout, **kw):
        return export_batch(
            spatials=PLACES,
            temporal=OE_WINDOW,
            models=["olmoearth"],
            modality="s1",
            backend="gee",
            provider_options={"url": emu.url},
            weights={"olmoearth": str(nano_ckpt)},
            model_configs={"olmoearth": OE_CFG},
            out=str(out),
            layout=layout,
            show_progress=False,
            num_workers=1,
            chunk_size=2,
            **kw,
        )

    with EEEmulator(retry_after_s=0) as emu:
        emu.size_hook = lambda e: 0 if "2022-01-31" in date_range_starts(e) else None  # bin 1 empty
        per_item = run(emu, tmp_path / "pi", "per_item")
        pixels = emu.requests_of("computePixels")
        combined = run(emu, tmp_path / "c.npz", "combined", output=OutputSpec.grid())
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == len(PLACES)  # one request per place for all bins
    text = json.dumps(pixels)
    assert '"VV' in text and '"VH' in text and '"B2' not in text  # the S1 bands, not S2's
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["weights"]["sha256"] == _sha(nano_ckpt)
    # the dB collection (the S1 path's own default; use_float_linear would pick S1_GRD_FLOAT)
    assert m["sensor"]["collection"] == "COPERNICUS/S1_GRD" and m["sensor"]["bands"] == ["VV", "VH"]
    assert m["sensor"]["use_float_linear"] is False
    with np.load(tmp_path / "pi" / "p00000.npz") as z:
        x = z["input_chw__olmoearth"]
        e = z["embedding__olmoearth"]
    assert x.shape[:2] == (3, 2) and np.isnan(x[1]).all() and not np.isnan(x[[0, 2]]).any()
    with np.load(tmp_path / "c.npz") as z:
        grids = z["embeddings__olmoearth"]
    assert grids.shape == (len(PLACES), 128, 8, 8) and np.isfinite(grids).all()
    cfg = {**OE_CFG, "modality": "s1"}
    ref = OlmoEarth(weights=str(nano_ckpt), model_config=cfg, precision="float32")
    (r,) = ref.embed_batch(
        [x], output=OutputSpec.pooled(), spatials=[PLACES[0]], temporal=OE_WINDOW, fetch_metas=[{}]
    )
    np.testing.assert_allclose(e, r.data, rtol=0, atol=1e-5)
    assert r.meta["modality"] == "s1" and r.meta["n_empty_frames_dropped"] == 1
