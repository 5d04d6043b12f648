"""The driver's compact per-run tables, against plain Python models of them (generated
operations, hypothesis): ``io.steptable.StepTable`` must read and write like
``dict[int, dict]``; ``io.manifest_list.ManifestList`` like a list of manifests."""

from __future__ import annotations

import gc
import json
import os
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_embed_ray.io.manifest_list import ManifestList
from rs_embed_ray.io.steptable import StepTable

N = 40
statuses = st.sampled_from(["ok", "failed", "skipped"])
shards = st.one_of(st.none(), st.just(""), st.sampled_from(["/s/a.npz", "/s/b.npz", "gs://b/c"]))
shapes = st.one_of(st.none(), st.lists(st.integers(1, 64), min_size=1, max_size=4))
errors = st.one_of(st.none(), st.text(max_size=30))
srcs = st.fixed_dictionaries(
    {"status": statuses, "shard": shards, "shape": shapes, "error": errors}
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, N - 1), srcs),
        st.tuples(st.just("del"), st.integers(0, N - 1), st.none()),
    ),
    max_size=80,
)


def _expected(src: dict) -> dict:
    # what a reader sees: the four fields, an empty error read as none
    return {**src, "error": src["error"] or None}


@settings(max_examples=60, deadline=None)
@given(ops)
def test_step_table_reads_like_a_dict(operations):
    table, model = StepTable(N), {}
    for op, i, src in operations:
        if op == "set":
            table[i] = src
            model[i] = _expected(src)
        elif i in model:
            del table[i]
            del model[i]
        else:
            with pytest.raises(KeyError):
                del table[i]
    assert len(table) == len(model)
    assert sorted(table) == sorted(model)
    assert {i: table[i] for i in table} == model
    for i in range(N):
        assert (i in table) == (i in model)
        assert table.get(i) == model.get(i)
        assert table.status_is(i, "ok") == (model.get(i, {}).get("status") == "ok")
    assert table.get(N) is None and N not in table and -1 not in table


def test_step_table_stays_small_for_many_places():
    n = 20_000
    table = StepTable(n)
    for i in range(n):  # one shard per 64 places, one shape: a run's usual pattern
        table[i] = {"status": "ok", "shard": f"/state/s{i // 64}.npz", "shape": [16], "error": ""}
    assert table[n - 1]["shard"] == f"/state/s{(n - 1) // 64}.npz"
    assert table.nbytes() / n < 20  # bytes per place (a dict per place is about 1 KB)


def test_uniform_table_is_the_same_record_everywhere():
    src = {"status": "ok", "shard": "", "shape": [3, 4], "error": None}
    table = StepTable.uniform(5, src)
    assert len(table) == 5 and all(table[i] == src for i in range(5))
    assert len(StepTable.uniform(0, src)) == 0


manifests = st.lists(
    st.fixed_dictionaries(
        {"status": statuses, "point_index": st.integers(0, 10**6), "note": st.text(max_size=20)}
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=30, deadline=None)
@given(manifests, st.randoms(use_true_random=False))
def test_manifest_list_reads_like_the_list_of_what_was_put(mans, rnd):
    order = list(range(len(mans)))
    rnd.shuffle(order)  # writers report places in any order
    ml = ManifestList(len(mans))
    assert ml.missing() == list(range(len(mans)))
    for i in order:
        ml.put(i, mans[i])
    assert ml.missing() == []
    assert len(ml) == len(mans)
    assert list(ml) == mans and ml == mans
    assert ml[0] == mans[0] and ml[-1] == mans[-1]
    assert ml[1:3] == mans[1:3] and ml[::-2] == mans[::-2]
    assert ml.statuses() == [m["status"] for m in mans]
    with pytest.raises(IndexError):
        ml[len(mans)]
    # pickled (a Ray job's return value): a plain list with the same manifests
    assert pickle.loads(pickle.dumps(ml)) == mans
    assert json.loads(json.dumps(list(ml))) == mans


def test_manifest_list_replaces_and_removes_its_spool():
    ml = ManifestList(2)
    ml.put(0, {"status": "failed"})
    ml.put(1, {"status": "ok"})
    ml.put(0, {"status": "ok", "again": True})  # a later put wins
    assert ml[0] == {"status": "ok", "again": True} and ml.statuses() == ["ok", "ok"]
    with pytest.raises(LookupError):
        ManifestList(1)[0]
    path = ml._path
    assert os.path.exists(path)
    del ml
    gc.collect()
    assert not os.path.exists(path)
