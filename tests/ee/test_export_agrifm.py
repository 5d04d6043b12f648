"""agrifm end to end on a real local Ray cluster: through the real earthengine-api client
against the emulator in both layouts (8 equal bins stacked in one computePixels per place, an
empty bin back-filled with the window composite), and the same series from the local raster
backend. The checkpoint is the published ``AgriFM.pth`` layout (random values, the full
architecture); manifests must name it and its sha256. ``image_size=32`` keeps the forward
cheap (the architecture takes any size)."""

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
CFG = {"image_size": 32}


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_agrifm import write_agrifm_checkpoint

    return write_agrifm_checkpoint(module_scratch("agrifm") / "AgriFM.pth", seed=1)


@pytest.fixture(scope="module")
def local_model(ckpt: Path):
    """The model in this process, for reference forwards on the saved inputs."""
    import torch

    from rs_embed_ray.models.agrifm import AgriFM

    torch.set_num_threads(1)
    return AgriFM(weights=str(ckpt), model_config=CFG, precision="float32")


def _reference(model, x: np.ndarray, output: OutputSpec):
    (ref,) = model.embed_batch(
        [x], output=output, spatials=[PLACES[0]], temporal=WINDOW, fetch_metas=[{}]
    )
    return ref


def test_agrifm_per_item_export_with_a_backfilled_bin(tmp_path, ckpt, local_model):
    out = tmp_path / "pi"
    with EEEmulator(retry_after_s=0) as emu:
        emu.size_hook = lambda e: 0 if "2022-01-31" in date_range_starts(e) else None
        res = export_batch(
            spatials=PLACES,
            temporal=WINDOW,
            models=["agrifm"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"agrifm": str(ckpt)},
            model_configs={"agrifm": CFG},
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
    assert m["embedding"]["shape"] == [1024] and m["input"]["shape"] == [8, 10, 32, 32]
    text = json.dumps(man)
    assert '"n_backfilled_frames": 1' in text and '"recipe": "upstream"' in text
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__agrifm"]
        e = z["embedding__agrifm"]
    assert not np.isnan(x).any()
    ref = _reference(local_model, x, OutputSpec.pooled())
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-4)


def test_agrifm_combined_grid(tmp_path, ckpt, local_model):
    """The grids of both places stack (1024 x 2 x 2 at 32 px) and equal the in-process
    forward on the saved inputs."""
    out = tmp_path / "g.npz"
    with EEEmulator(retry_after_s=0) as emu:
        res = export_batch(
            spatials=PLACES,
            temporal=WINDOW,
            models=["agrifm"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"agrifm": str(ckpt)},
            model_configs={"agrifm": CFG},
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
        emb = z["embeddings__agrifm"]
        x = z["inputs_bchw__agrifm"]
    assert x.shape == (2, 8, 10, 32, 32)
    assert emb.shape == (2, 1024, 2, 2) and np.isfinite(emb).all()
    for i in range(2):
        ref = _reference(local_model, x[i], OutputSpec.grid())
        np.testing.assert_allclose(emb[i], ref.data, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def s2_source(module_scratch) -> Path:
    """Local rasters of the 10 S2 bands on two dates."""
    from rs_embed_ray.models.agrifm import S2_BANDS
    from tests.conftest import write_scene

    folder = module_scratch("s2_10")
    write_scene(folder, "2022-07-05", bands=S2_BANDS)
    write_scene(folder, "2022-08-03", bands=S2_BANDS, offset=200.0)
    return folder


def test_agrifm_from_the_local_backend(tmp_path, s2_source, ckpt):
    """The same equal-bin series from local rasters: 8 bins of Jun 1 - Sep 1, the empty
    ones back-filled."""
    from tests.conftest import points

    out = tmp_path / "l"
    res = export_batch(
        spatials=points(1),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["agrifm"],
        backend="local",
        source=str(s2_source),
        weights={"agrifm": str(ckpt)},
        model_configs={"agrifm": {**CFG, "recipe": "rs_embed"}},
        out=str(out),
        layout="per_item",
        show_progress=False,
        num_workers=1,
        chunk_size=1,
    )
    assert all(r["status"] == "ok" for r in res)
    man = json.loads((out / "p00000.json").read_text())
    text = json.dumps(man)
    assert '"recipe": "rs_embed"' in text and '"n_frames": 8' in text
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__agrifm"]
        e = z["embedding__agrifm"]
    assert x.shape[:2] == (8, 10) and not np.isnan(x).any()
    assert e.shape == (1024,) and np.isfinite(e).all()
