"""Shared helpers of the fault tests: small exports, log counts, file checks, emulator
bookkeeping and a driver script run in a fresh process (and a fresh Ray cluster)."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_ray import TemporalSpec
from rs_embed_ray.io.manifest import array_sha1
from rs_embed_ray.io.state import RunState

REPO = Path(__file__).resolve().parents[2]
WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
EE_ENV = (
    "RS_EMBED_RAY_EE_URL",
    "EE_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def local_kw(source: Path, /, **extra: Any) -> dict[str, Any]:
    """A small, fast export: the parameter-free model, the synthetic raster source."""
    d: dict[str, Any] = dict(
        temporal=WINDOW,
        models=["spectral_stats"],
        backend="local",
        source=str(source),
        show_progress=False,
        num_workers=2,
        chunk_size=2,
    )
    d.update(extra)
    return d


def state_dir(out: Path, layout: str) -> Path:
    return (
        out / "_rs_embed_ray" if layout == "per_item" else out.with_name(out.stem + ".rs_embed_ray")
    )


def records(state: Path) -> list[dict[str, Any]]:
    return list(RunState(state).read_log())


def counts(state: Path, kind: str, status: str | None = None) -> Counter:
    """How many log records of ``kind`` (and ``status``) each place has."""
    return Counter(
        r["index"]
        for r in records(state)
        if r["kind"] == kind and (status is None or r["status"] == status)
    )


def temps(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tmp-*"))


def manifest_intact(array_path: Path) -> dict[str, Any]:
    """The sidecar of a final file, after checking every array it names (sha1)."""
    man = json.loads(array_path.with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(array_path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(man["npz_keys"]), array_path
        for k in z.files:  # every member decompresses and passes its CRC
            z[k]
        for e in man["models"]:
            for k in ("input", "embedding"):
                ref = e.get(k)
                if isinstance(ref, dict) and "sha1" in ref and not ref.get("dedup_reused"):
                    arr = np.asarray(z[ref["npz_key"]], dtype=np.float32)
                    assert array_sha1(arr) == ref["sha1"], (array_path, ref["npz_key"])
    return man


def assert_per_item_complete(out: Path, names: list[str]) -> None:
    """Exactly one array file + sidecar per place, all ok and intact, nothing else."""
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    want = sorted([f"{n}.npz" for n in names] + [f"{n}.json" for n in names])
    assert files == want, files
    for n in names:
        assert manifest_intact(out / f"{n}.npz")["status"] == "ok", n
    assert temps(out) == []


def pixel_places(requests: list[dict[str, Any]], places: list[Any], scale: float = 10.0) -> Counter:
    """computePixels requests per place index (matched on the request's grid origin)."""
    from rs_embed_ray import geo

    origin = {}
    for i, p in enumerate(places):
        a = geo.grid_for(p, scale).affine
        origin[(round(a[2], 3), round(a[5], 3))] = i
    out: Counter = Counter()
    for r in requests:
        if r["kind"] != "computePixels" or not r.get("grid"):
            continue
        a = r["grid"]["affine"]
        key = (round(a[2], 3), round(a[5], 3))
        assert key in origin, f"a pixel request for no known place: {a}"
        out[origin[key]] += 1
    return out


def ok_pixel_places(emu: Any, places: list[Any]) -> Counter:
    return pixel_places([r for r in emu.request_log if r["status"] == 200], places)


@pytest.fixture
def clean_ee_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the developer's real Earth Engine settings or credentials."""
    for name in EE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a driver started as a new process (it starts its own Ray cluster)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    for name in ("RAY_ADDRESS", *EE_ENV):
        env.pop(name, None)
    env.update(extra)
    return env


# A driver in its own process: export_batch with the spec given as JSON in argv[1].
DRIVER = """
import json, sys
from rs_embed_ray import PointBuffer, TemporalSpec, export_batch
from rs_embed_ray.testing import faults
faults.register()  # for a kw that names the fault-injecting backend or model
spec = json.loads(sys.argv[1])
kw = dict(spec["kw"])
kw["temporal"] = TemporalSpec.range(*spec["window"])
kw["spatials"] = [PointBuffer(*p) for p in spec["points"]]
res = export_batch(ray_address="local", show_progress=False, **kw)
items = [res] if isinstance(res, dict) else list(res)
print("DONE", json.dumps([r["status"] for r in items]))
"""


def driver_cmd(places: list[Any], **kw: Any) -> list[str]:
    spec = {
        "points": [[p.lon, p.lat, p.buffer_m] for p in places],
        "window": ["2022-06-01", "2022-09-01"],
        "kw": kw,
    }
    return [sys.executable, "-c", DRIVER, json.dumps(spec)]
