"""Zarr regions written while batches finish (issue 18 item 1): a region's task runs as soon
as all its places have their embeddings, overlapping the fetch and forward of later batches,
and the final step only commits the manifest and consolidates the metadata.

Proof of overlap from the run's own log: each embedding record carries ``done_at``, when the
shard writer right after the forward wrote its batch (the worker's clock), and each region
written while batches finished is a ``region`` record with ``done_at``, when its task finished
(that task's clock; same machine). A run whose regions were all written after the last batch
(the old final write step) fails ``test_regions_are_written_before_the_last_batch``.
Real exports on the session's Ray cluster: gse grids from the Earth Engine emulator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from rs_embed_ray.io import zarrstore as zs

N = 12


def _export(out: Path, emu_url: str, fmt: str, **kw: Any) -> dict[str, Any]:
    from rs_embed_ray import OutputSpec, PointBuffer, TemporalSpec, export_batch

    places = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 120.0) for i in range(N)]
    return export_batch(
        spatials=places,
        temporal=TemporalSpec.year(2022),
        models=["gse"],
        output=OutputSpec.grid(),
        backend="gee",
        provider_options={"url": emu_url},
        out=str(out),
        layout="combined",
        format=fmt,
        save_inputs=False,
        show_progress=False,
        chunk_size=1,  # one place per inference batch: N batches
        num_workers=1,
        fetch_threads=1,
        **kw,
    )


def _log(out: Path) -> list[dict[str, Any]]:
    state = out.with_name(out.name + ".rs_embed_ray") / "log.jsonl"
    return [json.loads(line) for line in state.read_text().splitlines() if line.strip()]


def _marked_region(folder: Path) -> bool:
    """Whether a region task has finished: its marker (the task's last write) is a chunk of
    its own in the store's hidden group. (The run's log cannot tell yet: the driver logs
    finished regions when the next batch comes, and the gate holds the next batches.)"""
    marks = [p for p in folder.glob(f"*.zarr/{zs.MARKS}/*/c/**/*") if p.is_file()]
    return bool(marks)


@pytest.fixture(scope="module")
def streamed(module_scratch, ray_cluster) -> dict[str, Any]:
    """One place per region and per batch, two region tasks in flight. (Its values are
    compared with netCDF's below, on the same shards, without Ray.)"""
    from rs_embed_ray.testing.ee_emulator import EEEmulator
    from rs_embed_ray.testing.faults import hold_from

    mp = pytest.MonkeyPatch()
    mp.setattr(zs, "REGION_BYTES", 1)  # the driver plans regions: one place each
    folder = module_scratch("stream")
    try:
        # the places arrive over time, as in a real run: the later half's pixels wait until a
        # first region is written (timing alone failed on a loaded machine, where the model
        # actor started after every place was fetched), so the test measures the overlap
        # rather than how fast a gse batch goes through the actor or the machine's load
        with EEEmulator(latency_ms=200, retry_after_s=0) as emu:
            emu.pixels_gate = hold_from(N // 2, lambda: _marked_region(folder))
            man = _export(folder / "c", emu.url, "zarr", writer_workers=2)
    finally:
        mp.undo()
    return {"man": man, "log": _log(folder / "c")}


def test_regions_are_written_before_the_last_batch(streamed):
    recs = streamed["log"]
    regions = [r for r in recs if r["kind"] == "region"]
    embeds = [r for r in recs if r["kind"] == "embed" and r["status"] == "ok"]
    assert len(embeds) == N and all("done_at" in r for r in embeds)
    # every region (one place each) was written by a task while the stages ran, none at the end
    assert sorted(r["index"] for r in regions) == list(range(N))
    last_batch = max(r["done_at"] for r in embeds)
    early = [r for r in regions if r["done_at"] < last_batch]
    assert early, "no region was written before the last batch's embeddings were"
    # and a region was written before the places of later batches had their embeddings
    first = min(r["done_at"] for r in regions)
    assert sum(r["done_at"] > first for r in embeds) >= 1


def test_streamed_store_is_complete_and_read_by_xarray(streamed):
    man = streamed["man"]
    assert man["status"] == "ok"
    with xr.open_zarr(man["zarr_path"]) as z:
        emb = z["embeddings__gse"]
        assert emb.dims == ("point", "band", "y", "x") and z.sizes["point"] == N
        # every place's region was filled by a streamed task (no fill value left)
        assert np.isfinite(emb.values).any(axis=(1, 2, 3)).all()
    root = zs.open_root(man["zarr_path"], "r")
    assert zs.MANIFEST_ATTR in root.attrs and zs.regions_intact(man["zarr_path"])


# -- the stream without Ray: the same shards as test_zarr_format's netCDF comparisons ---------


def _stream_then_finish(tmp_path: Path, failed: tuple[int, ...]) -> tuple[list[Any], Any]:
    """Feed the records to a CombinedStream place by place (as batches would come), run its
    jobs in order, then the final step with the jobs done; returns (jobs run, stream)."""
    from rs_embed_ray.io.assemble import write_combined
    from rs_embed_ray.io.formats import Places
    from rs_embed_ray.io.stream import CombinedStream
    from tests.io.test_zarr_format import Shards, _ctx, _model

    sh = Shards(tmp_path / "shards", 10, (4, 3, 3), failed=failed)
    n, ctx = 10, _ctx("zarr", [_model("m")], save_inputs=True)
    spatials = [{"lon": 10.0 + i, "lat": 45.0, "buffer_m": 100.0} for i in range(n)]
    names, centers = [f"p{i:05d}" for i in range(n)], [(10.0 + i, 45.0) for i in range(n)]
    places = Places(spatials, names, centers, ctx["temporal"], None)
    store = tmp_path / "c.zarr"
    stream = CombinedStream(ctx, store, places)
    patch: dict[str, dict[int, Any]] = {"g": {}}
    embed: dict[str, dict[int, Any]] = {"m": {}}
    ran = []
    for i in range(n):  # one place per batch: its patch, then its embedding
        patch["g"][i] = sh.patch[i]
        for job in stream.update(patch, embed, "patch", "g", [i]):
            job.run()
            ran.append(job)
        embed["m"][i] = sh.embed[i]
        for job in stream.update(patch, embed, "embed", "m", [i]):
            job.run()
            ran.append(job)
    write_combined(
        ctx, store, spatials=spatials, names=names, centers=centers,
        patch_src=patch, embed_src=embed, fingerprint="fp", done_jobs=frozenset(ran),
    )  # fmt: skip
    sh.write("netcdf", tmp_path / "c.nc")
    return ran, stream


def test_stream_hands_out_every_region_once_and_the_store_matches_netcdf(tmp_path, monkeypatch):
    from tests.io.test_zarr_format import _same_dataset

    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 3 * 8 * 8 * 3)  # 3 places per input region
    ran, stream = _stream_then_finish(tmp_path, failed=())
    assert stream.enabled and len(ran) == len(stream.regions) == len(set(ran))
    assert all(not p for p in stream.pending)  # every region was handed out while streaming
    _same_dataset(tmp_path / "c.nc", tmp_path / "c.zarr")


def test_a_failed_place_stops_the_stream_and_the_end_writes_it_right(tmp_path, monkeypatch):
    """Place 7 fails: the all-ok layout no longer holds (embeddings stacked with indices), so
    the stream stops there and the final step creates the store afresh."""
    from tests.io.test_zarr_format import _same_dataset

    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 3 * 8 * 8 * 3)
    ran, stream = _stream_then_finish(tmp_path, failed=(7,))
    assert not stream.enabled and ran  # some regions went out before place 7 failed
    _same_dataset(tmp_path / "c.nc", tmp_path / "c.zarr")
