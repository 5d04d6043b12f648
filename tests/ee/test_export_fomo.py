"""fomo end to end on a real local Ray cluster: through the real earthengine-api client
against the emulator in both layouts (pooled per item, grids combined), on the 12 S2 bands
in the terrafm order, with a wide BBox among the places: it is fetched as a square and its
grid and pooled vector are cut back to the ROI, as rs-embed does. The checkpoint is the
published ``fomo_single_embedding_layer_weights.pt`` format (random values, the published
architecture); manifests must name it and its sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import BBox, PointBuffer, TemporalSpec, export_batch, geo
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytestmark = pytest.mark.usefixtures("ray_cluster")

T = TemporalSpec.range("2022-06-01", "2022-09-01")
WIDE = BBox(minlon=15.02, minlat=44.98, maxlon=15.026, maxlat=44.9818)  # about 470 x 200 m
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(2)] + [WIDE]
S2_12 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_fomo import write_fomo_checkpoint

    return write_fomo_checkpoint(module_scratch("fomo"), seed=0)


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
        models=["fomo"],
        backend="gee",
        provider_options={"url": emu.url},
        weights={"fomo": str(ckpt)},
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=2,
        chunk_size=3,
        **kw,
    )


_local: dict[str, object] = {}


def _reference(ckpt: Path, x: np.ndarray, output: OutputSpec, meta: dict | None = None):
    """The model in this process (loaded once) on a saved input."""
    from rs_embed_ray.models.fomo import FoMo

    m = _local.get(str(ckpt))
    if m is None:
        m = _local[str(ckpt)] = FoMo(weights=str(ckpt), precision="float32")
    (ref,) = m.embed_batch(
        [x], output=output, spatials=[PLACES[0]], temporal=T, fetch_metas=[meta or {}]
    )
    return ref


def test_fomo_in_both_layouts(tmp_path, ckpt, sha):
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", ckpt)
        pixels = emu.requests_of("computePixels")
        combined = _export(emu, tmp_path / "g.npz", "combined", ckpt, output=OutputSpec.grid())
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == len(PLACES) and all(r["bands"] == S2_12 for r in pixels)
    for man in (per_item[0], combined):
        (m,) = man["models"]
        assert m["weights"]["weights"] == str(ckpt.resolve()) and m["weights"]["sha256"] == sha
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["embedding"]["shape"] == [768] and m["input"]["shape"] == [12, 32, 32]
    with np.load(tmp_path / "pi" / "p00000.npz") as z:
        x = z["input_chw__fomo"]
        e = z["embedding__fomo"]
    ref = _reference(ckpt, x, OutputSpec.pooled())
    assert ref.meta["pooling"] == "token_mean"
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-5)

    # the wide box: a square fetch, then the output cut back to the box
    _, win = geo.fetch_square(WIDE)
    with np.load(tmp_path / "pi" / "p00002.npz") as z:
        xw = z["input_chw__fomo"]
        ew = z["embedding__fomo"]
    assert abs(xw.shape[-1] - xw.shape[-2]) <= 1  # a square of ground (pixels may round)
    ref_w = _reference(ckpt, xw, OutputSpec.pooled(), {"roi_window_geo": list(win)})
    assert ref_w.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(ew, ref_w.data, rtol=0, atol=1e-5)
    full_w = _reference(ckpt, xw, OutputSpec.pooled())
    assert np.abs(full_w.data - ew).max() > 1e-4  # the crop changed the vector

    # the box's grid is cut to 2 of the 4 token rows, so the rows are stored per place
    with np.load(tmp_path / "g.npz") as z:
        assert "embeddings__fomo" not in z.files
        g0, g2 = z["embedding__fomo__00000"], z["embedding__fomo__00002"]
        x0 = z["input_chw__fomo__00000"]
    assert g0.shape == (768, 4, 4) and g2.shape == (768, 2, 4) and np.isfinite(g2).all()
    np.testing.assert_allclose(x0, x, rtol=0, atol=0)  # the same pixels in both layouts
    ref_g = _reference(ckpt, x0, OutputSpec.grid())
    np.testing.assert_allclose(g0, ref_g.data, rtol=0, atol=1e-5)
    ref_g2 = _reference(ckpt, xw, OutputSpec.grid(), {"roi_window_geo": list(win)})
    np.testing.assert_allclose(g2, ref_g2.data, rtol=0, atol=1e-5)
