"""per_item files written while the run goes on (issues 16 and 17): a place's file is written
by a writer task as soon as its last step is logged, so the files of early places overlap the
fetch and forward of later ones instead of waiting for a pass after the last embedding.

Proof from the run's own log and files: each embedding record carries ``done_at`` (when the
model actor wrote its batch's shard, the worker's clock) and each final file has its mtime
(the writer task's clock; same machine). A run that writes every file after the last batch
(the old final pass) fails ``test_files_are_written_before_the_last_embedding``.
Real exports on the session's Ray cluster: gse grids from the Earth Engine emulator, one
request in flight. A gse batch goes through the model actor at once, so the overlap needs
places that arrive over time; timing alone (1 s a request) was not enough on a loaded CI
machine, where the model actor started after every place was fetched. So the emulator holds
the later half of the places' pixels until a first file exists (``testing.faults.hold_from``): the
outcome no longer depends on the load, and a final pass still fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

N = 8


def _log(state: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (state / "log.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def streamed(module_scratch, ray_cluster) -> dict[str, Any]:
    from rs_embed_ray import OutputSpec, PointBuffer, TemporalSpec, export_batch
    from rs_embed_ray.testing.ee_emulator import EEEmulator
    from rs_embed_ray.testing.faults import hold_from

    out = module_scratch("items") / "out"
    places = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 120.0) for i in range(N)]
    with EEEmulator(latency_ms=200, retry_after_s=0) as emu:
        emu.pixels_gate = hold_from(N // 2, lambda: any(out.glob("*.npz")))
        res = export_batch(
            spatials=places,
            temporal=TemporalSpec.year(2022),
            models=["gse"],
            output=OutputSpec.grid(),
            backend="gee",
            provider_options={"url": emu.url},
            out=str(out),
            layout="per_item",
            format="npz",
            show_progress=False,
            chunk_size=1,  # one place per batch and per writer task
            num_workers=1,
            fetch_threads=1,
        )
    return {"res": res, "out": out, "log": _log(out / "_rs_embed_ray")}


def test_files_are_written_before_the_last_embedding(streamed):
    embeds = [r for r in streamed["log"] if r["kind"] == "embed" and r["status"] == "ok"]
    assert len(embeds) == N and all("done_at" in r for r in embeds)
    last_embed = max(r["done_at"] for r in embeds)
    files = sorted(streamed["out"].glob("*.npz"))
    assert len(files) == N
    early = [f for f in files if f.stat().st_mtime < last_embed]
    assert early, "every file was written after the last embedding (a final pass)"


def test_every_place_is_written_once_and_returned(streamed):
    res = streamed["res"]
    assert list(res.statuses()) == ["ok"] * N
    items = [r["index"] for r in streamed["log"] if r["kind"] == "item"]
    assert sorted(items) == list(range(N))  # one item record each: none written twice
    for i, man in enumerate(res):
        assert man["point_index"] == i
        with np.load(streamed["out"] / f"{man['name']}.npz") as z:
            assert any(k.startswith("embedding") for k in z.files)
