"""The per-place fingerprints (patch, pair, item) are computed from place-independent parts
made JSON-plain once per plan (the driver fingerprints every place three or four times). They
must stay byte-for-byte what the full formula gives, or every earlier run's steps would be
fetched and embedded again on resume: each is checked here against that formula, written out
from the fingerprint definitions (contract §2.6) through ``manifest.fingerprint``, which makes
the whole payload plain again, over plans with several models and groups, frame bins, own
windows, a weights option and an int8 dtype."""

from __future__ import annotations

from typing import Any

import pytest

from rs_embed_ray import PointBuffer, TemporalSpec
from rs_embed_ray.api import plan_export
from rs_embed_ray.io.manifest import fingerprint, jsonable
from rs_embed_ray.plan import ExportPlan
from tests.conftest import tiny_raster_source

RUN = TemporalSpec.range("2022-06-01", "2022-09-01")


def _request(plan: ExportPlan) -> dict[str, Any]:
    payload = {
        "models": [
            {
                "name": m.name,
                "backend": plan.backend,
                "sensor": m.sensor,
                "model_config": m.model_config,
                "weights": m.weights,
                **m.code_version_payload(),
            }
            for m in plan.models
        ],
        "temporal": plan.temporal,
        "output": plan.output,
        "format": plan.format,
        "save_inputs": bool(plan.save_inputs),
        "save_embeddings": bool(plan.save_embeddings),
        "input_prep": plan.input_prep,
    }
    if plan.dtype != "float32":
        payload["dtype"] = plan.dtype
    return payload


def _place(plan: ExportPlan, i: int) -> dict[str, Any]:
    return {
        "backend": plan.backend,
        "source": plan.provider_options.get("source"),
        "spatial": plan.spatials[i],
        "temporal": plan.temporal_of(i),
    }


def _plans(tmp_path) -> list[ExportPlan]:
    src = str(tiny_raster_source(tmp_path))
    places = [PointBuffer(15.0 + 0.01 * i, 45.0, 160.0 + i) for i in range(3)]
    base = dict(spatials=places, temporal=RUN, out=str(tmp_path / "o"), backend="local")
    return [
        plan_export(**base, models=["spectral_stats"], layout="per_item", source=src),
        plan_export(
            **{**base, "out": str(tmp_path / "c.nc")},
            models=["spectral_stats", "galileo"],
            weights={"galileo": "random"},
            layout="combined",
            format="netcdf",
            source=src,
            temporals=[None, TemporalSpec.range("2022-06-15", "2022-07-15"), None],
            dtype="int8",
        ),
    ]


@pytest.mark.parametrize("which", [0, 1])
def test_fast_fingerprints_equal_the_full_formula(tmp_path, which):
    plan = _plans(tmp_path)[which]
    assert len(plan.models) >= 1 and plan.groups
    for i in range(plan.n_items):
        want_item = fingerprint(
            {**_request(plan), "temporal": plan.temporal_of(i), "spatial": plan.spatials[i]}
        )
        assert plan.item_fingerprint(i) == want_item
        for g in plan.groups:
            group = {"sensor": g.sensor.identity(), "n_frames": g.n_frames}
            if g.frame_bins:
                group["frame_bins"] = g.frame_bins
            assert plan.patch_fingerprint(i, g) == fingerprint({**_place(plan, i), **group})
        for m in plan.models:
            want_pair = fingerprint(
                {
                    **_place(plan, i),
                    "output": plan.output,
                    "input_prep": plan.input_prep,
                    "model": m.fingerprint_payload(),
                }
            )
            assert plan.pair_fingerprint(i, m) == want_pair
    # the fingerprints tell places, models and groups apart
    fps = {plan.item_fingerprint(i) for i in range(plan.n_items)}
    fps |= {plan.pair_fingerprint(i, m) for i in range(plan.n_items) for m in plan.models}
    fps |= {plan.patch_fingerprint(i, g) for i in range(plan.n_items) for g in plan.groups}
    n = plan.n_items * (1 + len(plan.models) + len(plan.groups))
    assert len(fps) == n


def test_cached_parts_are_plain_and_not_shared_with_callers(tmp_path):
    plan = _plans(tmp_path)[1]
    assert any(g.frame_bins for g in plan.groups)  # galileo's 30-day bins are covered
    assert jsonable(plan._payload_plain) == plan._payload_plain
    before = plan.item_fingerprint(0)
    # a fingerprint's dict is a new one each time: the cached parts are never changed
    assert plan.item_fingerprint(0) == before
