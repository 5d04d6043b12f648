"""The public contract of export_batch / export_npz (issue 21): the seed's visible signature
and rs-embed 0.3.1's object style (ExportTarget, ExportConfig, ExportModelRequest, fetch,
modality), checked through the plan, without a cluster."""

from __future__ import annotations

import inspect

import pytest

from rs_embed_ray import (
    ExportConfig,
    ExportModelRequest,
    ExportTarget,
    FetchSpec,
    ModelError,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    TemporalSpec,
    export_batch,
    export_npz,
)
from rs_embed_ray.api import plan_export
from rs_embed_ray.options import ExportOptions, default
from tests.conftest import tiny_raster_source

# the seed API page (shared/spec/seed_export_api.md), verbatim: names, order, defaults
SEED_BATCH = [
    ("spatials", inspect.Parameter.empty),
    ("temporal", inspect.Parameter.empty),
    ("models", inspect.Parameter.empty),
    ("out", None),
    ("layout", None),
    ("out_dir", None),
    ("out_path", None),
    ("names", None),
    ("backend", "gee"),
    ("device", "auto"),
    ("output", OutputSpec.pooled()),
    ("sensor", None),
    ("per_model_sensors", None),
    ("format", "npz"),
    ("save_inputs", True),
    ("save_embeddings", True),
    ("save_manifest", True),
    ("fail_on_bad_input", False),
    ("chunk_size", 16),
    ("num_workers", 8),
    ("continue_on_error", False),
    ("max_retries", 0),
    ("retry_backoff_s", 0.0),
    ("async_write", True),
    ("writer_workers", 2),
    ("resume", False),
    ("show_progress", True),
    ("input_prep", "resize"),
]
SEED_NPZ = [
    ("spatial", inspect.Parameter.empty),
    ("temporal", inspect.Parameter.empty),
    ("models", inspect.Parameter.empty),
    ("out_path", inspect.Parameter.empty),
    ("backend", "gee"),
    ("device", "auto"),
    ("output", OutputSpec.pooled()),
    ("sensor", None),
    ("per_model_sensors", None),
    ("save_inputs", True),
    ("save_embeddings", True),
    ("save_manifest", True),
    ("fail_on_bad_input", False),
    ("continue_on_error", False),
    ("max_retries", 0),
    ("retry_backoff_s", 0.0),
    ("input_prep", "resize"),
]

T = TemporalSpec.range("2022-06-01", "2022-09-01")
P = [PointBuffer(15.0, 45.0, 160.0), PointBuffer(15.01, 45.0, 160.0)]


@pytest.mark.parametrize("fn,seed", [(export_batch, SEED_BATCH), (export_npz, SEED_NPZ)])
def test_signature_is_the_seeds_then_ours(fn, seed):
    params = list(inspect.signature(fn).parameters.values())
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    assert [(p.name, p.default) for p in params[: len(seed)]] == seed
    # ours come after, and every default is the options object's (stated once)
    for p in params:
        if p.default is not inspect.Parameter.empty:
            assert p.default == default(p.name), p.name
    assert "chunk_size" in (inspect.getdoc(fn) or "") or fn is export_npz


def test_every_option_reaches_export_batch():
    """export_batch shows every public option of ExportOptions, in the same order."""
    shown = list(inspect.signature(export_batch).parameters)
    from rs_embed_ray.options import PUBLIC_OPTIONS

    assert shown == list(PUBLIC_OPTIONS)


def test_a_misspelt_keyword_is_refused():
    with pytest.raises(TypeError, match="chunksize"):
        export_batch(spatials=P, temporal=T, models=["remoteclip"], out_dir="x", chunksize=4)


def test_async_write_says_what_it_does():
    doc = inspect.getdoc(export_batch) or ""
    assert "async_write" in doc and "changes nothing" in doc


# -- rs-embed 0.3.1 object style -------------------------------------------------------------


def base(tmp_path, **kw):
    source = str(tiny_raster_source(tmp_path))  # a plan opens a local source's first raster
    d = dict(spatials=P, temporal=T, models=["remoteclip"], backend="local", source=source)
    d.update(kw)
    return d


def test_export_target_per_item_and_combined(tmp_path):
    plan = plan_export(
        **base(tmp_path, target=ExportTarget.per_item(str(tmp_path / "pi"), names=["a", "b"]))
    )
    assert plan.layout == "per_item" and plan.names == ["a", "b"]
    assert plan.out_path == (tmp_path / "pi").resolve()
    plan = plan_export(**base(tmp_path, target=ExportTarget.combined(str(tmp_path / "run"))))
    assert plan.layout == "combined" and plan.out_path.name == "run.npz"


def test_export_config_maps_onto_the_seed_keywords(tmp_path):
    cfg = ExportConfig(
        format="netcdf",
        chunk_size=4,
        num_workers=3,
        continue_on_error=True,
        max_retries=2,
        save_manifest=False,
        show_progress=False,
        input_prep="tile",
    )
    plan = plan_export(
        **base(tmp_path, target=ExportTarget.combined(str(tmp_path / "r")), config=cfg)
    )
    assert plan.format == "netcdf" and plan.out_path.name == "r.nc"
    run = plan.run
    assert (run.infer.batch_size, run.fetch.in_flight, run.retry.max_retries) == (4, 3, 2)
    assert run.continue_on_error and not plan.save_manifest and not run.show_progress
    assert plan.input_prep.mode == "tile"
    # infer_batch_size is our inference batch size (chunk_size)
    cfg = ExportConfig(chunk_size=16, infer_batch_size=8)
    plan = plan_export(**base(tmp_path, out_dir=str(tmp_path / "o"), config=cfg))
    assert plan.run.infer.batch_size == 8


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(out_dir="o"), "target=ExportTarget"),
        (dict(names=["a", "b"]), "names"),
        (dict(chunk_size=4, config=ExportConfig()), "chunk_size="),
        (dict(input_prep="tile", config=ExportConfig(input_prep="auto")), "pass it once"),
        (dict(sensor=SensorSpec("C", ("B4",)), fetch=FetchSpec(scale_m=20)), "not both"),
    ],
)
def test_both_styles_setting_one_thing_is_an_error(tmp_path, kw, match):
    target = ExportTarget.per_item(str(tmp_path / "pi"))
    args = base(tmp_path, target=target, **kw)
    with pytest.raises(ModelError, match=match):
        plan_export(**args)


def test_fetch_spec_overrides_the_default_sensor(tmp_path):
    plan = plan_export(
        **base(tmp_path, out_dir=str(tmp_path / "o"), fetch=FetchSpec(scale_m=20, cloudy_pct=5))
    )
    s = plan.models[0].sensor
    assert (s.scale_m, s.cloudy_pct) == (20, 5)
    assert s.bands == ("B4", "B3", "B2")  # the rest is the model's default sensor


def test_export_model_request_per_model_overrides(tmp_path):
    own = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B2", "B3", "B4", "B8"), scale_m=30)
    models = [
        ExportModelRequest.configure("remoteclip", fetch=FetchSpec(composite="mosaic")),
        ExportModelRequest(name="spectral_stats", sensor=own),
    ]
    plan = plan_export(**base(tmp_path, models=models, out_dir=str(tmp_path / "o")))
    rc, ss = plan.models
    assert rc.name == "remoteclip" and rc.sensor.composite == "mosaic"
    assert ss.sensor == own
    with pytest.raises(ModelError, match="not both"):
        ExportOptions(
            spatials=P,
            temporal=T,
            models=[ExportModelRequest("remoteclip", sensor=own, fetch=FetchSpec(scale_m=20))],
        ).flat()


def test_modality(tmp_path):
    # terrafm's default sensor is Sentinel-2: rs-embed's spellings of it are accepted
    plan = plan_export(
        **base(tmp_path, models=["terrafm"], modality="Sentinel-2", out_dir=str(tmp_path / "o"))
    )
    assert plan.models[0].sensor.modality == "s2"
    with pytest.raises(ModelError, match="does not expose modality"):
        plan_export(**base(tmp_path, modality="s1", out_dir=str(tmp_path / "o")))


def test_the_fetch_hint_in_an_error_message_is_a_real_keyword(tmp_path):
    """OutputSpec's error tells users to pass fetch=FetchSpec(scale_m=...): it works."""
    with pytest.raises(Exception, match=r"fetch=FetchSpec\(scale_m"):
        OutputSpec.pooled(scale_m=20)
    plan = plan_export(**base(tmp_path, out_dir=str(tmp_path / "o"), fetch=FetchSpec(scale_m=20)))
    assert plan.models[0].sensor.scale_m == 20
