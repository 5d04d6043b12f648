"""Every on-the-fly model with a published-format checkpoint, and gse, exported end to end
through the real earthengine-api client against the emulator, on a real local Ray cluster,
in both layouts: an S2 set (dofa, satmae, scalemae and terrafm share one band-union fetch),
a time series (prithvi, 30 m, up to 4 frames), the precomputed gse product, and an S1 model
(terrafm on VV/VH). Checkpoints are random-valued files in the published formats (see
rs_embed_ray.testing.checkpoints); the manifests must name each file and its sha256.
(satmaepp, olmoearth and copernicus have their own end-to-end tests.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytest.importorskip("timm")
pytest.importorskip("safetensors")
pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]

T = TemporalSpec.range("2022-04-01", "2022-09-01")  # 5 months: prithvi gets 4 frames
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]
S2_SET = ["dofa", "satmae", "scalemae", "terrafm", "prithvi", "gse"]


@pytest.fixture(scope="module")
def checkpoints(module_scratch) -> dict[str, Path]:
    from rs_embed_ray.testing import checkpoints as ck

    d = module_scratch("ckpts")
    return {
        "dofa": ck.write_dofa_checkpoint(d / "dofa"),
        "satmae": ck.write_satmae_checkpoint(d / "satmae"),
        "scalemae": ck.write_scalemae_checkpoint(d / "scalemae"),
        "terrafm": ck.write_terrafm_checkpoint(d / "terrafm"),
        "prithvi": ck.write_prithvi_checkpoint(d / "prithvi"),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _export(emu: EEEmulator, out: Path, layout: str, models: list[str], weights: dict, **kw):
    return export_batch(
        spatials=PLACES,
        temporal=T,
        models=models,
        backend="gee",
        provider_options={"url": emu.url},
        weights={m: str(p) for m, p in weights.items() if m in models},
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=3,
        chunk_size=3,
        **kw,
    )


def test_s2_time_series_and_gse_models_in_both_layouts(tmp_path, checkpoints):
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", S2_SET, checkpoints)
        pixels = emu.requests_of("computePixels")
        emu.reset_stats()
        combined = _export(emu, tmp_path / "c.npz", "combined", S2_SET, checkpoints)
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    # three fetch groups (S2 10 m band union, S2 30 m series, gse): one request per place each
    assert len(pixels) == 3 * len(PLACES)
    s2 = [r for r in pixels if "B11" in r["bands"] and "B1" in r["bands"]]
    assert len(s2) == len(PLACES)  # dofa, satmae, scalemae and terrafm shared one fetch

    digests = {m: _sha256(p) for m, p in checkpoints.items()}
    for man in (per_item[0], combined):
        recorded = {m["model"]: m["weights"] for m in man["models"]}
        for m, sha in digests.items():
            assert recorded[m]["sha256"] == sha and recorded[m]["weights"] == str(
                checkpoints[m].resolve()
            )
    with np.load(tmp_path / "c.npz") as z:
        for m in S2_SET:
            emb = z[f"embeddings__{m}"]
            assert emb.shape == (len(PLACES), CATALOG[m].dim_pooled), m
            assert np.isfinite(emb).all(), m
            # the same places give the same vectors in both layouts
            for i in range(len(PLACES)):
                with np.load(tmp_path / "pi" / f"p{i:05d}.npz") as zi:
                    np.testing.assert_allclose(
                        zi[f"embedding__{m}"], emb[i], rtol=1e-5, atol=1e-5, err_msg=m
                    )
        x = z["inputs_bchw__prithvi"]
    assert x.shape[:3] == (len(PLACES), 4, 6)  # 4 frames of 6 bands at 30 m


def test_s1_model_in_both_layouts(tmp_path, checkpoints):
    from rs_embed_ray.models.terrafm import S1_SENSOR

    kw = dict(per_model_sensors={"terrafm": S1_SENSOR})
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ["terrafm"], checkpoints, **kw)
        combined = _export(emu, tmp_path / "c.npz", "combined", ["terrafm"], checkpoints, **kw)
        pixels = emu.requests_of("computePixels")
    assert all(r["status"] == "ok" for r in per_item)
    assert combined["status"] == "ok"
    assert pixels and all(sorted(r["bands"]) == ["VH", "VV"] for r in pixels)
    (m,) = per_item[0]["models"]
    assert m["sensor"]["collection"] == "COPERNICUS/S1_GRD_FLOAT"
    assert m["sensor"]["bands"] == ["VV", "VH"]
    with np.load(tmp_path / "c.npz") as z:
        emb = z["embeddings__terrafm"]
        x = z["inputs_bchw__terrafm"]
    assert emb.shape == (len(PLACES), 768) and np.isfinite(emb).all()
    assert x.shape[:2] == (len(PLACES), 2)
