"""Issue 21 on a real local Ray cluster (local raster backend): nothing finished is lost when
a run stops, and per-item resume without sidecars verifies files from the run's log."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rs_embed_ray
from rs_embed_ray import TemporalSpec, export_batch
from rs_embed_ray.io.state import RunState
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points

pytestmark = pytest.mark.usefixtures("ray_cluster")

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def kw(source, /, **extra):
    d = dict(
        temporal=WINDOW,
        models=["spectral_stats"],
        backend="local",
        source=str(source),
        show_progress=False,
        num_workers=2,
        chunk_size=2,
    )
    d.update(extra)
    return d


def embed_ok(state_dir) -> set[int]:
    latest = RunState(state_dir).latest()
    return {i for (k, _, i), r in latest.items() if k == "embed" and r["status"] == "ok"}


def test_stop_writes_finished_places_and_raises_exported_error(tmp_path, raster_source):
    spatials = points(8)
    marker = tmp_path / "fixed"
    faults = faulty_local(
        raster_source, fail_items=[spatials[7].center()], unless_exists=str(marker)
    )
    out = tmp_path / "pi"
    with pytest.raises(rs_embed_ray.ExportStopped) as info:
        export_batch(
            **kw(raster_source, **faults),
            spatials=spatials,
            out=str(out),
            layout="per_item",
        )
    err = info.value
    assert (err.index, err.name) == (7, "p00007") and err.stage.startswith("fetch")
    assert "injected fault" in err.reason and "resume=True" in str(err)
    finished = embed_ok(out / "_rs_embed_ray")
    assert finished and 7 not in finished
    # every place that had finished has its final file and sidecar; the failed one has none
    written = {int(p.stem[1:]) for p in out.glob("p*.npz")}
    assert written == finished
    for i in finished:
        man = json.loads((out / f"p{i:05d}.json").read_text())
        assert man["status"] == "ok" and man["models"][0]["embedding"]["shape"] == [20]
    before = {i: (out / f"p{i:05d}.npz").stat().st_mtime_ns for i in finished}

    marker.write_text("ok")
    res = export_batch(
        **kw(raster_source, **faults),
        spatials=spatials,
        out=str(out),
        layout="per_item",
        resume=True,
    )
    assert all(r["status"] == "ok" for r in res)
    assert {i for i, r in enumerate(res) if r.get("resume_skipped")} == finished
    assert before == {i: (out / f"p{i:05d}.npz").stat().st_mtime_ns for i in finished}


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_resume_without_sidecars_skips_intact_files(tmp_path, raster_source, fmt):
    spatials = points(4)
    out = tmp_path / "pi"
    args = dict(**kw(raster_source), spatials=spatials, out=str(out), layout="per_item", format=fmt)
    args["save_manifest"] = False
    export_batch(**args)
    ext = ".npz" if fmt == "npz" else ".nc"
    assert not list(out.glob("*.json"))
    mtimes = {i: (out / f"p{i:05d}{ext}").stat().st_mtime_ns for i in range(4)}
    # place 2's file is damaged: resume redoes it, and only it
    if fmt == "npz":
        with np.load(out / f"p00002{ext}") as z:
            arrays = {k: z[k] for k in z.files}
        arrays["embedding__spectral_stats"] = arrays["embedding__spectral_stats"] + 1.0
        np.savez_compressed(out / "p00002.npz", **arrays)
    else:
        (out / "p00002.nc").write_bytes(b"not a netcdf file")
    res = export_batch(**args, resume=True)
    assert [bool(r.get("resume_skipped")) for r in res] == [True, True, False, True]
    assert all(r["status"] == "ok" for r in res)
    assert res[0]["reason"] == "output_exists" and res[0]["point_index"] == 0
    for i in (0, 1, 3):
        assert (out / f"p{i:05d}{ext}").stat().st_mtime_ns == mtimes[i]
    patches = [r for r in RunState(out / "_rs_embed_ray").read_log() if r["kind"] == "patch"]
    assert sorted(r["index"] for r in patches) == [0, 1, 2, 2, 3]
    if fmt == "npz":  # a different request (another window) is not skipped
        res = export_batch(**{**args, "temporal": TemporalSpec.year(2022)}, resume=True)
        assert not any(r.get("resume_skipped") for r in res)


def test_manifest_errors_and_inspection_as_the_contract_records_them(tmp_path, raster_source):
    spatials = points(3)
    common = dict(
        **kw(raster_source, **faulty_local(raster_source, fail_items=[spatials[1].center()])),
        spatials=spatials,
        continue_on_error=True,
        fail_on_bad_input=True,
    )
    res = export_batch(**common, out=str(tmp_path / "pi"), layout="per_item")
    assert [r["status"] for r in res] == ["ok", "failed", "ok"]
    bad = res[1]["models"][0]
    # repr of the model's error; a failed fetch in rs-embed's words (contract Appendix A)
    assert bad["error"].startswith(
        'ProviderError("Prefetch previously failed for model=spectral_stats, index=1, sensor='
    )
    assert bad["error"].endswith(": ProviderError('injected fault for place (14.98, 44.97)')\")")
    # input checks ran (fail_on_bad_input=True): the stored input carries their report
    insp = res[0]["models"][0]["input"]["inspection"]
    assert insp["ok"] is True and insp["input_ndim"] == 3 and insp["n_frames"] is None
    assert insp["sensor"]["bands"] == ["B2", "B3", "B4", "B8"]
    assert len(insp["report"]["band_std"]) == 4
    on_disk = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    assert on_disk["models"][0]["input"]["inspection"] == insp

    comb = export_batch(**common, out=str(tmp_path / "c"), layout="combined")
    entry = comb["models"][0]
    assert entry["failed_indices"] == [1] and entry["status"] == "partial"
    assert entry["errors_by_index"]["1"] == bad["error"]
