"""tessera end to end on a real local Ray cluster, next to gse served by the Earth Engine
emulator through the real earthengine-api client, in both layouts: tessera fetches nothing
(only gse's pixels are requested), reads its seeded tile folder (the published geotessera
layout), and its grid lands on the same EPSG:3857 10 m pixels as gse's. Manifests record
the tile folder; values equal the model run in this process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.specs import OutputSpec
from rs_embed_ray.testing.ee_emulator import EEEmulator

pytest.importorskip("rasterio")
pytestmark = pytest.mark.usefixtures("ray_cluster")

YEAR = TemporalSpec.year(2022)
PLACES = [PointBuffer(15.03 + 0.04 * i, 45.02 + 0.01 * i, 160.0) for i in range(3)]
MODELS = ["tessera", "gse"]


@pytest.fixture(scope="module")
def tiles(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_tessera import write_tessera_tiles

    return write_tessera_tiles(
        module_scratch("tessera"), [(15.05, 45.05), (15.15, 45.05)], years=(2022,), seed=5
    )


def _export(emu, out: Path, layout: str, tiles: Path, output: OutputSpec):
    return export_batch(
        spatials=PLACES,
        temporal=YEAR,
        models=MODELS,
        backend="gee",
        provider_options={"url": emu.url},
        weights={"tessera": str(tiles)},
        output=output,
        out=str(out),
        layout=layout,
        show_progress=False,
        num_workers=2,
        chunk_size=2,
    )


def _reference(tiles: Path, output: OutputSpec) -> list[np.ndarray]:
    from rs_embed_ray.models.tessera import Tessera

    m = Tessera(weights=str(tiles))
    return [m.embed_one(p, output, 2022).data for p in PLACES]


def test_tessera_with_gse_in_both_layouts(tmp_path, tiles):
    with EEEmulator(retry_after_s=0) as emu:
        per_item = _export(emu, tmp_path / "pi", "per_item", tiles, OutputSpec.grid())
        pixels = emu.requests_of("computePixels")
        combined = _export(emu, tmp_path / "c.npz", "combined", tiles, OutputSpec.pooled())
    assert all(r["status"] == "ok" for r in per_item), [r.get("error") for r in per_item]
    assert combined["status"] == "ok" and combined["n_items"] == len(PLACES)
    assert len(pixels) == len(PLACES)  # gse's fetches only: tessera requests nothing
    assert all("A00" in r["bands"] for r in pixels)

    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    entry = {m["model"]: m for m in man["models"]}["tessera"]
    assert entry["weights"]["weights"] == str(tiles.resolve()) and entry["input"] is None
    assert entry["weights"]["registry"].endswith(("manifest.parquet", "registry.parquet"))
    assert entry["embedding"]["shape"] == [128, 32, 32]
    assert entry["meta"]["output_crs"] == "EPSG:3857" and entry["meta"]["year"] == 2022
    gse_meta = {m["model"]: m for m in man["models"]}["gse"]
    assert gse_meta["embedding"]["shape"] == [64, 32, 32]  # the same 10 m pixels
    refs = _reference(tiles, OutputSpec.grid())
    for i in range(len(PLACES)):
        with np.load(tmp_path / "pi" / f"p{i:05d}.npz") as z:
            np.testing.assert_array_equal(z["embedding__tessera"], refs[i])
    pooled = _reference(tiles, OutputSpec.pooled())
    with np.load(tmp_path / "c.npz") as z:
        emb = z["embeddings__tessera"]
        assert emb.shape == (len(PLACES), 128) and "inputs_bchw__tessera" not in z.files
        assert z["embeddings__gse"].shape == (len(PLACES), 64)
    np.testing.assert_allclose(emb, np.stack(pooled), rtol=0, atol=1e-6)
    recorded = {m["model"]: m["weights"] for m in combined["models"]}
    assert recorded["tessera"]["weights"] == str(tiles.resolve())


def test_tessera_combined_grid_netcdf_no_earth_engine(tmp_path, tiles):
    """Alone, tessera needs no provider at all: equal PointBuffers give equal grids that
    stack into one [N, 128, 32, 32] variable."""
    import xarray as xr

    res = export_batch(
        spatials=PLACES,
        temporal=YEAR,
        models=["tessera"],
        backend="local",  # no source: nothing is fetched
        weights={"tessera": str(tiles)},
        output=OutputSpec.grid(),
        out=str(tmp_path / "run"),
        layout="combined",
        format="netcdf",
        show_progress=False,
    )
    assert res["status"] == "ok" and res["n_items"] == len(PLACES)
    with xr.open_dataset(tmp_path / "run.nc") as ds:
        emb = ds["embeddings__tessera"].values
    assert emb.shape == (len(PLACES), 128, 32, 32)
    np.testing.assert_array_equal(emb, np.stack(_reference(tiles, OutputSpec.grid())))
