"""``io.durable.DurableBatch``: a batch of places' atomic writes is made durable together, then
lands place by place, whole or not at all, and never leaves a temp file. Real files on the
test's disk; the only stand-ins are counting wrappers around the real ``os.fsync`` and
``sync_file_range`` (to see when and how often they run)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rs_embed_ray.io import durable
from rs_embed_ray.io.atomic import TMP_MARK, OutputWriteError, write_json
from rs_embed_ray.io.durable import DurableBatch
from rs_embed_ray.io.npz import write_npz
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.pipeline.write import _commit


def write_place(folder, i: int, value: float = 0.0) -> None:
    """A place's two files, as the per-item writer makes them: an npz and its sidecar."""
    write_npz(folder / f"p{i}.npz", {"embedding__m": np.full(3, value, np.float32)})
    write_json(folder / f"p{i}.json", {"point_index": i, "value": value}, stream=False)


def temps(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TMP_MARK in p.name)


def count_syncs(monkeypatch) -> dict[str, list[int]]:
    """Count the real ``os.fsync`` calls and the real ``sync_file_range`` starts."""
    seen: dict[str, list[int]] = {"fsync": [], "start": []}
    real_fsync = durable.os.fsync

    def fsync(fd: int) -> None:
        seen["fsync"].append(fd)
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    real_start = durable._START_WRITEBACK
    if real_start is not None:

        def start(fd: int, offset: int, n: int, flags: int) -> int:
            seen["start"].append(fd)
            return real_start(fd, offset, n, flags)

        monkeypatch.setattr(durable, "_START_WRITEBACK", start)
    return seen


def test_files_land_at_commit_after_their_writeback_started_together(tmp_path, monkeypatch):
    if sys.platform.startswith("linux"):
        # glibc has sync_file_range: the batched writeback is the path that runs here
        assert durable._START_WRITEBACK is not None
    seen = count_syncs(monkeypatch)
    batch = DurableBatch()
    with ThreadPoolExecutor(4) as pool:  # the model actor writes a batch on its threads

        def one(i: int) -> None:
            with batch.place(i):
                write_place(tmp_path, i, float(i))

        list(pool.map(one, range(40)))
    assert not list(tmp_path.glob("p*.npz")) and not list(tmp_path.glob("p*.json"))
    assert len(temps(tmp_path)) == 80 and sorted(batch.keys()) == list(range(40))
    assert seen["fsync"] == []  # nothing synced while the places are written
    assert sorted(batch.commit()) == list(range(40))
    assert len(seen["fsync"]) == 80  # each file its own fsync, at commit
    if durable._START_WRITEBACK is not None:
        assert len(seen["start"]) == 80  # in two rounds of at most _FDS_AT_ONCE files
    assert temps(tmp_path) == []
    for i in range(40):
        with np.load(tmp_path / f"p{i}.npz") as z:
            assert z["embedding__m"][0] == i
        assert json.loads((tmp_path / f"p{i}.json").read_text())["point_index"] == i


def test_without_sync_file_range_each_file_is_fsynced_at_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "_START_WRITEBACK", None)  # as on macOS
    seen = count_syncs(monkeypatch)
    batch = DurableBatch()
    for i in range(3):
        with batch.place(i):
            write_place(tmp_path, i)
    assert seen["fsync"] == []
    assert batch.commit() == [0, 1, 2]
    assert len(seen["fsync"]) == 6 and temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"p{i}.{ext}" for i in range(3) for ext in ("json", "npz")
    ]


def test_a_failed_place_lands_nothing_and_an_earlier_pair_stays_whole(tmp_path):
    write_place(tmp_path, 1, 7.0)  # an earlier run's files for place 1
    batch = DurableBatch()
    with batch.place(0):
        write_place(tmp_path, 0)
    with pytest.raises(RuntimeError), batch.place(1):
        write_npz(tmp_path / "p1.npz", {"embedding__m": np.zeros(3, np.float32)})
        raise RuntimeError("the sidecar could not be built")
    assert len(temps(tmp_path)) == 2  # place 0's two; place 1's npz temp is gone
    assert batch.commit() == [0]
    assert temps(tmp_path) == []
    with np.load(tmp_path / "p1.npz") as z:
        assert z["embedding__m"][0] == 7.0  # not replaced by the failed try
    assert json.loads((tmp_path / "p1.json").read_text())["value"] == 7.0


def test_a_retry_replaces_the_failed_try(tmp_path):
    batch = DurableBatch()
    with batch.place(0):
        write_place(tmp_path, 0, 1.0)
    with batch.place(0):  # the same place again (write_one's retry after a failed try)
        write_place(tmp_path, 0, 2.0)
    assert len(temps(tmp_path)) == 2
    assert batch.commit() == [0]
    with np.load(tmp_path / "p0.npz") as z:
        assert z["embedding__m"][0] == 2.0


def test_discard_lands_nothing(tmp_path):
    batch = DurableBatch()
    for i in range(3):
        with batch.place(i):
            write_place(tmp_path, i)
    assert sorted(batch.discard()) == [0, 1, 2]
    assert list(tmp_path.iterdir()) == []
    assert batch.commit() == []


def test_a_refused_name_fails_that_place_only(tmp_path):
    """Place 1's array file cannot take its name (a folder holds it): places 0 and 2 land,
    place 1 lands neither file and is reported as a failed write (the run goes on, as for
    any place whose file cannot be written), and no temp file is left."""
    batch = DurableBatch()
    for i in range(3):
        with batch.place(i):
            write_place(tmp_path, i)
    (tmp_path / "p1.npz").mkdir()
    (tmp_path / "p1.npz" / "x").write_text("a folder in the way")
    written, manifests = ["ok"] * 3, ["{}"] * 3
    _commit(batch, written, manifests)
    assert batch.landed == [0, 2] and list(batch.failed) == [1]
    assert written == ["ok", col.STATUS_WRITE_FAILED, "ok"]
    assert "p1.npz" in json.loads(manifests[1])["error"]
    assert temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p0.json",
        "p0.npz",
        "p1.npz",
        "p2.json",
        "p2.npz",
    ]


def test_a_half_landed_place_loses_its_stale_half(tmp_path):
    """Place 0 had an earlier run's pair; its new npz lands, then its sidecar's name is
    refused: neither the new npz nor the old sidecar is left (whole or absent)."""
    write_place(tmp_path, 0, 7.0)
    batch = DurableBatch()
    with batch.place(0):
        write_place(tmp_path, 0, 1.0)
    (tmp_path / "p0.json").unlink()
    (tmp_path / "p0.json").mkdir()
    (tmp_path / "p0.json" / "x").write_text("a folder in the way")
    assert batch.commit() == [] and list(batch.failed) == [0]
    assert not (tmp_path / "p0.npz").exists() and temps(tmp_path) == []


@pytest.fixture
def small_disk(mount_tmpfs):
    return mount_tmpfs("1m")


def test_a_read_only_output_stops_the_commit(small_disk):
    """The output turns read-only between the writes and the commit (a real remount): the
    commit raises ``OutputWriteError`` naming what to do, no place lands, and the per-item
    writer reports every place as an output error, which stops the run."""
    batch = DurableBatch()
    for i in range(3):
        with batch.place(i):
            write_place(small_disk, i)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    written, manifests = ["ok"] * 3, ["{}"] * 3
    _commit(batch, written, manifests)
    assert batch.landed == [] and written == [col.STATUS_OUTPUT_ERROR] * 3
    assert json.loads(manifests[0])["errno"] == errno.EROFS
    assert not list(small_disk.glob("p*.npz"))
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    batch = DurableBatch()
    with batch.place(0):
        write_place(small_disk, 0)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(OutputWriteError, match="read-only"):
        batch.commit()


def test_outside_a_place_writes_land_at_once(tmp_path):
    """``atomic_path`` with no batch around it (shards, combined files, the driver's files):
    fsync'ed and renamed before the call returns, as always."""
    batch = DurableBatch()
    with batch.place(0):
        write_place(tmp_path, 0)
    write_place(tmp_path, 1)  # not in a place: lands now
    assert (tmp_path / "p1.npz").exists() and (tmp_path / "p1.json").exists()
    assert not (tmp_path / "p0.npz").exists()
    batch.commit()
    assert (tmp_path / "p0.npz").exists()
