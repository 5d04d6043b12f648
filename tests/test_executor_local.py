"""The in-process executor (``executor="local"``, pipeline/inprocess.py) against the Ray one:
the same places, pixels and weights give the same files; a stopped run keeps what finished
and resumes; ``auto`` runs a small job without starting (or importing) Ray."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import rs_embed_ray
from rs_embed_ray import TemporalSpec, export_batch
from rs_embed_ray.cli import main
from rs_embed_ray.errors import ModelError
from rs_embed_ray.io.state import RunState
from rs_embed_ray.pipeline.inprocess import TaskWindow, _rebatch
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def kw(source, ckpt, **extra):
    d = dict(
        temporal=WINDOW,
        models=["remoteclip", "spectral_stats"],
        backend="local",
        source=str(source),
        weights={"remoteclip": str(ckpt)},
        show_progress=False,
        num_workers=3,
        chunk_size=2,
    )
    d.update(extra)
    return d


def same_export_arrays(a: np.ndarray, b: np.ndarray, key: str) -> None:
    """Inputs bit for bit; embeddings to float32 rounding: which places share a forward batch
    differs from run to run on Ray (unordered streaming), and a batch of another size can take
    another matmul kernel (seen: 3e-6 apart at most)."""
    if "embedding" in key:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=key)
    else:
        np.testing.assert_array_equal(a, b, err_msg=key)


def npz_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def nc_arrays(path) -> dict[str, np.ndarray]:
    with xr.open_dataset(path) as ds:
        return {k: ds[k].values for k in ds.data_vars}


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_per_item_files_equal_ray(tmp_path, raster_source, remoteclip_ckpt, fmt):
    """netcdf: three writer threads in one process (netCDF-C is not thread-safe; the writers
    take turns, io.netcdf.LIBRARY_LOCK)."""
    spatials = points(7)
    runs = {}
    for ex in ("ray", "local"):
        out = tmp_path / ex
        runs[ex] = export_batch(
            **kw(raster_source, remoteclip_ckpt, executor=ex, writer_workers=3),
            spatials=spatials,
            out=str(out),
            layout="per_item",
            format=fmt,
        )
    assert [m["status"] for m in runs["local"]] == ["ok"] * 7
    ext, read = (".npz", npz_arrays) if fmt == "npz" else (".nc", nc_arrays)
    for i in range(7):
        a = read(tmp_path / "local" / f"p{i:05d}{ext}")
        b = read(tmp_path / "ray" / f"p{i:05d}{ext}")
        assert a.keys() == b.keys() and len(a) == 4
        for k in a:
            same_export_arrays(a[k], b[k], f"p{i:05d} {k}")
        ma = json.loads((tmp_path / "local" / f"p{i:05d}.json").read_text())
        mb = json.loads((tmp_path / "ray" / f"p{i:05d}.json").read_text())
        for a_model, b_model in zip(ma["models"], mb["models"], strict=True):
            assert a_model["input"] == b_model["input"]
            assert a_model["embedding"]["shape"] == b_model["embedding"]["shape"]


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("fmt,name", [("zarr", "all.zarr"), ("netcdf", "all.nc")])
def test_combined_equal_ray(tmp_path, raster_source, remoteclip_ckpt, fmt, name):
    """zarr: regions written while batches finish (RegionWriters on threads); netcdf: the
    final combined write (``task_map`` on threads)."""
    spatials = points(6)
    opened = {}
    for ex in ("ray", "local"):
        path = tmp_path / ex / name
        man = export_batch(
            **kw(raster_source, remoteclip_ckpt, executor=ex),
            spatials=spatials,
            out_path=str(path),
            format=fmt,
        )
        assert man["status"] == "ok"
        opened[ex] = xr.open_zarr(path) if fmt == "zarr" else xr.open_dataset(path)
    a, b = opened["local"], opened["ray"]
    try:
        assert set(a.data_vars) == set(b.data_vars) and len(a.data_vars) >= 4
        for k in a.data_vars:
            same_export_arrays(a[k].values, b[k].values, k)
    finally:
        a.close()
        b.close()
    if fmt == "zarr":  # regions were written while the run went on, and logged
        recs = RunState(tmp_path / "local" / "all.rs_embed_ray").read_log()
        assert any(r["kind"] == "region" for r in recs)


def test_stop_keeps_finished_places_and_resumes(tmp_path, raster_source, remoteclip_ckpt):
    spatials = points(8)
    marker = tmp_path / "fixed"
    faults = faulty_local(
        raster_source, fail_items=[spatials[7].center()], unless_exists=str(marker)
    )
    args = kw(raster_source, remoteclip_ckpt, executor="local")
    args.update(faults)
    out = tmp_path / "pi"
    with pytest.raises(rs_embed_ray.ExportStopped) as info:
        export_batch(**args, spatials=spatials, out=str(out), layout="per_item")
    assert info.value.index == 7 and info.value.stage.startswith("fetch")
    written = {int(p.stem[1:]) for p in out.glob("p*.npz")}
    assert 7 not in written
    before = {i: (out / f"p{i:05d}.npz").stat().st_mtime_ns for i in written}

    marker.write_text("ok")
    res = export_batch(**args, spatials=spatials, out=str(out), layout="per_item", resume=True)
    assert [r["status"] for r in res] == ["ok"] * 8
    assert {i for i, r in enumerate(res) if r.get("resume_skipped")} == written
    assert before == {i: (out / f"p{i:05d}.npz").stat().st_mtime_ns for i in written}


def test_auto_runs_a_small_job_without_ray(tmp_path, raster_source):
    """A fresh process, as a user's script: ``auto`` never imports Ray for 5 places."""
    script = textwrap.dedent(
        f"""
        import sys
        from rs_embed_ray import TemporalSpec, export_batch
        from tests.conftest import points
        res = export_batch(
            spatials=points(5), temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
            models=["spectral_stats"], backend="local", source={str(raster_source)!r},
            out={str(tmp_path / "out")!r}, layout="per_item", show_progress=False,
        )
        print(sorted(set(r["status"] for r in res)), "ray" in sys.modules)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "['ok'] False"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--executor", "local", "--address", "127.0.0.1:1"], "names a cluster"),
        (["--executor", "local", "--ee-quota-actor", "q"], "ee_quota_actor"),
    ],
)
def test_local_refuses_ray_only_options(tmp_path, raster_source, extra, message):
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat,buffer_m\n0.01,0.01,160\n")
    out = tmp_path / "out"
    args = ["export", "--points", str(pts), "--models", "spectral_stats", "--out", str(out)]
    args += [
        "--start",
        "2022-06-01",
        "--end",
        "2022-09-01",
        "--backend",
        "local",
        "--source",
        str(raster_source),
        *extra,
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and not out.exists()


def test_unknown_executor_is_refused():
    with pytest.raises(ModelError, match="executor must be one of auto, ray, local"):
        export_batch(
            spatials=points(1), temporal=WINDOW, models=["spectral_stats"], out="x",
            executor="threads",
        )  # fmt: skip


@pytest.mark.parametrize("sizes,k", [([5], 2), ([1, 1, 1], 2), ([3, 0, 4, 2], 3), ([6], 3)])
def test_rebatch_keeps_rows_and_order(sizes, k):
    start = np.cumsum([0, *sizes])
    blocks = [
        {"index": np.arange(a, b), "s": np.arange(a, b).astype(object)}
        for a, b in itertools.pairwise(start)
    ]
    out = list(_rebatch(iter(blocks), k))
    assert all(len(b["index"]) == k for b in out[:-1]) and 0 < len(out[-1]["index"]) <= k
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in out]), np.arange(sum(sizes)))
    assert all(list(b["s"]) == list(b["index"]) for b in out)


def test_task_window_bounds_calls_and_raises_their_errors():
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def work(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        if x == 7:
            raise ValueError("seven")
        return x

    win = TaskWindow(work, 3)
    got = []
    for x in range(7):
        got += win.submit(x)
    got += win.drain()
    assert sorted(got) == list(range(7)) and peak[0] == 3
    win.submit(7)
    with pytest.raises(ValueError, match="seven"):
        win.drain()


def test_stopping_early_ends_every_stage_thread():
    """The consumer stops after one batch (a stopped run): the feeder and the calls end,
    none left blocked on a slot."""
    import threading
    import time

    from rs_embed_ray.pipeline.inprocess import LocalDataset, Stage, batches

    def slow(batch):
        time.sleep(0.05)
        return batch

    blocks = tuple({"index": np.arange(i, i + 2)} for i in range(0, 40, 2))
    stream = batches(LocalDataset(blocks, (Stage(slow, {}, 2, calls=3),)))
    first = next(stream)
    assert len(first["index"]) == 2
    stream.close()
    deadline = time.monotonic() + 5
    while any(t.name == "stage-feed" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a stage's feeder thread did not end"
        time.sleep(0.02)
