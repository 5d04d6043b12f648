"""thor end to end on a real local Ray cluster: through the real earthengine-api client
against the emulator in both layouts, on S2 (10 bands, pooled per item and grids combined)
and on the S1 branch (VV/VH from COPERNICUS/S1_GRD_FLOAT). The checkpoint is the published
``thor_v1_vit_base.pt`` format (random values); manifests must name it and its sha256.
``resize_mode=native_snap`` keeps the 32 px patches native (4 x 4 tokens at 10 m, 2 x 2 at
20 m) so the forward stays cheap; the architecture is as published."""

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
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]
CFG = {"resize_mode": "native_snap"}


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_thor import write_thor_checkpoint

    return write_thor_checkpoint(module_scratch("thor"), seed=0)


@pytest.fixture(scope="module")
def sha(ckpt: Path) -> str:
    h = hashlib.sha256()
    with open(ckpt, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _export(emu: EEEmulator, out: Path, layout: str, ckpt: Path, **kw):
    return export_batch(
        spatials=PLACES,
        temporal=T,
        models=["thor"],
        backend="gee",
        provider_options={"url": emu.url},
        weights={"thor": str(ckpt)},
        model_configs={"thor": CFG},
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=2,
        chunk_size=3,
        **kw,
    )


_local: dict[str, object] = {}


def _reference(ckpt: Path, x: np.ndarray, output: OutputSpec):
    """The model in this process (loaded once) on a saved input."""
    from rs_embed_ray.models.thor import Thor

    m = _local.get(str(ckpt))
    if m is None:
        m = _local[str(ckpt)] = Thor(weights=str(ckpt), model_config=CFG, precision="float32")
    (ref,) = m.embed_batch([x], output=output, spatials=[PLACES[0]], temporal=T, fetch_metas=[{}])
    return ref


def test_thor_s2_in_both_layouts(tmp_path, ckpt, sha):
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ckpt)
        pixels = emu.requests_of("computePixels")
        combined = _export(emu, tmp_path / "g.npz", "combined", ckpt, output=OutputSpec.grid())
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == len(PLACES)
    assert all(r["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
               for r in pixels)  # fmt: skip
    for man in (per_item[0], combined):
        (m,) = man["models"]
        assert m["weights"]["weights"] == str(ckpt.resolve()) and m["weights"]["sha256"] == sha
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["embedding"]["shape"] == [768] and m["input"]["shape"] == [10, 32, 32]
    with np.load(tmp_path / "pi" / "p00000.npz") as z:
        x = z["input_chw__thor"]
        e = z["embedding__thor"]
    ref = _reference(ckpt, x, OutputSpec.pooled())
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-5)
    assert ref.meta["preprocess_strategy"] == "native_snap" and ref.meta["image_size"] == 32
    with np.load(tmp_path / "g.npz") as z:
        grids = z["embeddings__thor"]
        x0 = z["inputs_bchw__thor"][0]
    assert grids.shape == (len(PLACES), 768, 4, 4) and np.isfinite(grids).all()
    np.testing.assert_allclose(x0, x, rtol=0, atol=0)  # the same pixels in both layouts
    ref_g = _reference(ckpt, x0, OutputSpec.grid())
    np.testing.assert_allclose(grids[0], ref_g.data, rtol=0, atol=1e-5)


def test_thor_s1_branch_in_both_layouts(tmp_path, ckpt, sha):
    from rs_embed_ray.models.thor import S1_SENSOR

    kw = dict(per_model_sensors={"thor": S1_SENSOR})
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ckpt, **kw)
        combined = _export(emu, tmp_path / "c.npz", "combined", ckpt, **kw)
        pixels = emu.requests_of("computePixels")
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok"
    assert pixels and all(sorted(r["bands"]) == ["VH", "VV"] for r in pixels)
    (m,) = per_item[0]["models"]
    assert m["sensor"]["collection"] == "COPERNICUS/S1_GRD_FLOAT"
    assert m["weights"]["sha256"] == sha
    with np.load(tmp_path / "c.npz") as z:
        emb = z["embeddings__thor"]
        x = z["inputs_bchw__thor"]
    assert emb.shape == (len(PLACES), 768) and np.isfinite(emb).all()
    assert x.shape[:2] == (len(PLACES), 2)
    ref = _reference(ckpt, x[1], OutputSpec.pooled())
    assert ref.meta["modality"] == "s1"
    np.testing.assert_allclose(emb[1], ref.data, rtol=0, atol=1e-5)
