"""``io.atomic.write_json``: the manifests' writer (sidecars, combined manifest, final.json).

It encodes into the temp file, so a big manifest is never one string in memory, and it keeps
the atomic-write promise: a failure midway leaves the previous file and no temp file.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from rs_embed_ray.io.atomic import TMP_MARK, write_json


def _manifest(n: int) -> dict:
    return {
        "names": [f"place_{i}" for i in range(n)],
        "metas": [{"mean": [0.1 * i] * 8, "city": "Zürich"} for i in range(n)],
    }


def test_round_trip_keeps_non_ascii_text(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    obj = _manifest(3)
    write_json(path, obj)
    assert json.loads(path.read_text(encoding="utf-8")) == obj
    assert "Zürich" in path.read_text(encoding="utf-8")  # as rs-embed writes it, not \u00fc


def test_a_failure_midway_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"run": 1})
    bad = {"names": ["a"] * 10_000, "oops": object()}  # encoding fails after many chunks
    with pytest.raises(TypeError):
        write_json(path, bad)
    assert json.loads(path.read_text()) == {"run": 1}
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_the_text_is_never_held_whole(tmp_path: Path) -> None:
    obj = _manifest(20_000)
    size = len(json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8"))
    tracemalloc.start()
    try:
        write_json(tmp_path / "m.json", obj)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "m.json").stat().st_size == size
    # json.dumps + encode held about 2 x size; streaming holds a chunk and the file buffer
    assert peak < size / 4, (peak, size)
