"""olmoearth end to end: export through the real earthengine-api client against the local
emulator, on a real local Ray cluster, both layouts. The fetch asks for explicit 30-day bins
(one computePixels per place), an empty bin travels as an all-NaN frame into the saved
inputs, the model drops it, and the manifest records the weights file, its sha256 and the
config.json. The model is the published Nano v1.2 layout (random values) at image_size 32."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.testing.ee_emulator import EEEmulator, date_range_starts

pytest.importorskip("olmoearth_pretrain_minimal")
pytestmark = pytest.mark.usefixtures("ray_cluster")

WINDOW = TemporalSpec.range("2022-01-01", "2022-03-15")  # bins Jan 1, Jan 31, Mar 2
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]
CFG = {"variant": "nano_v1_2", "image_size": 32}


@pytest.fixture(scope="module")
def nano_ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints import write_olmoearth_checkpoint

    return write_olmoearth_checkpoint(module_scratch("oe"), variant="nano_v1_2")


@pytest.mark.parametrize("layout", ["per_item", "combined"])
def test_olmoearth_export_with_an_empty_bin(tmp_path, nano_ckpt, layout):
    out = tmp_path / ("pi" if layout == "per_item" else "c.npz")
    with EEEmulator(retry_after_s=0) as emu:
        emu.size_hook = lambda e: 0 if "2022-01-31" in date_range_starts(e) else None  # bin 1 empty
        res = export_batch(
            spatials=PLACES,
            temporal=WINDOW,
            models=["olmoearth"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"olmoearth": str(nano_ckpt)},
            model_configs={"olmoearth": CFG},
            out=str(out),
            layout=layout,
            show_progress=False,
            num_workers=2,
            chunk_size=2,
        )
        pixel = emu.requests_of("computePixels")
        values = emu.requests_of("value")
    assert len(pixel) == len(PLACES) and values == []  # one request per place, no sizes
    # bins 0 and 2 carry per-pixel counts; the empty bin 1 is the If's constant-0 branch
    assert all(sorted(r["count_bands"]) == ["__n_images__t0", "__n_images__t2"] for r in pixel)
    sha = hashlib.sha256(nano_ckpt.read_bytes()).hexdigest()
    if layout == "per_item":
        assert all(r["status"] == "ok" for r in res)
        man = json.loads((out / "p00000.json").read_text())
        (m,) = man["models"]
        assert m["weights"]["weights"] == str(nano_ckpt.resolve())
        assert m["weights"]["sha256"] == sha
        assert m["weights"]["config"] == str((nano_ckpt.parent / "config.json").resolve())
        assert m["embedding"]["shape"] == [128] and m["input"]["shape"] == [3, 12, 32, 32]
        text = json.dumps(man)
        assert (
            '"n_empty_frames_dropped": 1' in text
            and '"timestamps": [[1, 0, 2022], [2, 2, 2022]]' in text
        )
        with np.load(out / "p00000.npz") as z:
            x = z["input_chw__olmoearth"]
            e = z["embedding__olmoearth"]
        assert np.isnan(x[1]).all() and not np.isnan(x[[0, 2]]).any()
        assert e.shape == (128,) and np.isfinite(e).all()
    else:
        assert res["status"] == "ok" and res["n_items"] == len(PLACES)
        assert res["models"][0]["weights"]["sha256"] == sha
        with np.load(out) as z:
            emb = z["embeddings__olmoearth"]
            xs = z["inputs_bchw__olmoearth"]
        assert emb.shape == (3, 128) and np.isfinite(emb).all()
        assert xs.shape == (3, 3, 12, 32, 32) and np.isnan(xs[:, 1]).all()
        # the pipeline's embedding is the model's on the saved input (frames from the window)
        from rs_embed_ray.models.olmoearth import OlmoEarth
        from rs_embed_ray.specs import OutputSpec

        m = OlmoEarth(weights=str(nano_ckpt), model_config=CFG, precision="float32")
        (ref,) = m.embed_batch(
            [xs[0]], output=OutputSpec.pooled(), spatials=[PLACES[0]], temporal=WINDOW,
            fetch_metas=[{}],
        )  # fmt: skip
        np.testing.assert_allclose(emb[0], ref.data, rtol=0, atol=1e-5)
        assert ref.meta["n_empty_frames_dropped"] == 1


def test_olmoearth_combined_with_per_place_windows_of_different_lengths(tmp_path, nano_ckpt):
    """Places whose windows hold 2 and 3 bins give inputs of different T; the combined file
    still holds every place's embedding and input."""
    out = tmp_path / "c.npz"
    windows = [
        TemporalSpec.range("2022-01-01", "2022-03-02"),  # 2 bins
        WINDOW,  # 3 bins
        WINDOW,
    ]
    with EEEmulator(retry_after_s=0) as emu:
        res = export_batch(
            spatials=PLACES,
            temporal=None,
            temporals=windows,
            models=["olmoearth"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"olmoearth": str(nano_ckpt)},
            model_configs={"olmoearth": CFG},
            out=str(out),
            layout="combined",
            show_progress=False,
            num_workers=2,
            chunk_size=3,
        )
    assert res["status"] == "ok" and res["n_items"] == len(PLACES)
    with np.load(out) as z:
        emb = z["embeddings__olmoearth"]
        # inputs that cannot stack are kept one key per place (the contract's fallback)
        assert "inputs_bchw__olmoearth" not in z.files
        shapes = [z[f"input_chw__olmoearth__{i:05d}"].shape for i in range(3)]
    assert shapes == [(2, 12, 32, 32), (3, 12, 32, 32), (3, 12, 32, 32)]
    assert emb.shape == (3, 128) and np.isfinite(emb).all()
