"""anysat end to end on a real local Ray cluster: through the real earthengine-api client
against the emulator in both layouts (8 equal bins stacked in one computePixels per place, an
empty bin back-filled with the window composite), per-place windows, and the same series from
the local raster backend. The checkpoint is the published ``AnySat.pth`` layout (random
values, the full base architecture); manifests must name it and its sha256. ``image_size=12``
keeps the forward cheap (the architecture takes any size)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator, date_range_starts

pytestmark = pytest.mark.usefixtures("ray_cluster")

# 243 days in 8 equal bins: starts Jan 1, Jan 31, Mar 2, Apr 2, May 2, Jun 1, Jul 2, Aug 1
WINDOW = TemporalSpec.range("2022-01-01", "2022-09-01")
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(2)]
CFG = {"image_size": 12}


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_anysat import write_anysat_checkpoint

    return write_anysat_checkpoint(module_scratch("anysat") / "AnySat.pth", seed=1)


@pytest.fixture(scope="module")
def local_model(ckpt: Path):
    """The model in this process, for reference forwards on the saved inputs."""
    import torch

    from rs_embed_ray.models.anysat import AnySat

    torch.set_num_threads(1)
    return AnySat(weights=str(ckpt), model_config=CFG, precision="float32")


def _reference(model, x: np.ndarray, temporal: TemporalSpec, output: OutputSpec):
    (ref,) = model.embed_batch(
        [x], output=output, spatials=[PLACES[0]], temporal=temporal, fetch_metas=[{}]
    )
    return ref


def test_anysat_per_item_export_with_a_backfilled_bin(tmp_path, ckpt, local_model):
    out = tmp_path / "pi"
    with EEEmulator(retry_after_s=0) as emu:
        emu.size_hook = lambda e: 0 if "2022-01-31" in date_range_starts(e) else None
        res = export_batch(
            spatials=PLACES,
            temporal=WINDOW,
            models=["anysat"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"anysat": str(ckpt)},
            model_configs={"anysat": CFG},
            out=str(out),
            layout="per_item",
            show_progress=False,
            num_workers=1,
            chunk_size=2,
        )
        pixel = emu.requests_of("computePixels")
    assert len(pixel) == len(PLACES)  # the 8 frames of a place in one request
    assert all(r["status"] == "ok" for r in res)
    man = json.loads((out / "p00000.json").read_text())
    (m,) = man["models"]
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert m["weights"]["weights"] == str(ckpt.resolve()) and m["weights"]["sha256"] == sha
    assert m["embedding"]["shape"] == [768] and m["input"]["shape"] == [8, 10, 32, 32]
    text = json.dumps(man)
    assert '"n_backfilled_frames": 1' in text
    assert '"doy0_values": [15, 45, 75, 106, 136, 166, 197, 227]' in text
    assert '"dates_source": "fetch_meta_frames"' in text
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__anysat"]
        e = z["embedding__anysat"]
    ref = _reference(local_model, x, WINDOW, OutputSpec.pooled())
    assert ref.meta["doy0_values"] == [15, 45, 75, 106, 136, 166, 197, 227]
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-4)


def test_anysat_combined_grid_with_per_place_windows(tmp_path, ckpt, local_model):
    """Two windows give each place its own bins and dates; the dense grids stack."""
    out = tmp_path / "g.npz"
    windows = [TemporalSpec.range("2022-03-01", "2022-05-01"), WINDOW]
    with EEEmulator(retry_after_s=0) as emu:
        res = export_batch(
            spatials=PLACES,
            temporal=None,
            temporals=windows,
            models=["anysat"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"anysat": str(ckpt)},
            model_configs={"anysat": CFG},
            output=OutputSpec.grid(),
            out=str(out),
            layout="combined",
            show_progress=False,
            num_workers=1,
            chunk_size=2,
        )
    assert res["status"] == "ok" and res["n_items"] == len(PLACES)
    assert res["models"][0]["weights"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with np.load(out) as z:
        emb = z["embeddings__anysat"]
        x = z["inputs_bchw__anysat"]
    assert x.shape == (2, 8, 10, 32, 32)
    assert emb.shape == (2, 1536, 12, 12) and np.isfinite(emb).all()
    ref = _reference(local_model, x[0], windows[0], OutputSpec.grid())
    assert ref.meta["doy0_values"] == [62, 70, 77, 85, 93, 100, 108, 116]
    np.testing.assert_allclose(emb[0], ref.data, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def s2_source(module_scratch) -> Path:
    """Local rasters of the 10 S2 bands on two dates."""
    from rs_embed_ray.models.anysat import S2_BANDS
    from tests.conftest import write_scene

    folder = module_scratch("s2_10")
    write_scene(folder, "2022-07-05", bands=S2_BANDS)
    write_scene(folder, "2022-08-03", bands=S2_BANDS, offset=200.0)
    return folder


def test_anysat_from_the_local_backend(tmp_path, s2_source, ckpt):
    """The same equal-bin series from local rasters: 8 bins of Jun 1 - Sep 1, the empty
    ones back-filled; dates from the provider's frames."""
    from tests.conftest import points

    out = tmp_path / "l"
    res = export_batch(
        spatials=points(1),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["anysat"],
        backend="local",
        source=str(s2_source),
        weights={"anysat": str(ckpt)},
        model_configs={"anysat": {**CFG, "pooled_source": "tile"}},
        out=str(out),
        layout="per_item",
        show_progress=False,
        num_workers=1,
        chunk_size=1,
    )
    assert all(r["status"] == "ok" for r in res)
    man = json.loads((out / "p00000.json").read_text())
    text = json.dumps(man)
    assert '"dates_source": "fetch_meta_frames"' in text and '"pooling": "tile_native"' in text
    assert '"doy0_values": [156, 168, 179, 191, 202, 214, 225, 237]' in text
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__anysat"]
        e = z["embedding__anysat"]
    assert x.shape[:2] == (8, 10) and not np.isnan(x).any()
    assert e.shape == (768,) and np.isfinite(e).all()
