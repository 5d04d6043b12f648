"""The output's disk fills up mid-run: the run stops with a clear error (whatever
``continue_on_error`` says: a full disk is not a place's fault), the files already written
stay whole, no temp file or lock is left, and ``resume`` continues once space is back.

Two ways to fill a disk:
* always: an injected ``OSError(ENOSPC)`` when the fetch stage writes its third shard
  (the fault-injecting test provider with ``disk_full_after_shards=2``, which wraps the
  shard writer of its fetch actor), deterministic and portable (CI runs unprivileged, and
  as root ``chmod`` does not stop writes);
* where the test may mount (root with CAP_SYS_ADMIN, as in the dev sandbox): a real, small
  tmpfs, so every writer (fetch/embed shards, final files, the driver's log) meets a real
  ENOSPC wherever it happens first; after ``remount,size=...`` the resume finishes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from rs_embed_ray import export_batch
from rs_embed_ray.io.state import RunState
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


def assert_stopped_cleanly(exc: BaseException, out) -> set[int]:
    """The error says what happened and what to do; what is on disk is whole."""
    msg = str(exc)
    assert "No space left on device" in msg, msg[-2000:]
    assert "resume" in msg, msg[-2000:]
    state = state_dir(out, "per_item")
    assert not (state / "lock").exists()  # the lock is released
    assert temps(out) == []  # no partial file anywhere
    lines = (state / "log.jsonl").read_text().splitlines() if (state / "log.jsonl").exists() else []
    for ln in lines[:-1]:  # the log is whole (at most a torn last line, skipped on read)
        json.loads(ln)
    arrays = {p.stem for p in out.glob("*.npz")}
    assert arrays == {p.stem for p in out.glob("*.json")}  # a place is whole or absent
    for name in arrays:  # and what is there is complete
        assert manifest_intact(out / f"{name}.npz")["status"] in ("ok", "failed")
    return set(counts(state, "patch", "ok"))


def test_injected_enospc_stops_then_resume_continues(tmp_path, raster_source):
    out = tmp_path / "pi"
    space_back = tmp_path / "space-back"
    faults = faulty_local(raster_source, disk_full_after_shards=2, unless_exists=str(space_back))
    args = dict(
        **local_kw(raster_source, num_workers=1, fetch_threads=1, **faults),
        spatials=points(8),
        out=str(out),
        layout="per_item",
        continue_on_error=True,  # even so, a full disk stops the run
    )
    with pytest.raises(Exception) as ei:
        export_batch(**args)
    # (with the runner fix proposed in the report this is OutputWriteError itself)
    done = assert_stopped_cleanly(ei.value, out)
    assert len(done) <= 4  # two shards of two places at most were written and logged

    space_back.write_text("ok")
    res = export_batch(**args, resume=True)
    assert [r["status"] for r in res] == ["ok"] * 8
    assert_per_item_complete(out, [f"p{i:05d}" for i in range(8)])
    ok = counts(state_dir(out, "per_item"), "patch", "ok")
    assert ok == {i: 1 for i in range(8)}  # what was logged before was not fetched again


@pytest.fixture
def small_disk(mount_tmpfs):
    return mount_tmpfs(
        "448k", "needs root with mount permission for a tmpfs (the injected test covers CI)"
    )


def test_real_full_tmpfs_stops_then_resume_after_space_returns(small_disk, raster_source):
    out = small_disk / "pi"
    # 16 places: ~330 KB of shards (fetch + inference fit), then ~16 KB of final files per
    # place: the disk fills up while the final files are written
    n = 16
    args = dict(**local_kw(raster_source), spatials=points(n), out=str(out), layout="per_item",
                continue_on_error=True)  # fmt: skip
    with pytest.raises(Exception) as ei:
        export_batch(**args)
    done = assert_stopped_cleanly(ei.value, out)

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    res = export_batch(**args, resume=True)
    assert [r["status"] for r in res] == ["ok"] * n
    assert_per_item_complete(out, [f"p{i:05d}" for i in range(n)])
    ok = counts(state_dir(out, "per_item"), "patch", "ok")
    assert all(ok[i] == 1 for i in done), (sorted(done), ok)  # logged before: not refetched
    assert set(ok) == set(range(n))
    assert not (RunState(state_dir(out, "per_item")).folder / "lock").exists()
    assert [r for r in records(state_dir(out, "per_item")) if r["status"] == "failed"] == []
