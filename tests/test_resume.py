"""Resume: skip exactly the finished (item, model) pairs, retry failed ones, and end with the
same files as an uninterrupted run — also after the driver was killed (new process, new Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray import TemporalSpec, export_batch
from rs_embed_ray.io.state import RunState
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points

pytestmark = pytest.mark.usefixtures("ray_cluster")

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
VOLATILE = {"created_at", "completed_at", "resume_skipped", "resume_output_path"}


def kw(source, ckpt, /, **extra):
    d = dict(
        temporal=WINDOW,
        models=["remoteclip", "spectral_stats"],
        backend="local",
        source=str(source),
        weights={"remoteclip": str(ckpt)},
        show_progress=False,
        num_workers=2,
        chunk_size=4,
    )
    d.update(extra)
    return d


def patch_counts(state_dir: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in RunState(state_dir).read_log():
        if r["kind"] == "patch":
            counts[r["index"]] = counts.get(r["index"], 0) + 1
    return counts


def strip(man: dict) -> dict:
    """A manifest without timestamps and paths (which differ between two output folders) and
    without embedding digests: a place embedded in a different batch can differ in the last
    float bits (BLAS summation order), so embeddings are compared by value instead."""
    out = {}
    for k, v in man.items():
        if k in VOLATILE or k.endswith("_path"):
            continue
        out[k] = v
    for e in out.get("models", []):
        if isinstance(e.get("embedding"), dict):
            e["embedding"] = {k: v for k, v in e["embedding"].items() if k != "sha1"}
    return out


def assert_same_export(a: Path, b: Path, names: list[str], ext: str = ".npz") -> None:
    for n in names:
        ma = json.loads((a / f"{n}.json").read_text())
        mb = json.loads((b / f"{n}.json").read_text())
        assert strip(ma) == strip(mb), n
        with np.load(a / f"{n}{ext}") as za, np.load(b / f"{n}{ext}") as zb:
            assert sorted(za.files) == sorted(zb.files)
            for k in za.files:
                np.testing.assert_allclose(za[k], zb[k], rtol=1e-5, atol=1e-6, err_msg=f"{n}:{k}")


def test_failed_items_are_retried_on_resume(tmp_path, raster_source, remoteclip_ckpt):
    spatials = points(6)
    marker = tmp_path / "fixed"
    bad = spatials[2].center()
    faults = faulty_local(raster_source, fail_items=[bad], unless_exists=str(marker))
    out = tmp_path / "pi"
    res = export_batch(
        **kw(raster_source, remoteclip_ckpt, **faults),
        spatials=spatials,
        out=str(out),
        layout="per_item",
        continue_on_error=True,
    )
    assert [r["status"] for r in res] == ["ok", "ok", "failed", "ok", "ok", "ok"]
    failed = res[2]["models"][0]
    assert failed["status"] == "failed" and "injected fault" in failed["error"]
    assert (out / "p00002.npz").exists()  # the place's file is written, with its errors
    log = [r for r in RunState(out / "_rs_embed_ray").read_log() if r["status"] == "failed"]
    assert {r["index"] for r in log} == {2} and {r["kind"] for r in log} == {"patch", "embed"}
    before = {i: (out / f"p{i:05d}.npz").stat().st_mtime_ns for i in (0, 1, 3)}

    marker.write_text("ok")
    res2 = export_batch(
        **kw(raster_source, remoteclip_ckpt, **faults),
        spatials=spatials,
        out=str(out),
        layout="per_item",
        resume=True,
        continue_on_error=True,
    )
    assert all(r["status"] == "ok" for r in res2)
    assert [bool(r.get("resume_skipped")) for r in res2] == [True, True, False, True, True, True]
    # only the failed place was fetched again; finished files were not rewritten
    assert patch_counts(out / "_rs_embed_ray") == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1}
    assert before == {i: (out / f"p{i:05d}.npz").stat().st_mtime_ns for i in (0, 1, 3)}

    ref = tmp_path / "ref"
    export_batch(
        **kw(raster_source, remoteclip_ckpt, **faulty_local(raster_source)),  # no faults
        spatials=spatials,
        out=str(ref),
        layout="per_item",
    )
    assert_same_export(out, ref, [f"p{i:05d}" for i in range(6)])


def test_combined_partial_then_resume(tmp_path, raster_source, remoteclip_ckpt):
    spatials = points(5)
    marker = tmp_path / "fixed"
    faults = faulty_local(
        raster_source, fail_items=[spatials[1].center()], unless_exists=str(marker)
    )
    out = tmp_path / "c.npz"
    args = dict(
        spatials=spatials,
        out=str(out),
        layout="combined",
        continue_on_error=True,
    )
    res = export_batch(**kw(raster_source, remoteclip_ckpt, **faults), **args)
    assert res["status"] == "partial"
    entry = res["models"][0]
    assert entry["status"] == "partial" and entry["failed_indices"] == [1]
    assert entry["inputs"]["indices"] == [0, 2, 3, 4]
    with np.load(out) as z:
        assert "embedding__remoteclip__00000" in z.files and "embeddings__remoteclip" not in z.files

    marker.write_text("ok")
    res2 = export_batch(**kw(raster_source, remoteclip_ckpt, **faults), **args, resume=True)
    assert res2["status"] == "ok"
    assert patch_counts(out.with_name("c.rs_embed_ray")) == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1}
    # a complete combined file short-circuits the next resume
    res3 = export_batch(**kw(raster_source, remoteclip_ckpt, **faults), **args, resume=True)
    assert res3["resume_skipped"] is True

    ref = tmp_path / "ref.npz"
    export_batch(
        **kw(raster_source, remoteclip_ckpt, **faulty_local(raster_source)),  # no faults
        spatials=spatials,
        out=str(ref),
        layout="combined",
    )
    with np.load(out) as za, np.load(ref) as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            np.testing.assert_allclose(za[k], zb[k], rtol=1e-5, atol=1e-6)


def test_without_continue_on_error_the_run_stops_and_resume_finishes(
    tmp_path, raster_source, remoteclip_ckpt
):
    from rs_embed_ray.pipeline.runner import StageFailed

    spatials = points(4)
    marker = tmp_path / "fixed"
    faults = faulty_local(
        raster_source, fail_items=[spatials[3].center()], unless_exists=str(marker)
    )
    out = tmp_path / "pi"
    with pytest.raises(StageFailed, match="resume=True"):
        export_batch(
            **kw(raster_source, remoteclip_ckpt, **faults),
            spatials=spatials,
            out=str(out),
            layout="per_item",
        )
    assert not (out / "_rs_embed_ray" / "lock").exists()
    marker.write_text("ok")
    res = export_batch(
        **kw(raster_source, remoteclip_ckpt, **faults),
        spatials=spatials,
        out=str(out),
        layout="per_item",
        resume=True,
    )
    assert all(r["status"] == "ok" for r in res)
    counts = patch_counts(out / "_rs_embed_ray")
    assert all(c == 1 for i, c in counts.items() if i != 3)


def test_transient_fetch_errors_are_retried(tmp_path, raster_source, remoteclip_ckpt):
    spatials = points(4)
    faults = faulty_local(raster_source, transient_every=True)
    res = export_batch(
        **kw(raster_source, remoteclip_ckpt, **faults),
        spatials=spatials,
        out=str(tmp_path / "pi"),
        layout="per_item",
        max_retries=2,
    )
    assert all(r["status"] == "ok" for r in res)
    res = export_batch(
        **kw(raster_source, remoteclip_ckpt, **faults),
        spatials=spatials,
        out=str(tmp_path / "pi0"),
        layout="per_item",
        max_retries=0,
        continue_on_error=True,
    )
    assert all(r["status"] == "failed" for r in res)
    assert "transient" in res[0]["models"][0]["error"]


SCRIPT = """
import sys, json
from rs_embed_ray import export_batch, TemporalSpec, PointBuffer
from rs_embed_ray.testing.faults import faulty_local
spec = json.loads(sys.argv[1])
export_batch(
    spatials=[PointBuffer(*p) for p in spec["points"]],
    temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
    models=["remoteclip", "spectral_stats"],
    **faulty_local(spec["source"], latency_s=spec["latency"]),
    weights={"remoteclip": spec["ckpt"]}, out=spec["out"], layout=spec["layout"],
    show_progress=False, num_workers=1, chunk_size=2, resume=spec["resume"],
    ray_address="local",
)
print("DONE")
"""


@pytest.mark.parametrize("layout", ["per_item", "combined"])
def test_resume_after_killed_driver(tmp_path, raster_source, remoteclip_ckpt, layout):
    """SIGKILL the driver mid-run; a new process with a new Ray cluster finishes the rest,
    refetches nothing that was logged, and the files equal an uninterrupted run's."""
    spatials = points(10)
    out = tmp_path / ("pi" if layout == "per_item" else "c.npz")
    state = out / "_rs_embed_ray" if layout == "per_item" else out.with_name("c.rs_embed_ray")
    spec = {
        "points": [[s.lon, s.lat, s.buffer_m] for s in spatials],
        "source": str(raster_source),
        "ckpt": str(remoteclip_ckpt),
        "out": str(out),
        "layout": layout,
        "resume": False,
        "latency": 0.4,
    }
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(spec)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).parents[1],
    )
    deadline = time.time() + 240
    log_file = state / "log.jsonl"
    while time.time() < deadline:
        n = len(list(RunState(state).read_log())) if log_file.exists() else 0
        if n >= 2 or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = patch_counts(state)
    embedded = [r for r in RunState(state).read_log() if r["kind"] == "embed"]
    assert done_before and len(embedded) < 20  # killed mid-run

    spec.update(resume=True, latency=0.0)
    out2 = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        cwd=Path(__file__).parents[1],
    )
    assert "DONE" in out2.stdout, out2.stdout[-2000:] + out2.stderr[-3000:]
    counts = patch_counts(state)
    assert all(counts[i] == 1 for i in done_before), counts  # nothing fetched twice
    assert sorted(counts) == list(range(10))

    ref = tmp_path / ("ref" if layout == "per_item" else "ref.npz")
    export_batch(
        **kw(raster_source, remoteclip_ckpt, **faulty_local(raster_source)),  # no latency
        spatials=spatials,
        out=str(ref),
        layout=layout,
    )
    if layout == "per_item":
        assert_same_export(out, ref, [f"p{i:05d}" for i in range(10)])
    else:
        with np.load(out) as za, np.load(ref) as zb:
            assert sorted(za.files) == sorted(zb.files)
            for k in za.files:
                np.testing.assert_allclose(za[k], zb[k], rtol=1e-5, atol=1e-6)
        ma = json.loads(out.with_suffix(".json").read_text())
        mb = json.loads(ref.with_suffix(".json").read_text())
        assert strip(ma) == strip(mb)
