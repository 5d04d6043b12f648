"""galileo end to end on a real local Ray cluster: through the real earthengine-api client
against the emulator in both layouts (explicit 30-day bins, one computePixels per place, an
empty bin as an all-NaN frame that the model masks), per-place windows of different lengths,
and the same series from the local raster backend. The checkpoint is the published
``models/nano`` folder (random values); manifests must name ``encoder.pt`` and its sha256."""

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

WINDOW = TemporalSpec.range("2022-01-01", "2022-03-15")  # bins Jan 1, Jan 31, Mar 2
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(3)]
CFG = {"image_size": 32}  # 4 x 4 patches keeps the forward cheap; the architecture is as published


@pytest.fixture(scope="module")
def nano(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_galileo import write_galileo_checkpoint

    return write_galileo_checkpoint(module_scratch("galileo"), seed=0)


def _reference(nano: Path, x: np.ndarray, temporal: TemporalSpec, *, output: OutputSpec):
    """The model in this process on a saved input (months from the window's bins)."""
    from rs_embed_ray.models.galileo import Galileo

    m = Galileo(weights=str(nano), model_config=CFG, precision="float32")
    (ref,) = m.embed_batch(
        [x], output=output, spatials=[PLACES[0]], temporal=temporal, fetch_metas=[{}]
    )
    return ref


def test_galileo_per_item_export_with_an_empty_bin(tmp_path, nano):
    out = tmp_path / "pi"
    with EEEmulator(retry_after_s=0) as emu:
        emu.size_hook = lambda e: 0 if "2022-01-31" in date_range_starts(e) else None  # bin 1 empty
        res = export_batch(
            spatials=PLACES,
            temporal=WINDOW,
            models=["galileo"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"galileo": str(nano.parent)},
            model_configs={"galileo": CFG},
            out=str(out),
            layout="per_item",
            show_progress=False,
            num_workers=2,
            chunk_size=2,
        )
        pixel = emu.requests_of("computePixels")
    assert len(pixel) == len(PLACES)  # one request per place for all bins
    assert all(r["status"] == "ok" for r in res)
    sha = hashlib.sha256(nano.read_bytes()).hexdigest()
    man = json.loads((out / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["weights"]["weights"] == str(nano.resolve()) and m["weights"]["sha256"] == sha
    assert m["weights"]["config"] == str((nano.parent / "config.json").resolve())
    assert m["embedding"]["shape"] == [128] and m["input"]["shape"] == [3, 10, 32, 32]
    text = json.dumps(man)
    assert '"n_frames_masked": 1' in text and '"month_indices": [0, 1, 2]' in text
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__galileo"]
        e = z["embedding__galileo"]
    assert np.isnan(x[1]).all() and not np.isnan(x[[0, 2]]).any()
    ref = _reference(nano, x, WINDOW, output=OutputSpec.pooled())
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-5)
    assert ref.meta["n_frames_masked"] == 1


def test_galileo_combined_grid_with_per_place_windows(tmp_path, nano):
    """Windows of 2 and 3 bins give inputs of different T; the grids stack, the inputs are
    kept one key per place, and the manifest records the weights."""
    out = tmp_path / "g.npz"
    windows = [TemporalSpec.range("2022-01-01", "2022-03-02"), WINDOW, WINDOW]
    with EEEmulator(retry_after_s=0) as emu:
        res = export_batch(
            spatials=PLACES,
            temporal=None,
            temporals=windows,
            models=["galileo"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"galileo": str(nano.parent)},
            model_configs={"galileo": CFG},
            output=OutputSpec.grid(),
            out=str(out),
            layout="combined",
            show_progress=False,
            num_workers=2,
            chunk_size=3,
        )
    assert res["status"] == "ok" and res["n_items"] == len(PLACES)
    assert res["models"][0]["weights"]["sha256"] == hashlib.sha256(nano.read_bytes()).hexdigest()
    with np.load(out) as z:
        emb = z["embeddings__galileo"]
        assert "inputs_bchw__galileo" not in z.files
        xs = [z[f"input_chw__galileo__{i:05d}"] for i in range(3)]
    assert [x.shape for x in xs] == [(2, 10, 32, 32), (3, 10, 32, 32), (3, 10, 32, 32)]
    assert emb.shape == (3, 128, 4, 4) and np.isfinite(emb).all()
    ref = _reference(nano, xs[0], windows[0], output=OutputSpec.grid())
    assert ref.meta["month_indices"] == [0, 1]
    np.testing.assert_allclose(emb[0], ref.data, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def s2_source(module_scratch) -> Path:
    """Local rasters of the 10 Galileo bands on two dates."""
    from rs_embed_ray.models.galileo import S2_BANDS
    from tests.conftest import write_scene

    folder = module_scratch("s2_10")
    write_scene(folder, "2022-07-05", bands=S2_BANDS)
    write_scene(folder, "2022-08-03", bands=S2_BANDS, offset=200.0)
    return folder


def test_galileo_from_the_local_backend(tmp_path, s2_source, nano):
    """The same explicit bins from local rasters: bins Jun 1, Jul 1 and Jul 31; June has no
    scene (masked); months from the provider's frames (mid Jun, Jul, Aug)."""
    from tests.conftest import points

    out = tmp_path / "l"
    window = TemporalSpec.range("2022-06-01", "2022-08-15")
    res = export_batch(
        spatials=points(2),
        temporal=window,
        models=["galileo"],
        backend="local",
        source=str(s2_source),
        weights={"galileo": str(nano.parent)},
        model_configs={"galileo": CFG},
        out=str(out),
        layout="per_item",
        show_progress=False,
        num_workers=2,
        chunk_size=2,
    )
    assert all(r["status"] == "ok" for r in res)
    man = json.loads((out / "p00000.json").read_text())
    text = json.dumps(man)
    assert '"months_source": "fetch_meta_frames"' in text
    assert '"month_indices": [5, 6, 7]' in text and '"n_frames_masked": 1' in text
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__galileo"]
        e = z["embedding__galileo"]
    assert x.shape[:2] == (3, 10) and np.isnan(x[0]).all() and not np.isnan(x[1:]).any()
    assert np.isfinite(e).all()
