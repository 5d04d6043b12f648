"""Typed run options, the Ray-free resume decision and the sizing rules (issue 14, items 1-3),
checked without a cluster: the plan, real shard files and a real run log on disk."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from rs_embed_ray import PointBuffer, TemporalSpec
from rs_embed_ray.api import plan_export
from rs_embed_ray.cli import export, main
from rs_embed_ray.io.manifest import array_sha1
from rs_embed_ray.io.shards import write_shard
from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.options import (
    ExportConfig,
    ExportOptions,
    FetchOptions,
    QuotaOptions,
    RunOptions,
    WriteOptions,
    default,
)
from rs_embed_ray.pipeline import sizing
from rs_embed_ray.resume import EarlierRun
from tests.conftest import tiny_raster_source

T = TemporalSpec.range("2022-06-01", "2022-09-01")
P = [PointBuffer(15.0, 45.0, 160.0), PointBuffer(15.01, 45.0, 160.0)]


def base(tmp_path, **kw):
    source = str(tiny_raster_source(tmp_path))
    d = dict(spatials=P, temporal=T, models=["remoteclip"], backend="local", source=source)
    d.update(out_dir=str(tmp_path / "o"), **kw)
    return d


# -- the options model -----------------------------------------------------------------------


def test_chunk_size_sets_the_four_sizes_and_other_options_their_own(tmp_path):
    plan = plan_export(
        **base(
            tmp_path,
            chunk_size=5,
            num_workers=7,
            fetch_threads=3,
            writer_workers=4,
            max_retries=2,
            retry_backoff_s=0.5,
            ee_max_concurrent=9,
            ee_max_qps=12.5,
            ee_quota_actor=" shared-q ",
            spatial_batching=True,
            precision="float32",
            continue_on_error=True,
        )
    )
    run = plan.run
    assert (run.block_rows, run.fetch.max_batch, run.infer.batch_size, run.write.max_batch) == (
        5,
        5,
        5,
        5,
    )
    assert (run.fetch.in_flight, run.fetch.threads_per_actor, run.write.writers) == (7, 3, 4)
    assert (run.retry.max_retries, run.retry.backoff_s) == (2, 0.5)
    assert run.quota == QuotaOptions(9, 12.5, "shared-q")
    assert run.fetch.spatial_batching and run.infer.precision == "float32"
    assert run.continue_on_error and not run.resume
    assert not hasattr(plan, "extra")


def test_run_options_are_frozen_and_travel_as_one_object(tmp_path):
    plan = plan_export(**base(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.run.fetch.in_flight = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.run = plan.run  # type: ignore[misc]
    # what a Ray worker receives: the group objects survive a pickle round trip unchanged
    import pickle

    assert pickle.loads(pickle.dumps(plan.run)) == plan.run


def test_defaults_are_stated_once():
    """ExportConfig's and the CLI's defaults are ExportOptions' defaults (one home)."""
    for f in dataclasses.fields(ExportConfig):
        if f.name in ExportOptions.__dataclass_fields__ and f.name != "input_prep":
            assert f.default == default(f.name), f.name
    shown = {p.name: p.default for p in export.params}
    for name in ("chunk_size", "num_workers", "max_retries", "retry_backoff_s", "precision"):
        assert shown[name] == default(name), name
    assert shown["ee_max_concurrent"] == default("ee_max_concurrent")
    assert shown["fmt"] == default("format")
    # the run options of the defaults: every size is chunk_size's default
    o = ExportOptions(spatials=P, temporal=T, models=["remoteclip"])
    run = RunOptions.of(o)
    assert run.infer.batch_size == run.block_rows == default("chunk_size")
    assert run.fetch.threads_per_actor == default("fetch_threads")


def test_the_cli_plans_once(tmp_path, monkeypatch):
    """The export command resolves its request once. The run itself is replaced by a
    recorder here (test_cli.py runs it for real on Ray); planning is the real code."""
    import rs_embed_ray.api as api

    calls, ran = [], []
    real = api.build_plan
    monkeypatch.setattr(api, "build_plan", lambda o: calls.append(o) or real(o))
    monkeypatch.setattr(api, "run_planned", lambda plan: ran.append(plan) or [])
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat,name\n15.0,45.0,a\n", encoding="utf-8")
    source = tiny_raster_source(tmp_path)
    args = ["export", "--points", str(pts), "--models", "remoteclip", "--year", "2022"]
    args += ["--out", str(tmp_path / "o"), "--source", str(source), "--buffer-m", "160"]
    res = CliRunner().invoke(main, [*args, "--chunk-size", "3"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1 and len(ran) == 1
    assert ran[0].run.infer.batch_size == 3 and ran[0].names == ["a"]


# -- sizing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [1, 3, 8, 40, 200])
@pytest.mark.parametrize("threads_per_actor", [1, 4, 16])
@pytest.mark.parametrize("cpus", [1.0, 2.0, 16.0])
@pytest.mark.parametrize("quota", [None, QuotaOptions(5, 10.0, None)])
def test_fetch_sizing_never_exceeds_what_was_asked(in_flight, threads_per_actor, cpus, quota):
    for n in (1, 7, 500):
        opts = FetchOptions(in_flight, threads_per_actor, 16, False, False)
        for place_bytes, most in ((sizing.CALL_BYTES, 16), (4096, sizing.MAX_CALL_PLACES)):
            s = sizing.fetch_sizing(opts, quota, n, cpus, False, place_bytes)
            cap = min(in_flight, n, quota.max_concurrent if quota else in_flight)
            assert 1 <= s.actors * s.threads <= max(1, cap)
            assert s.actors <= max(2, 2 * int(cpus))
            assert 1 <= s.batch <= most and 0.05 <= s.cpus_per_actor <= 1.0


BIG = sizing.CALL_BYTES  # a place whose pixels fill a call alone
SMALL = 4 * 4 * 32 * 32  # spectral_stats' 4 bands, 32 x 32 pixels (160 m at 10 m)


def test_fetch_and_writer_batches():
    near = FetchOptions(8, 4, 200, True, False)
    assert sizing.fetch_batch(near, 3, 2, BIG) == sizing.MAX_CALL_PLACES  # whole chunks, capped
    far = dataclasses.replace(near, spatial_batching=False)
    # a short run still spreads over every actor: 10 places, 4 actors -> 2 per call
    assert sizing.fetch_batch(far, 10, 4, BIG) == 2
    assert sizing.fetch_batch(far, 10, 4, SMALL) == 2
    # small places: calls of MAX_CALL_PLACES where the run is long enough for every actor
    assert sizing.fetch_batch(far, 1000, 1, SMALL) == sizing.MAX_CALL_PLACES
    assert sizing.fetch_batch(far, 1000, 1, BIG) == sizing.MAX_CALL_PLACES  # chunk 200, capped
    near16 = dataclasses.replace(near, max_batch=16)
    assert sizing.fetch_batch(near16, 1000, 1, BIG) == 16  # chunk_size
    assert sizing.fetch_batch(near16, 1000, 1, SMALL) == sizing.MAX_CALL_PLACES
    # the actors' calls hold HELD_PLACES at most: 4 actors, 2 calls each -> 32 places a call
    held = sizing.HELD_PLACES // (4 * sizing.CALLS_PER_ACTOR)
    far16 = dataclasses.replace(far, max_batch=16)
    assert sizing.fetch_batch(far16, 4000, 4, SMALL) == held
    # ... but a long run's calls still grow for the driver's memory (MAX_CALLS)
    assert sizing.fetch_batch(far16, 1_000_000, 4, SMALL) == sizing.MAX_CALL_PLACES
    # spatial batching keeps whole chunks, and grows calls only while every actor gets two
    assert sizing.fetch_batch(near16, 100, 4, SMALL) == 16
    assert sizing.item_writer_batch(WriteOptions(2, 300, True), 10, BIG) == sizing.MAX_CALL_PLACES
    assert sizing.item_writer_batch(WriteOptions(2, 16, True), 5_000, BIG) == 16  # chunk_size
    assert sizing.item_writer_batch(WriteOptions(2, 16, True), 5_000, SMALL) == 64
    assert sizing.writers(8, 10, 4) == 3  # never more writers than batches
    assert sizing.n_blocks(10_000_000, 4) == sizing.MAX_BLOCKS


def test_call_places_by_pixels():
    """A call takes as many places as CALL_BYTES of pixels holds, between chunk_size and
    MAX_CALL_PLACES: 224 x 224 pixels of 4 bands (0.8 MB) -> 41 places; of 12 bands
    (2.4 MB) -> chunk_size; unknown (0) -> MAX_CALL_PLACES."""
    assert sizing.call_places(16, 1000, 4 * 4 * 224 * 224) == 41
    assert sizing.call_places(16, 1000, 4 * 12 * 224 * 224) == 16
    assert sizing.call_places(16, 1000, SMALL) == sizing.MAX_CALL_PLACES
    assert sizing.call_places(16, 1000, 0) == sizing.MAX_CALL_PLACES
    # a chunk_size under the default asks for a finer grain: kept as it is
    assert sizing.GROW_FROM_CHUNK == 16
    assert sizing.call_places(1, 1000, SMALL) == 1
    assert sizing.call_places(4, 1000, SMALL) == 4


@given(
    chunk=st.integers(1, 200),
    n=st.integers(0, 10_000_000),
    place_bytes=st.integers(0, 2**31),
)
def test_calls_grow_for_long_runs_within_their_bounds(chunk, n, place_bytes):
    """A stage makes at most about MAX_CALLS calls where MAX_CALL_PLACES allows it; a call
    never takes fewer places than chunk_size asks (nor more than MAX_CALL_PLACES), nor more
    pixels than CALL_BYTES unless chunk_size or the run's length asks for it."""
    per = sizing.call_places(chunk, n, place_bytes)
    least = min(chunk, sizing.MAX_CALL_PLACES)
    assert least <= per <= sizing.MAX_CALL_PLACES
    calls = -(-n // per)
    assert calls <= sizing.MAX_CALLS or per == sizing.MAX_CALL_PLACES
    asked = max(least, min(-(-n // sizing.MAX_CALLS), sizing.MAX_CALL_PLACES))
    if per > asked:  # grown by the pixels: within CALL_BYTES, from the default chunk up
        assert per * place_bytes <= sizing.CALL_BYTES or place_bytes == 0
        assert chunk >= sizing.GROW_FROM_CHUNK
    if n <= sizing.MAX_CALLS * chunk and place_bytes * chunk >= sizing.CALL_BYTES:
        assert per == least  # short runs of large places keep the user's chunk_size


def test_morton_keeps_neighbours_together():
    pts = [(15.0, 45.0), (120.0, -30.0), (15.001, 45.001), (120.001, -30.001)]
    order = sorted(range(4), key=lambda i: sizing.morton(pts[i]))
    assert abs(order.index(0) - order.index(2)) == 1
    assert abs(order.index(1) - order.index(3)) == 1


# -- the resume decision, without Ray ------------------------------------------------------


def test_resume_module_does_not_import_ray():
    code = "import sys, rs_embed_ray.resume; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_earlier_run_adopts_only_intact_matching_steps(tmp_path):
    plan = plan_export(**base(tmp_path, resume=True))
    model = plan.models[0]
    state = RunState(plan.state_dir)
    state.acquire()
    try:
        shard_dir = state.shard_dir("embeds", model.key)
        good = np.arange(8, dtype=np.float32)
        path = shard_dir / "000000000-a.npz"
        write_shard(path, {0: (good, {}), 1: (good + 1, {})})
        rel = str(path.relative_to(state.folder))
        state.append(
            [
                Record(
                    "embed",
                    model.key,
                    0,
                    "ok",
                    plan.pair_fingerprint(0, model),
                    rel,
                    sha1=array_sha1(good),
                ),
                # place 1: its digest does not match the shard (a corrupt or foreign array)
                Record(
                    "embed",
                    model.key,
                    1,
                    "ok",
                    plan.pair_fingerprint(1, model),
                    rel,
                    sha1=array_sha1(good),
                ),
            ]
        )
        earlier = EarlierRun(plan, state, "cpu")
        embed_src: dict = {model.key: {}}
        earlier.adopt({g.key: {} for g in plan.groups}, embed_src)
        assert set(embed_src[model.key]) == {0}
        assert embed_src[model.key][0]["shard"] == str(path)
        # another request (a different window) adopts nothing of it
        other = plan_export(**base(tmp_path, resume=True, temporal=TemporalSpec.year(2021)))
        embed_src = {model.key: {}}
        EarlierRun(other, state, "cpu").adopt({g.key: {} for g in other.groups}, embed_src)
        assert embed_src[model.key] == {}
    finally:
        state.release()


def test_a_per_item_file_is_skipped_only_when_its_sidecar_and_arrays_match(tmp_path):
    plan = plan_export(**base(tmp_path, resume=True, names=["a", "b"]))
    arr = np.ones((3,), dtype=np.float32)
    plan.out_path.mkdir(parents=True)
    np.savez(plan.item_path(0), embedding_x=arr)
    ref = {"npz_key": "embedding_x", "sha1": array_sha1(arr), "shape": [3]}
    man = {
        "status": "ok",
        "request_fingerprint": plan.item_fingerprint(0),
        "models": [{"embedding": ref}],
        "npz_keys": ["embedding_x"],
    }
    side = plan.item_path(0).with_suffix(".json")
    side.write_text(json.dumps(man), encoding="utf-8")
    state = RunState(plan.state_dir)
    earlier = EarlierRun(plan, state, "cpu")
    done = dict(earlier.complete_items())  # (index, manifest) pairs, one at a time
    assert list(done) == [0] and done[0]["resume_skipped"]
    # the same file under another request's fingerprint is redone
    side.write_text(json.dumps({**man, "request_fingerprint": "x"}), encoding="utf-8")
    assert dict(earlier.complete_items()) == {}
    # and so is a file whose array no longer matches its recorded digest
    side.write_text(json.dumps(man), encoding="utf-8")
    np.savez(plan.item_path(0), embedding_x=arr * 2)
    assert dict(earlier.complete_items()) == {}


def test_a_cpu_model_actor_gets_every_core_of_its_node():
    """Issue 16: on CPU the forward is the bottleneck; its threads are the node's cores (not
    the cluster's CPUs, not cores minus one), resolved where the actor runs."""
    import os

    cpu = sizing.infer_sizing("cpu", cpus=64.0, gpus=0.0)  # a 64-CPU cluster of small nodes
    assert (cpu.actors, cpu.gpus_per_actor) == (1, 0)
    assert cpu.torch_threads == sizing.NODE_CORES
    assert sizing.node_threads(cpu.torch_threads) == len(os.sched_getaffinity(0))
    assert sizing.node_threads(3) == 3  # an explicit count is kept
    gpu = sizing.infer_sizing("cuda", cpus=64.0, gpus=4.0)
    assert (gpu.actors, gpu.gpus_per_actor, gpu.torch_threads) == (4, 1, 1)


def test_place_bytes_is_the_largest_fetched_patch(tmp_path):
    """``ExportPlan.place_bytes``, which sizes the calls: float32 pixels of the group's bands
    on the place's grid (a point's buffer at the sensor's scale), the largest of the run."""
    from rs_embed_ray.models.spectral_stats import BANDS
    from tests.conftest import points

    def plan(spatials):
        return plan_export(
            spatials=spatials,
            temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
            models=["spectral_stats"],
            out=str(tmp_path / "out"),
            layout="per_item",
            backend="gee",
            provider_options={"url": "http://127.0.0.1:9"},  # never contacted
        )

    assert plan(points(3)).place_bytes == 4 * len(BANDS) * 32 * 32  # 160 m at 10 m
    mixed = points(10) + points(1, buffer_m=1120.0)
    assert plan(mixed).place_bytes == 4 * len(BANDS) * 224 * 224
