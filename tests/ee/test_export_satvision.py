"""satvision end to end on a real local Ray cluster: the two-collection MODIS proxy (MOD09GA
reflectance + MOD21A1D LST_1KM) through the real earthengine-api client against the emulator
in both layouts (one computePixels per place whose expression composites both collections),
and the same bands from the local raster backend (a scene whose LST file sits beside its
reflectance files).

The checkpoint is the published format (``mp_rank_00_model_states.pt``, ``{"module": ...}``)
of the TEST-ONLY reduced variant ``test_tiny`` (``model_config={"variant": "test_tiny"}``): the
giant has 2.6e9 parameters (10 GB in float32), too big for tests; the reduced variant runs the
same code (oracle: tests/oracle/test_oracle_satvision.py). Manifests must name the file and
its sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.models.satvision import PROXY_BANDS
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator, decode_position

pytestmark = pytest.mark.usefixtures("ray_cluster")

DAY = TemporalSpec.range("2022-06-01", "2022-06-02")
PLACES = [PointBuffer(15.0 + 0.2 * i, 45.0 - 0.1 * i, 12000.0) for i in range(3)]  # 24 px
CFG = {"variant": "test_tiny"}


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_satvision import write_satvision_checkpoint

    return write_satvision_checkpoint(module_scratch("satvision"), seed=0, mim=True)


def _reference(ckpt: Path, x: np.ndarray, output: OutputSpec, meta: dict | None = None):
    """The model in this process on a saved input."""
    from rs_embed_ray.models.satvision import SatVision

    m = SatVision(weights=str(ckpt), model_config=CFG, precision="float32")
    (ref,) = m.embed_batch(
        [x], output=output, spatials=[PLACES[0]], temporal=DAY, fetch_metas=[meta or {}]
    )
    return ref


def test_satvision_per_item_export_from_two_collections(tmp_path, ckpt):
    out = tmp_path / "pi"
    with EEEmulator(retry_after_s=0) as emu:
        emu.record_bodies = True
        res = export_batch(
            spatials=PLACES,
            temporal=DAY,
            models=["satvision"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"satvision": str(ckpt)},
            model_configs={"satvision": CFG},
            out=str(out),
            layout="per_item",
            show_progress=False,
            num_workers=2,
            chunk_size=2,
        )
        pixel = emu.requests_of("computePixels")
    assert all(r["status"] == "ok" for r in res)
    assert len(pixel) == len(PLACES)  # both collections in one request per place
    body = pixel[0]["body"]
    assert "MODIS/061/MOD09GA" in body and "MODIS/061/MOD21A1D" in body
    assert pixel[0]["bands"][: len(PROXY_BANDS)] == list(PROXY_BANDS)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    man = json.loads((out / "p00000.json").read_text())
    (m,) = man["models"]
    assert m["weights"]["weights"] == str(ckpt.resolve()) and m["weights"]["sha256"] == sha
    assert m["embedding"]["shape"] == [128] and m["input"]["shape"] == [7, 24, 24]
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__satvision"]
        e = z["embedding__satvision"]
    # band 7 holds the emulator's LST_1KM pixels (its value encodes the band it came from)
    rows, cols = decode_position(x[6], "LST_1KM")
    assert np.all(np.diff(cols, axis=1) == 1) and np.all(np.diff(rows, axis=0) == 1)
    ref = _reference(ckpt, x, OutputSpec.pooled())
    assert ref.meta["input_kind"] == "modis_proxy_7"
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-5)


def test_satvision_combined_grid_with_roi_crop(tmp_path, ckpt):
    """A rectangle is fetched as its square and the 4 x 4 grid cropped back to it."""
    from rs_embed_ray.specs import BBox

    out = tmp_path / "g.npz"
    rect = BBox(minlon=15.0, minlat=45.0, maxlon=15.4, maxlat=45.1)
    with EEEmulator(retry_after_s=0) as emu:
        res = export_batch(
            spatials=[rect, rect],
            temporal=DAY,
            models=["satvision"],
            backend="gee",
            provider_options={"url": emu.url},
            weights={"satvision": str(ckpt)},
            model_configs={"satvision": CFG},
            output=OutputSpec.grid(),
            out=str(out),
            layout="combined",
            show_progress=False,
            num_workers=2,
            chunk_size=2,
        )
    assert res["status"] == "ok" and res["n_items"] == 2
    assert res["models"][0]["weights"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with np.load(out) as z:
        emb = z["embeddings__satvision"]
        x = z["inputs_bchw__satvision"][0]
    assert emb.shape[:2] == (2, 128) and emb.shape[2] < emb.shape[3] == 4
    assert np.isfinite(emb).all()
    h, w = x.shape[-2:]
    assert x.shape[0] == 7 and abs(h - w) <= 1  # the square on the 1 km lattice
    from rs_embed_ray.geo import fetch_square

    _, win = fetch_square(rect)
    ref = _reference(ckpt, x, OutputSpec.grid(), {"roi_window_geo": list(win)})
    assert ref.meta["roi_cropped"] is True
    np.testing.assert_allclose(emb[0], ref.data, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def modis_source(module_scratch) -> Path:
    """Local rasters of one day, as two products: six MOD09GA reflectance files and a
    MOD21A1D LST file, named into one scene by a ``source.json``."""
    from tests.conftest import write_scene

    folder = module_scratch("modis")
    short = ("b01", "b02", "b03", "b04", "b06", "b07")
    write_scene(folder, "2022-06-01", bands=short)
    write_scene(folder, "2022-06-01", bands=("lst",), offset=14000.0)
    bands = {b: f"2022-06-01_{s}.tif" for b, s in zip(PROXY_BANDS[:6], short, strict=True)}
    bands["LST_1KM"] = "2022-06-01_lst.tif"
    scene = {"id": "MOD09GA+MOD21A1D 2022-06-01", "date": "2022-06-01", "bands": bands}
    (folder / "source.json").write_text(json.dumps({"scenes": [scene]}))
    return folder


def test_satvision_from_the_local_backend(tmp_path, modis_source, ckpt):
    from tests.conftest import points

    out = tmp_path / "l"
    res = export_batch(
        spatials=points(2, buffer_m=4000.0),
        temporal=DAY,
        models=["satvision"],
        backend="local",
        source=str(modis_source),
        weights={"satvision": str(ckpt)},
        model_configs={"satvision": CFG},
        out=str(out),
        layout="per_item",
        show_progress=False,
        num_workers=2,
        chunk_size=2,
    )
    assert all(r["status"] == "ok" for r in res)
    with np.load(out / "p00000.npz") as z:
        x = z["input_chw__satvision"]
        e = z["embedding__satvision"]
    assert x.shape == (7, 8, 8) and np.isfinite(x).all()
    assert 14000 < x[6].min() and x[6].max() < 16500 and x[:6].max() < 4000  # LST vs SR DN
    ref = _reference(ckpt, x, OutputSpec.pooled())
    np.testing.assert_allclose(e, ref.data, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_frames", [None, 2])
def test_modis_proxy_requests_with_and_without_templates(n_frames):
    """The two-collection request as the real client serialises it (templates off) and as
    templates splice each place into it (on): the same bytes, both collections filtered to
    each place and window (also per bin of a time series), the bands in sensor order."""
    from rs_embed_ray.models.catalog import CATALOG
    from rs_embed_ray.providers.gee import GEEProvider

    sensor = CATALOG["satvision"].sensor
    windows = [DAY, TemporalSpec.range("2021-03-01", "2021-03-09")]
    runs = []
    with EEEmulator(retry_after_s=0) as emu:
        emu.record_bodies = True
        for templates in (False, True):
            emu.reset_stats()
            prov = GEEProvider(url=emu.url, project="p", request_templates=templates)
            patches = [
                prov.fetch(sp, t, sensor, n_frames=n_frames) for t in windows for sp in PLACES[:2]
            ]
            runs.append(([r["body"] for r in emu.requests_of("computePixels")], patches))
    (off, p_off), (on, p_on) = runs
    assert off == on and len(on) == 4
    for a, b in zip(p_off, p_on, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    body = on[3]
    assert body.count("MODIS/061/MOD21A1D") >= 1 and "2021-03-01" in body and "2022" not in body
    x = p_on[0].data if n_frames is None else p_on[0].data[-1]
    assert x.shape[0] == len(PROXY_BANDS)
    for c, band in enumerate(PROXY_BANDS):  # each channel decodes as its own band
        _rows, cols = decode_position(x[c], band)
        assert np.all(np.diff(cols, axis=1) == 1), band
