"""Per-place sequences read on demand (``io.lazy``) and the combined manifest built on them:
they read like the lists they stand for, JSON-encode to the same bytes, pickle to plain
lists, and a combined write of many places keeps its metas on disk, not in memory.
Real shard files and a real npz, no Ray."""

from __future__ import annotations

import gc
import json
import os
import pickle
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_embed_ray.io.assemble import sidecar_path, write_combined
from rs_embed_ray.io.atomic import write_json
from rs_embed_ray.io.lazy import JsonSpool, PerPlace
from rs_embed_ray.io.manifest import jsonable
from rs_embed_ray.io.shards import write_shard
from rs_embed_ray.io.steptable import StepTable
from tests.io.writer_ctx import model_spec, writer_ctx

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), values), max_size=20), st.randoms(use_true_random=False))
def test_spool_reads_like_the_list_of_what_was_put(items, rnd):
    spool = JsonSpool(len(items))
    order = list(range(len(items)))
    rnd.shuffle(order)
    for i in order:
        if items[i] is not None:  # a place never put reads as None
            spool.put(i, items[i])
    assert len(spool) == len(items) and list(spool) == items and spool == items
    assert spool.missing() == [i for i, v in enumerate(items) if v is None]
    if items:
        assert spool[-1] == items[-1] and spool[1:4] == items[1:4] and spool[::-2] == items[::-2]
    with pytest.raises(IndexError):
        spool[len(items)]
    assert pickle.loads(pickle.dumps(spool)) == items  # a Ray job's return value: a list
    assert type(pickle.loads(pickle.dumps(spool))) is list
    assert jsonable({"m": spool}) == {"m": jsonable(items)}


@settings(max_examples=40, deadline=None)
@given(st.lists(values, max_size=12), st.sampled_from([None, 2]))
def test_write_json_streams_lazy_lists_to_the_same_bytes(items, indent):
    spool = JsonSpool(len(items))
    for i, v in enumerate(items):
        spool.put(i, v)
    lazy = {"models": [{"metas": spool}], "spatials": PerPlace(len(items), lambda i: items[i])}
    plain = {"models": [{"metas": items}], "spatials": items}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        write_json(path, lazy, indent=indent)
        assert path.read_text("utf-8") == json.dumps(plain, ensure_ascii=False, indent=indent)


def test_per_place_values_are_made_when_read():
    calls: list[int] = []
    seq = PerPlace(5, lambda i: calls.append(i) or {"i": i})
    assert calls == []
    assert seq[-1] == {"i": 4} and seq[1:3] == [{"i": 1}, {"i": 2}] and calls == [4, 1, 2]
    assert seq == [{"i": i} for i in range(5)] and seq != [{"i": 0}]
    with pytest.raises(TypeError):
        json.dumps(seq)  # json.dumps cannot stream it: default=list says how
    assert json.loads(json.dumps({"s": seq}, default=list)) == {"s": list(seq)}


def test_spool_file_goes_with_the_spool():
    spool = JsonSpool(1)
    spool.put(0, {"a": 1})
    path = spool._path
    assert os.path.exists(path)
    del spool
    gc.collect()
    assert not os.path.exists(path)


# -- a combined write of many places --------------------------------------------------------

D, BATCH = 4, 64
PAD = "x" * 1000  # about 1 KB of meta per place, as a model's metas are


def _ctx() -> dict[str, Any]:
    return writer_ctx("npz", [model_spec("m", "m", "g")])


def _combined(tmp_path: Path, n: int, failed: int | None) -> tuple[dict[str, Any], int, int]:
    """Write a combined npz of ``n`` places (``failed`` without an embedding); the manifest,
    and the Python memory it holds and the peak while writing, both above what was held
    before (tracemalloc)."""
    table, patches = StepTable(n), StepTable(n)
    for lo in range(0, n, BATCH):  # one shard per batch, as a run writes them
        batch = range(lo, min(n, lo + BATCH))
        shard = tmp_path / f"p{lo}.npz"  # the patches, with fetch metas as big
        write_shard(shard, {i: (np.full((2, 3, 3), i, np.float32), {"pad": PAD}) for i in batch})
        for i in batch:
            patches[i] = {"status": "ok", "shard": str(shard), "shape": [2, 3, 3]}
        shard = tmp_path / f"m{lo}.npz"
        batch = [i for i in batch if i != failed]
        meta = {"weights": {"w": 1}, "pad": PAD}
        write_shard(shard, {i: (np.full(D, i, np.float32), {**meta, "i": i}) for i in batch})
        for i in batch:
            table[i] = {"status": "ok", "shard": str(shard), "shape": [D]}
    if failed is not None:
        table[failed] = {"status": "failed", "shard": None, "shape": None, "error": "boom"}
    spatials = [{"lon": float(i % 360 - 180), "lat": 0.0, "buffer_m": 5.0} for i in range(n)]
    names = [f"p{i:05d}" for i in range(n)]
    centers = [(s["lon"], 0.0) for s in spatials]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        man = write_combined(
            _ctx(),
            tmp_path / "c.npz",
            spatials=spatials,
            names=names,
            centers=centers,
            patch_src={"g": patches},
            embed_src={"m": table},
            fingerprint="fp",
        )
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return man, held - before, peak - before


def test_combined_manifest_reads_its_metas_from_disk(tmp_path):
    n = 200
    man, _, _ = _combined(tmp_path, n, failed=7)
    (entry,) = man["models"]
    assert entry["status"] == "partial" and entry["failed_indices"] == [7]
    assert entry["weights"] == {"w": 1}  # once, from the first place
    metas = entry["metas"]
    assert isinstance(metas, JsonSpool) and len(metas) == n and metas[7] is None
    assert metas[0] == {"pad": PAD, "i": 0} and metas[-1] == {"pad": PAD, "i": n - 1}
    assert man["spatials"][3] == {"lon": -177.0, "lat": 0.0, "buffer_m": 5.0}
    # the sidecar says the same, place by place
    side = json.loads(sidecar_path(tmp_path / "c.npz").read_text("utf-8"))
    assert side["models"][0]["metas"] == list(metas)
    assert side["models"][0]["weights"] == {"w": 1}
    assert side["models"][0]["inputs"]["shape"] == [n, 2, 3, 3]
    assert pickle.loads(pickle.dumps(man))["models"][0]["metas"] == side["models"][0]["metas"]


def test_combined_write_memory_does_not_grow_with_the_metas(tmp_path):
    """About 1 KB of meta a place is read, twice (patch and embedding): neither the write
    nor its result holds them. The
    slope between two sizes leaves out what does not grow (open shards, imports)."""
    small = _combined(tmp_path / "a", 1000, failed=None)
    large = _combined(tmp_path / "b", 4000, failed=None)
    held = (large[1] - small[1]) / 3000
    peak = (large[2] - small[2]) / 3000
    assert held < 100, f"the manifest holds {held:.0f} B more a place"
    assert peak < 300, f"the write peaks {peak:.0f} B higher a place"
