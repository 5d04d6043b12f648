"""One read per patch (issue 17, item 3): with the in-process executor the model hands each
patch and embedding to the per-item writer (io/handover.py), so a patch is read from its
shard once after the fetch. Counted on the real reader of a real export; the files are
checked against the shards and the fetch, and the hand-over's bound and drops are checked
alone."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from rs_embed_ray import TemporalSpec, export_batch
from rs_embed_ray.io import handover as handover_mod
from rs_embed_ray.io.handover import HANDOVER, Handover
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.io.zipread import NpzMembers
from tests.conftest import points

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def test_handover_takes_once_and_drops_the_oldest_past_its_bound():
    arr = np.ones((4, 4), np.float32)  # 64 bytes
    h = Handover(max_bytes=3 * arr.nbytes)
    for i in range(4):
        h.put("s", i, arr * i, {"i": i, "t": (1, 2)})
    assert h.held_bytes() == 3 * arr.nbytes
    assert h.take("s", 0) is None  # dropped: the oldest, past the bound
    got, meta = h.take("s", 2)
    np.testing.assert_array_equal(got, arr * 2)
    assert meta == {"i": 2, "t": [1, 2]}  # as a shard's JSON gives it back
    assert h.take("s", 2) is None  # taken once
    h.put("s", 3, arr, {})  # replacing keeps the count of bytes right
    assert h.held_bytes() == 2 * arr.nbytes
    h.clear()
    assert h.held_bytes() == 0 and h.take("s", 1) is None


def test_reader_falls_back_to_the_shard(tmp_path):
    from rs_embed_ray.io.shards import write_shard

    path = tmp_path / "s.npz"
    write_shard(path, {5: (np.arange(6, dtype=np.float32), {"on": "disk"})})
    h = Handover()
    h.put(str(path), 5, np.zeros(6, np.float32), {"on": "handed over"})
    reader = ShardReader(handover=h)
    assert reader.read(path, 5)[1] == {"on": "handed over"}
    assert reader.read(path, 5)[1] == {"on": "disk"}  # taken already: read from the shard
    reader.close()


def _export(out, source, save_inputs):
    return export_batch(
        spatials=points(9),
        temporal=WINDOW,
        models=["spectral_stats"],
        backend="local",
        source=str(source),
        out=str(out),
        layout="per_item",
        executor="local",
        save_inputs=save_inputs,
        chunk_size=2,
        show_progress=False,
    )


def _files(out) -> dict[str, object]:
    """Each file's arrays and sidecar (less its time of writing and its own paths)."""
    got: dict[str, object] = {}
    for i in range(9):
        side = json.loads((out / f"p{i:05d}.json").read_text())
        side.pop("created_at")
        side = {k: v for k, v in side.items() if not k.endswith("_path")}  # its folder
        with np.load(out / f"p{i:05d}.npz", allow_pickle=False) as z:
            got[f"p{i}"] = (side, {k: z[k] for k in z.files})
    return got


def _count_reads(monkeypatch) -> Counter[tuple[str, str]]:
    """Every array read from a shard in this process, by (file, member)."""
    reads: Counter[tuple[str, str]] = Counter()
    real = NpzMembers.raw

    def counted(self, key):
        reads[(self._fh.name, key)] += 1
        return real(self, key)

    monkeypatch.setattr(NpzMembers, "raw", counted)
    return reads


def _writer_windows(monkeypatch, flow) -> list[str]:
    """The functions the runner starts per-item writers for (``flow.TaskWindow``)."""
    started: list[str] = []
    real = flow.TaskWindow

    def window(fn, *args, **kwargs):
        started.append(fn.__name__)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(flow, "TaskWindow", window)
    return started


def _same_files(got: dict[str, object], want: dict[str, object]) -> None:
    assert got.keys() == want.keys()
    for name, (side, arrays) in got.items():
        side0, arrays0 = want[name]
        assert side == side0, name
        assert arrays.keys() == arrays0.keys()
        for k, v in arrays.items():
            assert v.dtype == arrays0[k].dtype
            np.testing.assert_array_equal(v, arrays0[k], err_msg=f"{name} {k}")


@pytest.mark.parametrize("save_inputs", [True, False])
def test_in_process_per_item_reads_each_patch_once(
    tmp_path, raster_source, monkeypatch, save_inputs
):
    reads = _count_reads(monkeypatch)
    # first with nothing handed over (a bound of 0 drops every item): all read from shards
    monkeypatch.setattr(HANDOVER, "max_bytes", 0)
    res = _export(tmp_path / "disk", raster_source, save_inputs)
    assert [r["status"] for r in res] == ["ok"] * 9
    from_disk = _files(tmp_path / "disk")
    assert any("embeds" in path for path, _ in reads)  # the writer did read them back

    reads.clear()
    monkeypatch.setattr(HANDOVER, "max_bytes", handover_mod.MAX_BYTES)
    res = _export(tmp_path / "pi", raster_source, save_inputs)
    assert [r["status"] for r in res] == ["ok"] * 9
    patch = {k: n for k, n in reads.items() if "patches" in k[0] and k[1].startswith("d")}
    embed = {k: n for k, n in reads.items() if "embeds" in k[0] and k[1].startswith("d")}
    # every patch read once (by the model), never by the writer; no embedding read back
    assert len(patch) == 9 and set(patch.values()) == {1}, patch
    assert embed == {}
    assert HANDOVER.held_bytes() == 0  # cleared when the run ended

    handed = _files(tmp_path / "pi")  # the same files as when everything was read back
    assert all(("input_chw__spectral_stats" in a) == save_inputs for _, a in handed.values())
    _same_files(handed, from_disk)


@pytest.mark.parametrize("save_inputs", [True, False])
def test_the_model_stage_writes_the_files_it_finishes(
    tmp_path, raster_source, monkeypatch, save_inputs
):
    """What Ray's CPU model actor does (``write.write_due_items``), run in this process so
    that its reads can be counted: every file is written by the model stage, from what it
    handed over (each patch read once, no embedding read back), and the files are the ones
    the writer threads write."""
    from rs_embed_ray.pipeline import inprocess

    threads = _export(tmp_path / "threads", raster_source, save_inputs)
    reads = _count_reads(monkeypatch)
    monkeypatch.setattr(inprocess, "model_writes_items", lambda size: True)
    started = _writer_windows(monkeypatch, inprocess)
    res = _export(tmp_path / "model", raster_source, save_inputs)
    assert [r["status"] for r in res] == [r["status"] for r in threads] == ["ok"] * 9
    assert "finalize_items" not in started  # no writer was needed
    patch = {k: n for k, n in reads.items() if "patches" in k[0] and k[1].startswith("d")}
    embed = {k: n for k, n in reads.items() if "embeds" in k[0] and k[1].startswith("d")}
    assert len(patch) == 9 and set(patch.values()) == {1}, patch
    assert embed == {}
    assert HANDOVER.held_bytes() == 0
    _same_files(_files(tmp_path / "model"), _files(tmp_path / "threads"))


@pytest.mark.usefixtures("ray_cluster")
def test_ray_writes_per_item_files_in_the_model_actor(tmp_path, raster_source, monkeypatch):
    """On Ray the last model's CPU actor writes the files of the places it finishes (no
    writer task); a place whose fetch failed gets its file from the final pass. The files
    are the in-process executor's (writer threads)."""
    from rs_embed_ray.pipeline import dataflow
    from rs_embed_ray.testing.faults import faulty_local

    spatials = points(9)
    faults = faulty_local(raster_source, fail_items=[spatials[4].center()])
    runs = {}
    for ex in ("local", "ray"):
        started = _writer_windows(monkeypatch, dataflow)
        runs[ex] = export_batch(
            spatials=spatials,
            temporal=WINDOW,
            models=["spectral_stats"],
            **faults,
            out=str(tmp_path / ex),
            layout="per_item",
            executor=ex,
            save_inputs=True,
            continue_on_error=True,
            chunk_size=2,
            show_progress=False,
        )
    assert started == []  # Ray's run started no per-item writer task
    statuses = ["failed" if i == 4 else "ok" for i in range(9)]
    assert [r["status"] for r in runs["ray"]] == statuses
    assert [r["status"] for r in runs["local"]] == statuses
    local, ray = _files(tmp_path / "local"), _files(tmp_path / "ray")
    for files in (local, ray):  # where the fetch ran (a Ray node, or this process)
        for side, _ in files.values():
            for e in side["models"]:
                (e.get("fetch_meta") or {}).pop("node", None)
    _same_files(ray, local)


@pytest.mark.parametrize(
    "models,last",
    [
        (["spectral_stats"], "spectral_stats"),
        # one group's first member runs with its fetch; the others after every fetch
        (["remoteclip", "dofa", "galileo", "spectral_stats"], "spectral_stats"),
        # galileo (frames) is a group of its own: both run chained, galileo's group last
        (["spectral_stats", "galileo"], "galileo"),
    ],
)
def test_the_last_stage_is_the_one_that_hands_over(tmp_path, models, last):
    from rs_embed_ray.api import plan_export
    from tests.test_fingerprint_parts import tiny_raster_source

    plan = plan_export(
        spatials=points(2),
        temporal=WINDOW,
        out=str(tmp_path / "o"),
        layout="per_item",
        backend="local",
        source=str(tiny_raster_source(tmp_path)),
        models=models,
        weights={m: "random" for m in models if m in ("dofa", "galileo", "remoteclip")},
    )
    chained = [g.members[0] for g in plan.groups]
    assert plan.last_model_key() == last
    assert (last in chained) == (len(chained) == len(models))


def test_a_stopping_run_starts_no_more_files(tmp_path):
    """``write_due_items`` as the model actor calls it: files for the due places, then none
    once the run's state folder says it is stopping (``RunState.mark_stopping``); the next
    run's lock clears the marker."""
    from concurrent.futures import ThreadPoolExecutor

    from rs_embed_ray.io.shards import write_shard
    from rs_embed_ray.io.state import RunState
    from rs_embed_ray.pipeline import schema as col
    from rs_embed_ray.pipeline.write import embed_shard_rows, write_due_items
    from rs_embed_ray.specs import spatial_to_dict
    from tests.io.writer_ctx import model_spec, writer_ctx

    out = tmp_path / "out"
    state = RunState(out / "_rs_embed_ray")
    state.acquire()
    patches = tmp_path / "patches.npz"
    write_shard(patches, {i: (np.full((4, 2, 2), i, np.float32), {}) for i in range(6)})
    ctx = writer_ctx(
        "npz",
        [model_spec("m", "m", "g")],
        out_dir=str(out),
        ext=".npz",
        stop_marker=str(state.stop_marker),
    )
    place = json.dumps(spatial_to_dict(points(1)[0]))
    spatials = points(1) * 3
    pool = ThreadPoolExecutor(2)
    patch = {"status": "ok", "shard": str(patches), "error": None, "shape": [4, 2, 2]}

    def item(i):
        sources = {"patch": {"g": patch}, "embed": {}}
        return json.dumps({"name": f"p{i}", "fingerprint": "f", "sources": sources})

    def batch_of(places):
        n = len(places)
        batch = {
            col.INDEX: np.asarray(places),
            col.STATUS: np.asarray(["ok"] * n, dtype=object),
            col.ERROR: np.asarray([""] * n, dtype=object),
            col.NODE: np.asarray([""] * n, dtype=object),
            col.SPATIAL: np.asarray([place] * n, dtype=object),
            col.SHARD: np.asarray([str(patches)] * n, dtype=object),
            col.ITEM: np.asarray([item(i) for i in places], dtype=object),
        }
        ok = {i: (np.full(3, i, np.float32), {"m": i}) for i in places}
        rows = embed_shard_rows(batch, ok, str(tmp_path))
        write_due_items(rows, batch, ctx, "m", None, spatials, pool)
        return rows

    rows = batch_of([0, 1, 2])
    assert list(rows[col.WRITTEN]) == ["ok"] * 3
    with np.load(out / "p1.npz") as z:
        np.testing.assert_array_equal(z["input_chw__m"], np.full((4, 2, 2), 1, np.float32))
        np.testing.assert_array_equal(z["embedding__m"], np.full(3, 1, np.float32))
    assert json.loads(rows[col.MANIFEST][2])["point_index"] == 2

    state.mark_stopping()
    rows = batch_of([3, 4, 5])
    assert list(rows[col.WRITTEN]) == [""] * 3 and list(rows[col.MANIFEST]) == [""] * 3
    assert sorted(p.name for p in out.glob("p*.npz")) == ["p0.npz", "p1.npz", "p2.npz"]
    state.release()
    again = RunState(out / "_rs_embed_ray")
    again.acquire()
    assert not again.stop_marker.exists()
    again.release()
