"""Resume after a fix that changed a model's numbers: a bumped ``ModelInfo.code_version``
changes the pair and request fingerprints, so nothing the older code embedded is adopted."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rs_embed_ray import TemporalSpec, export_batch
from rs_embed_ray.io.state import RunState
from rs_embed_ray.models.catalog import CATALOG
from tests.conftest import points

pytestmark = pytest.mark.usefixtures("ray_cluster")

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def _counts(state_dir, kind):
    counts: dict[int, int] = {}
    for r in RunState(state_dir).read_log():
        if r["kind"] == kind and r["status"] == "ok":
            counts[r["index"]] = counts.get(r["index"], 0) + 1
    return counts


def test_state_log_of_an_older_code_version_is_not_adopted(tmp_path, raster_source, monkeypatch):
    out = tmp_path / "pi"
    args = dict(
        spatials=points(3),
        temporal=WINDOW,
        models=["spectral_stats"],
        backend="local",
        source=str(raster_source),
        out=str(out),
        layout="per_item",
        show_progress=False,
        num_workers=2,
        chunk_size=2,
    )
    first = export_batch(**args)
    assert [r["models"][0]["describe"]["code_version"] for r in first] == [1, 1, 1]
    state = out / "_rs_embed_ray"
    assert _counts(state, "embed") == {0: 1, 1: 1, 2: 1}

    # the same request, after a fix bumped the model's code version (the planner reads
    # the catalog, so replacing the entry is what a new release of the model does)
    bumped = dataclasses.replace(CATALOG["spectral_stats"], code_version=2)
    monkeypatch.setitem(CATALOG, "spectral_stats", bumped)
    second = export_batch(**args, resume=True)
    assert [bool(r.get("resume_skipped")) for r in second] == [False, False, False]
    assert _counts(state, "embed") == {0: 2, 1: 2, 2: 2}  # every place re-embedded
    man = json.loads((out / "p00000.json").read_text())
    assert man["models"][0]["describe"]["code_version"] == 2

    # and at the new version a resume adopts everything again
    third = export_batch(**args, resume=True)
    assert [bool(r.get("resume_skipped")) for r in third] == [True, True, True]
    assert _counts(state, "embed") == {0: 2, 1: 2, 2: 2}
