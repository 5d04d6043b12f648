"""Shared fixtures: one real local Ray cluster per test session, a synthetic raster source
and RemoteCLIP checkpoints in the published file format (random values)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BANDS = ("B2", "B3", "B4", "B8")
CENTER = (15.0, 45.0)  # lon, lat: on the central meridian of UTM zone 33N


@pytest.fixture(autouse=True)
def _float32_matmul_at_highest():
    """Each test starts with torch's float32 matmul at full precision, as the product and the
    Ray actors run it. Importing terratorch (oracle modules do at collection, some tests when
    they run) sets the process-wide precision to "medium", and with torch 2.14 that changes
    CPU matmuls too: references computed in the test process then differed from the exports'
    by up to 0.02."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_float32_matmul_precision() != "highest":
        torch.set_float32_matmul_precision("highest")
    yield


@pytest.fixture
def mount_tmpfs(tmp_path) -> Iterator[Callable[..., Path]]:
    """``mount_tmpfs(size)``: a real tmpfs of ``size`` under ``tmp_path`` (root with mount
    permission, as in the dev sandbox), unmounted after the test; where none can be
    mounted the test is skipped, saying ``why``."""
    mounted: list[Path] = []

    def mount(size: str, why: str = "needs root with mount permission for a tmpfs") -> Path:
        mnt = tmp_path / f"tmpfs-{len(mounted)}"
        mnt.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
        if os.geteuid() != 0 or subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip(why)
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (no dashboard), shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def write_scene(folder: Path, day: str, bands=BANDS, offset: float = 0.0) -> None:
    """GeoTIFFs named <date>_<band>.tif in UTM 33N, 10 m pixels, smooth per-band gradients."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    # 2000 x 2000 px at 10 m = 20 km around CENTER (easting 500000 on the central meridian)
    north = 4983000.0 + 10000.0
    transform = from_origin(490000.0, north, 10.0, 10.0)
    yy, xx = np.mgrid[0:2000, 0:2000].astype(np.float32)
    for b, name in enumerate(bands):
        data = (500.0 + 300.0 * b + 0.5 * xx + 0.25 * yy + offset).astype(np.float32)
        with rasterio.open(
            folder / f"{day}_{name}.tif",
            "w",
            driver="GTiff",
            width=2000,
            height=2000,
            count=1,
            dtype="float32",
            crs="EPSG:32633",
            transform=transform,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            nodata=-9999.0,
        ) as ds:
            ds.write(data, 1)


@pytest.fixture(scope="module")
def module_scratch(tmp_path_factory) -> Iterator[Callable[[str], Path]]:
    """``mktemp`` for one module's big files (checkpoints, rasters), removed when it ends.

    Session-long checkpoints made a full run hold about 22 GB until the end, which filled
    CI's disk once; per module the peak is a few GB.
    """
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def raster_source(tmp_path_factory) -> Path:
    """A folder of dated single-band GeoTIFFs (two dates) that the local backend reads."""
    folder = tmp_path_factory.mktemp("source")
    write_scene(folder, "2022-07-01")
    write_scene(folder, "2022-08-01", offset=100.0)
    return folder


@pytest.fixture(scope="session")
def remoteclip_ckpt(tmp_path_factory) -> Path:
    """model.safetensors in the HF repo's layout (``model.`` prefix), random values."""
    from rs_embed_ray.testing.checkpoints import write_remoteclip_checkpoint

    return Path(write_remoteclip_checkpoint(tmp_path_factory.mktemp("remoteclip")))


def points(n: int, buffer_m: float = 160.0):
    """n PointBuffers spread over the synthetic scene."""
    from rs_embed_ray.specs import PointBuffer

    out = []
    for i in range(n):
        dx = ((i % 5) - 2) * 0.02
        dy = ((i // 5) % 5 - 2) * 0.015
        out.append(PointBuffer(CENTER[0] + dx, CENTER[1] + dy, buffer_m))
    return out


def tiny_raster_source(folder: Path) -> Path:
    """A folder with one 4 x 4 px GeoTIFF: enough for a plan, which opens a local source's
    first raster (header only) and refuses a folder without rasters."""
    import rasterio
    from rasterio.transform import from_origin

    src = Path(folder) / "src"
    src.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        src / "2022-07-01_B2.tif", "w", driver="GTiff", width=4, height=4, count=1,
        dtype="float32", crs="EPSG:32633", transform=from_origin(500000.0, 4983000.0, 10, 10),
    ) as ds:  # fmt: skip
        ds.write(np.zeros((4, 4), np.float32), 1)
    return src
