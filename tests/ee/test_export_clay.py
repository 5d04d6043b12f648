"""clay end to end: export through the real earthengine-api client against the local
emulator, on a real local Ray cluster, both layouts. The checkpoint is the published
Lightning layout with the real large encoder (random values); the model runs at
image_size 32 so the CPU forward stays small. The manifest must name the file and its
sha256, and both layouts must give the same vectors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]

T = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]
CFG = {"image_size": 32}


@pytest.fixture(scope="module")
def clay_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs_embed_ray.testing.checkpoints_clay import write_clay_checkpoint

    return write_clay_checkpoint(tmp_path_factory.getbasetemp() / "clay-ckpt", reuse=True)


def test_clay_export_in_both_layouts(tmp_path, clay_ckpt):
    runs = {}
    with EEEmulator(retry_after_s=0) as emu:
        for layout, out in (("per_item", tmp_path / "pi"), ("combined", tmp_path / "c.npz")):
            runs[layout] = export_batch(
                spatials=PLACES,
                temporal=T,
                models=["clay"],
                backend="gee",
                provider_options={"url": emu.url},
                weights={"clay": str(clay_ckpt)},
                model_configs={"clay": CFG},
                out=str(out),
                layout=layout,
                show_progress=False,
                num_workers=2,
                chunk_size=3,
            )
        pixels = emu.requests_of("computePixels")
    assert all(r["status"] == "ok" for r in runs["per_item"]), runs["per_item"]
    assert runs["combined"]["status"] == "ok" and runs["combined"]["n_items"] == len(PLACES)
    assert pixels and all(r["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A",
                                         "B11", "B12"] for r in pixels)  # fmt: skip
    sha = hashlib.sha256(clay_ckpt.read_bytes()).hexdigest()
    for man in (runs["per_item"][0], runs["combined"]):
        (m,) = man["models"]
        assert m["weights"]["sha256"] == sha
        assert m["weights"]["weights"] == str(clay_ckpt.resolve())
    with np.load(tmp_path / "c.npz") as z:
        emb = z["embeddings__clay"]
        x = z["inputs_bchw__clay"]
    assert emb.shape == (len(PLACES), 1024) and np.isfinite(emb).all()
    assert x.shape[:2] == (len(PLACES), 10)
    assert np.abs(emb[0] - emb[1]).max() > 1e-4  # places differ (pixels and lat/lon)
    for i in range(len(PLACES)):
        with np.load(tmp_path / "pi" / f"p{i:05d}.npz") as zi:
            np.testing.assert_allclose(zi["embedding__clay"], emb[i], rtol=1e-5, atol=1e-5)
