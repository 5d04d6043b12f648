"""Explicit 30-day bins (``frame_bins="30d"``, olmoearth) from the local backend: bins from a
window, each an independent composite of its own scenes, an empty bin as an all-NaN frame, a
long window in 12 equal bins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rasterio")

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers import create_provider
from rs_embed_ray.providers.local import LocalProvider
from rs_embed_ray.specs import SensorSpec, TemporalSpec, fixed_day_bins
from tests.conftest import points, write_scene

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

S2 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B2", "B3", "B4", "B8"))
WINDOW = TemporalSpec.range("2022-01-01", "2022-03-15")  # bins Jan 1, Jan 31, Mar 2
DATES = {"2022-01-05": 0.0, "2022-01-20": 400.0, "2022-03-05": 9000.0, "2022-08-10": 50.0}


@pytest.fixture(scope="module")
def source(module_scratch) -> Path:
    folder = module_scratch("binned_source")
    for day, offset in DATES.items():
        write_scene(folder, day, offset=offset)
    return folder


@pytest.fixture(scope="module")
def prov(source: Path):
    p = LocalProvider(str(source))
    yield p
    p.close()


def test_bins_are_independent_composites_and_empty_is_nan(prov: LocalProvider) -> None:
    place = points(1)[0]
    patch = prov.fetch(place, WINDOW, S2, n_frames=12, frame_bins="30d")
    assert patch.data.shape[:2] == (3, 4)
    assert [(f["start"], f["end"], f["empty"]) for f in patch.meta["frames"]] == [
        ("2022-01-01", "2022-01-31", False),
        ("2022-01-31", "2022-03-02", True),
        ("2022-03-02", "2022-03-15", False),
    ]
    assert patch.meta["frames"][0]["scenes"] == ["2022-01-05", "2022-01-20"]
    assert patch.meta["n_empty"] == 1 and patch.meta["temporal_sampling"] == "fixed_stride"
    assert np.isnan(patch.data[1]).all()
    # each non-empty bin equals a plain composite over exactly that bin
    jan = prov.fetch(place, TemporalSpec.range("2022-01-01", "2022-01-31"), S2)
    mar = prov.fetch(place, TemporalSpec.range("2022-03-02", "2022-03-15"), S2)
    np.testing.assert_array_equal(patch.data[0], jan.data)
    np.testing.assert_array_equal(patch.data[2], np.clip(mar.data, 0, 10000))
    assert patch.data[2].max() == 10000.0  # the 9000 offset scene is clipped like GEE's
    # the median of the two January scenes lies between them (offset 0 and 400)
    only5 = prov.fetch(place, TemporalSpec.range("2022-01-05", "2022-01-06"), S2)
    np.testing.assert_allclose(patch.data[0] - only5.data, 200.0, atol=1e-2)
    # the equal-bin series back-fills instead: the same window has no NaN there
    series = prov.fetch(place, WINDOW, S2, n_frames=3)
    assert not np.isnan(series.data).any()


def test_long_window_is_divided_into_12_equal_bins(prov: LocalProvider) -> None:
    year = TemporalSpec.range("2022-01-01", "2023-01-01")
    patch = prov.fetch(points(1)[0], year, S2, n_frames=12, frame_bins="30d")
    bins, stretched = fixed_day_bins("2022-01-01", "2023-01-01", 30, 12)
    assert stretched and patch.data.shape[0] == 12
    assert [(f["start"], f["end"]) for f in patch.meta["frames"]] == bins
    assert patch.meta["temporal_sampling"] == "equal_divided"
    full = [i for i, f in enumerate(patch.meta["frames"]) if not f["empty"]]
    assert full == [0, 2, 7]  # January (two scenes), early March, the bin of 2022-08-10
    assert patch.meta["n_empty"] == 9
    assert np.isnan(patch.data[[t for t in range(12) if t not in full]]).all()


def test_errors_and_registry(source: Path, prov: LocalProvider) -> None:
    place = points(1)[0]
    with pytest.raises(ProviderError, match="frame_bins"):
        prov.fetch(place, WINDOW, S2, n_frames=12, frame_bins="month")
    with pytest.raises(ProviderError, match="no scene"):
        prov.fetch(place, TemporalSpec.range("2021-01-01", "2021-03-01"), S2, frame_bins="30d")
    p = create_provider("local", source=str(source))
    try:
        got = p.fetch(place, WINDOW, S2, n_frames=2, frame_bins="30d")
        assert got.data.shape[0] == 2  # 3 bins needed, cap 2: two equal bins
        assert got.meta["temporal_sampling"] == "equal_divided"
    finally:
        p.close()
