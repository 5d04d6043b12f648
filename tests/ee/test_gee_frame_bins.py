"""Explicit 30-day bins (``frame_bins="30d"``, olmoearth) from GEEProvider, with the real
earthengine-api client against the local emulator: bins from a window, one computePixels per
place, an empty bin as an all-NaN frame, a long window in 12 equal bins, batching, S1."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from rs_embed_ray import geo
from rs_embed_ray.errors import ProviderError, SpecError
from rs_embed_ray.providers.gee import GEEProvider, split_date_range
from rs_embed_ray.specs import PointBuffer, SensorSpec, TemporalSpec, fixed_day_bins
from rs_embed_ray.testing.ee_emulator import EEEmulator, date_range_starts, expected_pixels

OLMO = ("B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12", "B1", "B9")
S2 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=OLMO, scale_m=10)
MODIS = SensorSpec(collection="MODIS/061/MOD09GA", bands=("sur_refl_b01",), scale_m=500)
WINDOW = TemporalSpec.range("2022-01-01", "2022-03-15")  # 73 days: 30 + 30 + 13
PLACE = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)


def provider(emu: EEEmulator, **kw: Any) -> GEEProvider:
    kw.setdefault("project", "test-project")
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.05)
    return GEEProvider(url=emu.url, **kw)


def empty_bins(*starts: str):
    """A size hook: a collection filtered to a bin starting on one of ``starts`` is empty."""
    return lambda e: 0 if date_range_starts(e) & set(starts) else None


def test_fixed_day_bins_rule() -> None:
    bins, stretched = fixed_day_bins("2022-01-01", "2022-03-15", 30, 12)
    assert bins == [
        ("2022-01-01", "2022-01-31"),
        ("2022-01-31", "2022-03-02"),
        ("2022-03-02", "2022-03-15"),
    ]
    assert stretched is False
    assert fixed_day_bins("2022-06-01", "2022-06-10", 30, 12) == (
        [("2022-06-01", "2022-06-10")],
        False,
    )
    # 360 days: exactly 12 fixed bins; 365 days would need 13: 12 equal bins instead
    bins, stretched = fixed_day_bins("2022-01-01", "2022-12-27", 30, 12)
    assert len(bins) == 12 and not stretched and bins[-1] == ("2022-11-27", "2022-12-27")
    bins, stretched = fixed_day_bins("2022-01-01", "2023-01-01", 30, 12)
    assert stretched and bins == split_date_range("2022-01-01", "2023-01-01", 12)
    assert fixed_day_bins("2022-01-01", "2023-01-01", 30, None)[0][12] == (
        "2022-12-27",
        "2023-01-01",
    )


def test_bins_from_a_window_in_one_request(emulator: EEEmulator) -> None:
    patch = provider(emulator).fetch(PLACE, WINDOW, S2, n_frames=12, frame_bins="30d")
    assert patch.data.shape == (3, 12, 40, 40)
    grid = geo.grid_for(PLACE, 10)
    want = expected_pixels(grid.affine, grid.width, grid.height, list(OLMO))
    want = np.clip(np.asarray(want, dtype=np.float32), 0, 10000)  # S2 frames are clipped
    for t in range(3):
        np.testing.assert_array_equal(patch.data[t], want)
    assert [(f["start"], f["end"]) for f in patch.meta["frames"]] == [
        ("2022-01-01", "2022-01-31"),
        ("2022-01-31", "2022-03-02"),
        ("2022-03-02", "2022-03-15"),
    ]
    assert patch.meta["n_empty"] == 0 and patch.meta["frame_bins"] == "30d"
    assert patch.meta["temporal_sampling"] == "fixed_stride"
    pix = emulator.requests_of("computePixels")
    assert len(pix) == 1 and emulator.requests_of("value") == []  # no size queries
    assert sorted(pix[0]["count_bands"]) == [f"__n_images__t{i}" for i in range(3)]
    assert len(pix[0]["bands"]) == 3 * 12


def test_empty_bin_is_an_all_nan_frame(emulator: EEEmulator) -> None:
    emulator.size_hook = empty_bins("2022-01-31")
    patch = provider(emulator).fetch(PLACE, WINDOW, MODIS, n_frames=12, frame_bins="30d")
    grid = geo.grid_for(PLACE, 500)
    want = np.asarray(
        expected_pixels(grid.affine, grid.width, grid.height, ["sur_refl_b01"]), np.float32
    )
    assert patch.data.shape == (3, 1, grid.height, grid.width)
    assert np.isnan(patch.data[1]).all()  # never back-filled
    np.testing.assert_array_equal(patch.data[0], want)
    np.testing.assert_array_equal(patch.data[2], want)
    assert [f["empty"] for f in patch.meta["frames"]] == [False, True, False]
    assert [f["n_images"] for f in patch.meta["frames"]] == [7, 0, 7]
    assert patch.meta["n_empty"] == 1 and patch.meta["n_images"] == 14
    assert len(emulator.requests_of("computePixels")) == 1


def test_no_image_in_any_bin_is_the_usual_error(emulator: EEEmulator) -> None:
    emulator.size_hook = empty_bins("2022-01-01", "2022-01-31", "2022-03-02")
    with pytest.raises(ProviderError, match="No images found"):
        provider(emulator).fetch(PLACE, WINDOW, S2, n_frames=12, frame_bins="30d")


def test_long_window_is_divided_into_12_equal_bins(emulator: EEEmulator) -> None:
    year = TemporalSpec.range("2022-01-01", "2023-01-01")
    patch = provider(emulator).fetch(PLACE, year, MODIS, n_frames=12, frame_bins="30d")
    assert patch.data.shape[0] == 12
    assert [(f["start"], f["end"]) for f in patch.meta["frames"]] == split_date_range(
        "2022-01-01", "2023-01-01", 12
    )
    assert patch.meta["temporal_sampling"] == "equal_divided"
    assert len(emulator.requests_of("computePixels")) == 1


def test_fetch_many_groups_places_with_their_own_empty_bins(emulator: EEEmulator) -> None:
    places = [PointBuffer(lon=8.0 + 0.003 * i, lat=47.0, buffer_m=200) for i in range(3)]
    emulator.size_hook = empty_bins("2022-03-02")
    p = provider(emulator)
    got = p.fetch_many(places, WINDOW, S2, n_frames=12, frame_bins="30d", max_group=3)
    assert len(emulator.requests_of("computePixels")) == 1  # one union request
    emulator.reset_stats()
    for place, patch in zip(places, got, strict=True):
        alone = p.fetch(place, WINDOW, S2, n_frames=12, frame_bins="30d")
        np.testing.assert_array_equal(patch.data, alone.data)
        assert np.isnan(patch.data[2]).all() and not np.isnan(patch.data[:2]).any()
        assert patch.meta["batched"]["group_size"] == 3 and patch.meta["n_empty"] == 1


def test_s1_relaxes_iw_filter_when_every_bin_is_empty(emulator: EEEmulator) -> None:
    emulator.size_hook = lambda e: 0 if "instrumentMode" in json.dumps(e) else None
    s1 = SensorSpec(collection="COPERNICUS/S1_GRD", bands=("VV", "VH"), scale_m=10)
    patch = provider(emulator).fetch(PLACE, WINDOW, s1, n_frames=12, frame_bins="30d")
    assert patch.meta["s1_iw_relaxed_on_empty"] is True and patch.meta["n_empty"] == 0
    assert patch.data.shape == (3, 2, 40, 40)
    assert len(emulator.requests_of("computePixels")) == 2  # strict, then relaxed


def test_bad_frame_bins_is_a_spec_error(emulator: EEEmulator) -> None:
    with pytest.raises(SpecError, match="frame_bins"):
        provider(emulator).fetch(PLACE, WINDOW, S2, n_frames=12, frame_bins="monthly")
