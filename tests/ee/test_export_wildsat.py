"""wildsat end to end on a real local Ray cluster: through the real earthengine-api client
against the emulator in both layouts (pooled image-head vectors per item, ViT patch-token
grids combined). The checkpoint is the published ``vitb16-imagenet-bnfc.pth`` format (random
values); manifests must name it and its sha256, and the exported vectors must equal the model
run in this process on the saved inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytest.importorskip("torchvision")
pytestmark = pytest.mark.usefixtures("ray_cluster")

T = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_wildsat import write_wildsat_checkpoint

    return write_wildsat_checkpoint(module_scratch("wildsat"), seed=0)


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
        models=["wildsat"],
        backend="gee",
        provider_options={"url": emu.url},
        weights={"wildsat": str(ckpt)},
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=1,
        chunk_size=3,
        **kw,
    )


def test_wildsat_in_both_layouts(tmp_path, ckpt, sha):
    from rs_embed_ray.models.wildsat import WildSAT

    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ckpt)
        pixels = emu.requests_of("computePixels")
        combined = _export(emu, tmp_path / "g.npz", "combined", ckpt, output=OutputSpec.grid())
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == len(PLACES)
    assert all(r["bands"] == ["B4", "B3", "B2"] for r in pixels)
    for man in (per_item[0], combined):
        (m,) = man["models"]
        assert m["weights"]["weights"] == str(ckpt.resolve()) and m["weights"]["sha256"] == sha
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["embedding"]["shape"] == [256] and m["input"]["shape"][0] == 3
    with np.load(tmp_path / "pi" / "p00000.npz") as z:
        x = z["input_chw__wildsat"]
        e = z["embedding__wildsat"]
    with np.load(tmp_path / "g.npz") as z:
        grids = z["embeddings__wildsat"]
        x0 = z["inputs_bchw__wildsat"][0]
    assert grids.shape == (len(PLACES), 768, 14, 14) and np.isfinite(grids).all()
    np.testing.assert_allclose(x0, x, rtol=0, atol=0)  # the same pixels in both layouts
    local = WildSAT(weights=str(ckpt), precision="float32")
    kw = dict(spatials=[PLACES[0]], temporal=T, fetch_metas=[{}])
    (ref,) = local.embed_batch([x], output=OutputSpec.pooled(), **kw)
    (ref_g,) = local.embed_batch([x0], output=OutputSpec.grid(), **kw)
    assert ref.meta["feature_source"] == "image_head"
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grids[0], ref_g.data, rtol=0, atol=1e-5)
