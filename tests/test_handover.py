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


@pytest.mark.parametrize("save_inputs", [True, False])
def test_in_process_per_item_reads_each_patch_once(
    tmp_path, raster_source, monkeypatch, save_inputs
):
    reads: Counter[tuple[str, str]] = Counter()
    real = NpzMembers.raw

    def counted(self, key):
        reads[(self._fh.name, key)] += 1
        return real(self, key)

    monkeypatch.setattr(NpzMembers, "raw", counted)
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
    assert handed.keys() == from_disk.keys()
    for name, (side, arrays) in handed.items():
        side0, arrays0 = from_disk[name]
        assert side == side0, name
        assert arrays.keys() == arrays0.keys()
        assert ("input_chw__spectral_stats" in arrays) == save_inputs
        for k, v in arrays.items():
            assert v.dtype == arrays0[k].dtype
            np.testing.assert_array_equal(v, arrays0[k], err_msg=f"{name} {k}")


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
