"""What a crash can leave behind is found on resume and redone: a truncated or corrupted
final file, a torn sidecar, stray ``*.tmp-*`` files, a truncated shard in the state folder,
a torn last line in the log."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from rs_embed_ray import export_batch
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points
from tests.faults.conftest import (
    assert_per_item_complete,
    counts,
    local_kw,
    manifest_intact,
    records,
    state_dir,
    temps,
)

pytestmark = pytest.mark.usefixtures("ray_cluster")

N = 8


def shard_of(state, kind, index):
    rec = [r for r in records(state) if r["kind"] == kind and r["index"] == index][-1]
    return state / rec["shard"]


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def partial_run(tmp_path, raster_source):
    """A per-item run where place 7 fails (until `fixed` exists): its shards are kept."""
    spatials = points(N)
    fixed = tmp_path / "fixed"
    faults = faulty_local(
        raster_source, fail_items=[spatials[7].center()], unless_exists=str(fixed)
    )
    out = tmp_path / "pi"
    args = dict(
        **local_kw(raster_source, **faults),
        spatials=spatials,
        out=str(out),
        layout="per_item",
        continue_on_error=True,
    )
    res = export_batch(**args)
    assert [r["status"] for r in res] == ["ok"] * 7 + ["failed"]
    return out, state_dir(out, "per_item"), fixed, args


def test_damaged_final_files_and_temps_are_redone(tmp_path, raster_source):
    out, state, fixed, args = partial_run(tmp_path, raster_source)
    names = [f"p{i:05d}" for i in range(N)]
    truncate(out / "p00001.npz")  # a final file cut short
    z = bytearray((out / "p00002.npz").read_bytes())  # a final file with zeroed bytes
    z[len(z) // 2 : len(z) // 2 + 64] = bytes(64)
    (out / "p00002.npz").write_bytes(bytes(z))
    (out / "p00003.json").write_text('{"status": "ok", "models": [')  # a torn sidecar
    stray = [out / "p00000.npz.tmp-4242-deadbeef", out / "p00006.json.tmp-1-2",
             state / "patches" / "x.npz.tmp-7-abc"]  # fmt: skip
    for p in stray:
        p.write_bytes(b"half a file")
    with open(state / "log.jsonl", "a") as fh:  # a torn last line (driver killed mid-write)
        fh.write('{"kind": "patch", "key": "x", "ind')
    untouched = {n: (out / f"{n}.npz").stat().st_mtime_ns for n in ("p00000", "p00006")}

    fixed.write_text("ok")
    res = export_batch(**args, resume=True)
    assert [r["status"] for r in res] == ["ok"] * N
    assert [bool(r.get("resume_skipped")) for r in res] == [True] + [False] * 3 + [True] * 3 + [
        False
    ]
    assert_per_item_complete(out, names)  # every file whole, every temp file gone
    assert temps(state) == []
    assert untouched == {n: (out / f"{n}.npz").stat().st_mtime_ns for n in untouched}
    # the damaged files were rebuilt from the kept shards: nothing fetched or embedded twice,
    # only the failed place 7 was fetched and embedded again
    assert counts(state, "patch", "ok") == {i: 1 for i in range(N)}
    assert counts(state, "embed", "ok") == {i: 1 for i in range(N)}
    assert set(counts(state, "patch", "failed")) == set(counts(state, "embed", "failed")) == {7}
    # the torn line stays a line of its own: the records after it are all readable
    lines = (state / "log.jsonl").read_text().splitlines()
    assert sum(1 for ln in lines if ln.startswith('{"kind": "patch", "key": "x"')) == 1
    assert len(records(state)) == len(lines) - 1


def test_truncated_shards_are_redone(tmp_path, raster_source):
    out, state, fixed, args = partial_run(tmp_path, raster_source)
    for i in (4, 5):
        (out / f"p{i:05d}.npz").unlink()
    patch_shard, embed_shard = shard_of(state, "patch", 4), shard_of(state, "embed", 5)
    mates = {
        kind: {
            r["index"]
            for r in records(state)
            if r["kind"] == kind and r.get("shard") and state / r["shard"] == s
        }
        for kind, s in (("patch", patch_shard), ("embed", embed_shard))
    }
    truncate(patch_shard)
    truncate(embed_shard)
    fixed.write_text("ok")
    try:
        res = export_batch(**args, resume=True)
    except zipfile.BadZipFile:
        pytest.xfail(
            "ShardReader.has lets zipfile.BadZipFile escape, so resume crashes on a truncated "
            "shard: apply the rs_embed_ray/io/shards.py diff proposed in the fault-test report"
        )
    assert [r["status"] for r in res] == ["ok"] * N
    assert_per_item_complete(out, [f"p{i:05d}" for i in range(N)])
    # redone: the steps whose shard was cut, for the places not already complete (4, 5, 7);
    # the shard-mates whose final file is intact are not fetched again
    refetch = mates["patch"] & {4, 5}
    assert 4 in refetch
    assert counts(state, "patch", "ok") == {i: 2 if i in refetch else 1 for i in range(N)}
    reembed = mates["embed"] & {4, 5}
    embeds = counts(state, "embed", "ok")
    assert all(embeds[i] == 2 for i in reembed) and 5 in reembed, embeds
    assert all(embeds[i] == 1 for i in range(N) if i not in reembed | refetch), embeds


def test_combined_damage_is_found_and_redone(tmp_path, raster_source):
    out = tmp_path / "c.npz"
    args = dict(**local_kw(raster_source), spatials=points(4), out=str(out), layout="combined")
    export_batch(**args)
    with np.load(out) as z:
        ref = {k: z[k] for k in z.files}
    truncate(out, 0.7)
    (tmp_path / "c.npz.tmp-99-abcdef01").write_bytes(b"junk")
    (tmp_path / "other.npz.tmp-99-abcdef01").write_bytes(b"not ours")  # another file's temp
    res = export_batch(**args, resume=True)
    assert res["status"] == "ok" and not res.get("resume_skipped")
    manifest_intact(out)
    with np.load(out) as z:
        assert sorted(z.files) == sorted(ref)
        for k in z.files:
            np.testing.assert_allclose(z[k], ref[k], rtol=1e-6)
    assert not (tmp_path / "c.npz.tmp-99-abcdef01").exists()
    assert (tmp_path / "other.npz.tmp-99-abcdef01").exists()  # a shared folder: not touched
    # intact now: the next resume does nothing
    assert export_batch(**args, resume=True)["resume_skipped"] is True
    assert json.loads(out.with_suffix(".json").read_text())["status"] == "ok"
