"""terramind end to end: export through the real earthengine-api client against the local
emulator, on a real local Ray cluster, in both layouts (pooled and grid). The checkpoint is a
random-valued file in the published layout; the manifest must name it and its sha256, and
both layouts must give the same vectors for the same places."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytest.importorskip("torch")
pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]

T = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_terramind import write_terramind_checkpoint

    return write_terramind_checkpoint(module_scratch("terramind"))


def _export(emu: EEEmulator, out: Path, layout: str, ckpt: Path, output: OutputSpec):
    return export_batch(
        spatials=PLACES,
        temporal=T,
        models=["terramind"],
        backend="gee",
        provider_options={"url": emu.url},
        weights={"terramind": str(ckpt)},
        output=output,
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=2,
        chunk_size=3,
    )


@pytest.mark.parametrize("output", [OutputSpec.pooled(), OutputSpec.grid()], ids=["pooled", "grid"])
def test_terramind_export_both_layouts(tmp_path, ckpt, output):
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ckpt, output)
        combined = _export(emu, tmp_path / "c.npz", "combined", ckpt, output)
        pixels = emu.requests_of("computePixels")
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == 2 * len(PLACES)
    assert all(len(r["bands"]) == 12 and "B10" not in r["bands"] for r in pixels)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    for man in (per_item[0], combined):
        (m,) = man["models"]
        assert m["weights"]["sha256"] == sha and m["weights"]["weights"] == str(ckpt.resolve())
    with np.load(tmp_path / "c.npz") as z:
        emb = z["embeddings__terramind"]
    assert emb.shape[:2] == (len(PLACES), 384) and np.isfinite(emb).all()
    if output.mode == "grid":
        assert emb.ndim == 4 and emb.shape[2] >= 1 and emb.shape[3] >= 1
    assert np.abs(emb[0] - emb[1]).max() > 0  # different places, different pixels
    for i in range(len(PLACES)):
        with np.load(tmp_path / "pi" / f"p{i:05d}.npz") as zi:
            np.testing.assert_allclose(zi["embedding__terramind"], emb[i], rtol=1e-5, atol=1e-5)
