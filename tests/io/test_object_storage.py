"""Outputs and run state on an object store, against a real S3-compatible server.

moto's standalone server runs as a subprocess on a loopback port (the shape of a real
endpoint: HTTP, SigV4, conditional writes), chosen with ``AWS_ENDPOINT_URL`` as a user would.
Ray's workers read the environment of the cluster they were started in, so this module runs
its own local Ray started after the endpoint and credentials are set (and restores the
session's Ray afterwards). Covered: one export per layout and format, read back with
``load_export`` from the bucket; the lock (a second run is refused while the first holds
it); a SIGKILL mid-run and a resume from the bucket alone (fresh temp dirs); bad bucket name,
missing bucket, missing credentials and an unknown scheme (exit 2, nothing written); the
secret never reaching an object, a log line or a message.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
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
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points, write_scene
from tests.faults.conftest import REPO, child_env, driver_cmd, local_kw
from tests.io import lock_cases

BUCKET = "rs-embed-test"
STORE_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3")
# the credentials of an IAM user the fixture creates on the server (moto checks signatures
# once INITIAL_NO_AUTH_ACTION_COUNT requests are spent); the leak checks grep for them
SECRET = ""
KEY_ID = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        # nothing of the developer's own AWS set-up, no instance-metadata probes
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _iam_user(endpoint: str) -> tuple[str, str]:
    """A user allowed s3:* and its access key (the server's own, random secret)."""
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
    )  # fmt: skip
    iam.create_user(UserName="exporter")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                      "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName="exporter", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="exporter")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _clear_fs_cache() -> None:
    """fsspec keeps one file system per set of options: a test that changes the
    credentials must not get the previous test's client."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[str]:
    """moto_server on a free loopback port, the env pointing at it, a bucket."""
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    logf = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        # the 3 IAM calls below run unauthenticated; every later request is checked
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    deadline = time.time() + 30
    while True:
        try:
            # a TCP connect, not a request: requests count against the unauthenticated ones
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    global KEY_ID, SECRET
    KEY_ID, SECRET = _iam_user(endpoint)
    saved = {k: os.environ.get(k) for k in _env(endpoint)}
    os.environ.update(_env(endpoint))
    _clear_fs_cache()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_fs_cache()
        server.terminate()
        server.wait(timeout=10)
        logf.close()


@pytest.fixture(scope="module")
def s3(s3_server) -> Iterator[str]:
    """The server, and a local Ray started with its env (so its workers reach it too)."""
    import ray

    had_ray = ray.is_initialized()
    if had_ray:
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield s3_server
    finally:
        ray.shutdown()
        if had_ray:  # give the session's fixture its cluster back
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def source(module_scratch) -> Path:
    folder = module_scratch("s3_source")
    write_scene(folder, "2022-07-01")
    return folder


def _fs():
    import s3fs

    return s3fs.S3FileSystem()


def _objects(prefix: str) -> list[str]:
    fs = _fs()
    fs.invalidate_cache()
    try:
        return sorted(fs.find(f"{BUCKET}/{prefix}"))
    except FileNotFoundError:
        return []


def _no_secret_anywhere(prefix: str) -> None:
    fs = _fs()
    for key in _objects(prefix):
        data = fs.cat_file(key)
        assert SECRET.encode() not in data and KEY_ID.encode() not in data, key


CASES = [  # per_item npz is the killed-and-resumed export below
    ("per_item", "netcdf", "pi_nc"),
    ("combined", "npz", "cn.npz"),
    ("combined", "geoparquet", "cg.parquet"),
    ("combined", "zarr", "cz.zarr"),  # a directory store: regions written by Ray tasks
]


def test_exports_per_layout_read_back_from_bucket(s3, source, caplog, tmp_path, monkeypatch):
    """Each layout/format written to the bucket reads back with load_export from the
    bucket, all with the same embeddings, read by xarray / geopandas too, and leaves no temp
    or partial object and no shard behind; no secret reaches an object or a log line."""
    import geopandas
    import xarray as xr

    caplog.set_level("DEBUG")
    monkeypatch.chdir(tmp_path)  # a URL mistaken for a relative path would land here
    pts = points(3)
    kw = local_kw(source, save_inputs=False, chunk_size=4)
    embeddings = {}
    for layout, fmt, name in CASES:
        url = f"s3://{BUCKET}/exports/{name}"
        res = export_batch(**kw, spatials=pts, out=url, layout=layout, format=fmt)
        statuses = [res["status"]] if isinstance(res, dict) else [r["status"] for r in res]
        assert set(statuses) == {"ok"}, (name, res)
        got = load_export(url).models["spectral_stats"].embeddings
        embeddings[name] = np.asarray(got)
    assert embeddings["pi_nc"].shape == (3, 20)
    for name, got in embeddings.items():
        np.testing.assert_array_equal(got, embeddings["pi_nc"], err_msg=name)
    objs = _objects("exports/")
    assert not [k for k in objs if ".tmp-" in k or "/patches/" in k or "/embeds/" in k], objs
    for n in ("p00000", "p00001", "p00002"):  # per-item arrays and their JSON sidecars
        assert f"{BUCKET}/exports/pi_nc/{n}.nc" in objs
        man = json.loads(_fs().cat_file(f"{BUCKET}/exports/pi_nc/{n}.json"))
        assert man["status"] == "ok" and man["nc_path"].startswith("s3://")
    assert {f"{BUCKET}/exports/cn.npz", f"{BUCKET}/exports/cn.json"} <= set(objs)
    # the STAC files go to the bucket beside the outputs, with hrefs relative to them
    item = json.loads(_fs().cat_file(f"{BUCKET}/exports/cz.stac/spectral_stats/item.json"))
    assert item["assets"]["embeddings"]["href"] == "../../cz.zarr"
    assert f"{BUCKET}/exports/pi_nc/stac/spectral_stats/items.json" in objs
    assert not list(tmp_path.glob("s3*")), "something treated the bucket URL as a local path"
    # read by libraries we did not write, straight from the bucket
    _fs().get_file(f"{BUCKET}/exports/pi_nc/p00001.nc", str(tmp_path / "p.nc"))
    with xr.open_dataset(tmp_path / "p.nc") as ds:
        assert any(v.startswith("embedding") for v in ds.data_vars), list(ds.data_vars)
    with xr.open_zarr(f"s3://{BUCKET}/exports/cz.zarr") as zds:  # zarr + s3fs, not our reader
        emb = [v for v in zds.data_vars if v.startswith("embedding")]
        np.testing.assert_array_equal(np.asarray(zds[emb[0]].values), embeddings["pi_nc"])
    gdf = geopandas.read_parquet(f"s3://{BUCKET}/exports/cg.parquet")
    assert len(gdf) == 3 and gdf.geometry.notna().all()
    run = json.loads(_fs().cat_file(f"{BUCKET}/exports/pi_nc/_rs_embed_ray/run.json"))
    assert run["status"] == "ok"
    _no_secret_anywhere("exports/")
    assert SECRET not in caplog.text
    # botocore's own DEBUG lines carry the access key id (Authorization); ours never do
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(STORE_LOGGERS)]
    assert not [m for m in ours if KEY_ID in m]


def test_conditional_create_is_honoured_by_the_server(s3_server):
    """What the lock relies on: a second create of one object fails (If-None-Match: *)."""
    path = storage.as_path(f"s3://{BUCKET}/cond/lock")
    storage.put_bytes(path, b"first", create=True)
    with pytest.raises(FileExistsError):
        storage.put_bytes(path, b"second", create=True)
    assert storage.read_bytes(path) == b"first"
    storage.put_bytes(path, b"third")  # a plain put overwrites (the heartbeat)
    assert storage.read_bytes(path) == b"third"


def _wait(cond, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_lock_then_sigkill_then_resume_from_bucket_alone(s3, source, tmp_path, monkeypatch):
    """A run in another process holds the lock: a second run is refused; that process is
    SIGKILLed mid-run; a resume with fresh temp dirs finishes from the bucket alone and does
    not redo the places the killed run logged."""
    n = 4
    url = f"s3://{BUCKET}/killed/pi"
    kw = local_kw(source, num_workers=1, fetch_threads=1, chunk_size=1)
    for k in ("show_progress", "temporal"):  # the driver script sets them
        kw.pop(k)
    # the places after the first two wait until the run is killed: with timing alone a loaded
    # machine could start the model actor after every place was fetched and finish them all
    # before the kill (as it did to the Earth Engine killed-driver test)
    hold = tmp_path / "hold"
    hold.touch()
    slow_provider = faulty_local(source, latency_s=0.7, hold_after=2, hold_while=str(hold))
    slow = {**kw, **slow_provider}
    first = subprocess.Popen(
        driver_cmd(points(n), **slow, out=url, layout="per_item"),
        env=child_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        logged = lambda: any("/log.d/" in k for k in _objects("killed/"))  # noqa: E731
        assert _wait(lambda: logged() or first.poll() is not None, 120)
        assert first.poll() is None, first.stdout.read()[-3000:]
        lock = json.loads(_fs().cat_file(f"{BUCKET}/killed/pi/_rs_embed_ray/lock"))
        assert lock["pid"] == first.pid
        with pytest.raises(OutputLockedError, match=f"pid {first.pid}"):
            export_batch(**local_kw(source), spatials=points(n), out=url, layout="per_item")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        hold.unlink()
    # a place is complete once its sidecar (written after its array) is there
    done_before = [k for k in _objects("killed/pi") if k.endswith(".json") and "/_rs" not in k]
    assert len(done_before) < n  # killed mid-run
    # "another machine": nothing local survives (fresh temp dirs for uploads and reads)
    fresh = tmp_path / "fresh_tmp"
    fresh.mkdir()
    monkeypatch.setenv("TMPDIR", str(fresh))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(fresh))
    monkeypatch.setattr(storage, "_CACHE", [])
    # the same request (its provider's options are part of it), the hold's file gone
    same = {**local_kw(source, num_workers=1, fetch_threads=1, chunk_size=1), **slow_provider}
    res = export_batch(**same, spatials=points(n), out=url, layout="per_item", resume=True)
    assert [r["status"] for r in res] == ["ok"] * n
    assert sum(bool(r.get("resume_skipped")) for r in res) == len(done_before)
    loaded = load_export(url)  # per_item npz, read back from the bucket
    assert np.asarray(loaded.models["spectral_stats"].embeddings).shape == (n, 20)
    names = [f"p{i:05d}" for i in range(n)]
    objs = _objects("killed/pi")
    assert all(f"{BUCKET}/killed/pi/{m}.{e}" in objs for m in names for e in ("npz", "json"))
    assert not any(k.endswith("/_rs_embed_ray/lock") for k in _objects("killed/"))
    _no_secret_anywhere("killed/")


def _cli(pts: Path, out: str, source: Path) -> list[str]:
    return [
        "export", "--points", str(pts), "--models", "spectral_stats", "--start", "2022-06-01",
        "--end", "2022-09-01", "--out", out, "--backend", "local", "--source", str(source),
        "--no-progress",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("out", "env", "needle"),
    [
        ("s3://Bad_Bucket!/x", {}, "not a valid bucket name"),
        ("s3://no-such-bucket-rs/x", {}, "does not exist"),
        (f"s3://{BUCKET}/nocreds", {"AWS_ACCESS_KEY_ID": None}, "credentials"),
        (f"s3://{BUCKET}/nocreds", {"AWS_SECRET_ACCESS_KEY": "not-the-secret-0"}, "credentials"),
        (f"s3://{BUCKET}/nocreds", {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY000"}, "credentials"),
        ("ftp://host/x", {}, "not supported"),
    ],
)
def test_bad_output_location_exit_2_before_any_work(
    s3, source, tmp_path, monkeypatch, out, env, needle
):
    pts = tmp_path / "p.csv"
    pts.write_text("name,lon,lat,buffer_m\na,15.0,45.0,160\n")
    for k, v in env.items():
        if v is None:  # no credentials at all
            monkeypatch.delenv(k)
            monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        else:  # credentials the server does not accept
            monkeypatch.setenv(k, v)
    _clear_fs_cache()
    try:
        res = CliRunner().invoke(main, _cli(pts, out, source))
    finally:
        _clear_fs_cache()
    monkeypatch.undo()  # the credentials back, to look into the bucket
    _clear_fs_cache()
    assert res.exit_code == 2, res.output
    assert needle in res.output and res.output.count("error:") == 1, res.output
    assert SECRET not in res.output and KEY_ID not in res.output
    assert _objects("nocreds") == [] and _objects("x") == []  # nothing written, no lock


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("s3://ab/x", "not a valid bucket name"),  # too short
        ("s3://my_bucket/x", "not a valid bucket name"),  # "_" is GCS-only
        ("s3://-bucket/x", "not a valid bucket name"),
        ("s3://192.168.1.1/x", "not a valid bucket name"),
        ("gs://UPPER/x", "not a valid bucket name"),
        ("s3://my-bucket", "whole bucket"),
        ("az://container/x", "not supported"),
    ],
)
def test_check_url_names_what_to_change(url, needle):
    """The syntax checks need no server (the bucket's existence is checked against moto
    above)."""
    from rs_embed_ray.errors import ModelError

    with pytest.raises(ModelError, match=needle):
        storage.check_url(url)
    storage.check_url("gs://my_bucket.v2/prefix")  # valid on GCS
    storage.check_url("s3://my-bucket.v2/prefix/")  # valid on S3


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
def test_lock_limits_on_s3(s3_server, case):
    """Conditional writes on the ETag (If-Match), checked by moto (tests/io/lock_cases.py)."""
    case(f"s3://{BUCKET}/locks/{case.__name__}/lock")
