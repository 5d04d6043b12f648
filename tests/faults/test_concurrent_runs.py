"""Two runs pointed at the same output at once: the second is refused with
OutputLockedError (API) / exit 1 (CLI) before it touches anything, and the first finishes
untouched. Stale locks of dead runs are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from rs_embed_ray import export_batch
from rs_embed_ray.cli import main
from rs_embed_ray.errors import OutputLockedError
from rs_embed_ray.io.state import RunState
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points
from tests.faults.conftest import (
    REPO,
    assert_per_item_complete,
    child_env,
    counts,
    driver_cmd,
    local_kw,
    manifest_intact,
    state_dir,
)

N = 6


def snapshot(root):
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        # what the first run itself keeps changing: its log, shards, run.json, lock
        if p.is_file()
        and p.name not in ("log.jsonl", "run.json", "lock", "final.json")
        and "patches" not in p.parts
        and "embeds" not in p.parts
    }


def wait_for(cond, timeout=180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.usefixtures("ray_cluster")
def test_second_process_is_refused_and_first_finishes(tmp_path, raster_source):
    out = tmp_path / "pi"
    state = state_dir(out, "per_item")
    kw = local_kw(raster_source, num_workers=1, fetch_threads=1)
    for k in ("show_progress", "temporal"):  # the driver script sets them
        kw.pop(k)
    first = subprocess.Popen(
        driver_cmd(points(N), **{**kw, **faulty_local(raster_source, latency_s=0.5)},
                   out=str(out), layout="per_item"),
        env=child_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: (state / "log.jsonl").exists() or first.poll() is not None)
        assert first.poll() is None, first.stdout.read()[-3000:]
        before = snapshot(out)
        # the API
        with pytest.raises(OutputLockedError, match=f"pid {first.pid}") as ei:
            export_batch(**local_kw(raster_source), spatials=points(N), out=str(out),
                         layout="per_item")  # fmt: skip
        assert "wait for it to finish or choose another output" in str(ei.value)
        # the CLI: same error, exit 1
        pts = tmp_path / "p.csv"
        pts.write_text("lon,lat,buffer_m\n" + "\n".join(
            f"{p.lon},{p.lat},{p.buffer_m}" for p in points(N)) + "\n")  # fmt: skip
        res = CliRunner().invoke(main, [
            "export", "--points", str(pts), "--models", "spectral_stats", "--backend", "local",
            "--source", str(raster_source), "--start", "2022-06-01", "--end", "2022-09-01",
            "--out", str(out), "--no-progress"])  # fmt: skip
        assert res.exit_code == 1 and "Another export" in res.output, res.output
        # and with resume=True (it would reset nothing, but must not even read-modify)
        with pytest.raises(OutputLockedError):
            export_batch(**local_kw(raster_source), spatials=points(N), out=str(out),
                         layout="per_item", resume=True)  # fmt: skip
        after = snapshot(out)
        assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
        assert first.wait(timeout=300) == 0
        assert "DONE" in first.stdout.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert_per_item_complete(out, [f"p{i:05d}" for i in range(N)])
    assert counts(state, "patch") == {i: 1 for i in range(N)}
    assert not (state / "lock").exists()


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.parametrize("layout", ["combined"])
def test_second_run_in_the_same_process_is_refused(tmp_path, raster_source, layout):
    out = tmp_path / ("pi" if layout == "per_item" else "c.npz")
    state = state_dir(out, layout)
    box: dict = {}

    def first():
        try:
            box["res"] = export_batch(
                **local_kw(raster_source, **faulty_local(raster_source, latency_s=0.5)),
                spatials=points(4), out=str(out), layout=layout,
            )  # fmt: skip
        except BaseException as exc:  # pragma: no cover - reported below
            box["exc"] = exc

    t = threading.Thread(target=first)
    t.start()
    try:
        assert wait_for(lambda: (state / "lock").exists() or not t.is_alive())
        assert t.is_alive(), box
        with pytest.raises(OutputLockedError, match="this process"):
            export_batch(**local_kw(raster_source), spatials=points(4), out=str(out),
                         layout=layout)  # fmt: skip
    finally:
        t.join(timeout=300)
    assert "exc" not in box, box.get("exc")
    if layout == "per_item":
        assert [r["status"] for r in box["res"]] == ["ok"] * 4
        assert_per_item_complete(out, [f"p{i:05d}" for i in range(4)])
    else:
        assert box["res"]["status"] == "ok"
        manifest_intact(out)
    assert counts(state, "patch") == {i: 1 for i in range(4)}


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_locks_are_taken_over_and_foreign_ones_refused(tmp_path):
    host = socket.gethostname()
    st = RunState(tmp_path / "_rs_embed_ray")
    st.folder.mkdir()
    lock = st.folder / "lock"
    # a run killed with SIGKILL left its lock; the pid may even belong to a live process now
    for pid in (_dead_pid(), os.getppid(), os.getpid()):
        lock.write_text(json.dumps({"pid": pid, "host": host, "since": "earlier"}))
        st.acquire()
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        st.release()
        assert not lock.exists()
    # another host's lock: flock may not reach across hosts, so the file is trusted
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": "earlier"}))
    with pytest.raises(OutputLockedError, match=r"delete .*lock"):
        st.acquire()
    assert lock.exists()
    lock.unlink()
    # held: a second RunState on the same folder is refused, then gets it after release
    st.acquire()
    other = RunState(tmp_path / "_rs_embed_ray")
    with pytest.raises(OutputLockedError):
        other.acquire()
    st.release()
    other.acquire()
    other.release()
