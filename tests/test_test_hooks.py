"""Test hooks stay out of production paths: faults attach by wrapping a registered test
provider or model, and the plan carries every implementation target to Ray's workers (a
registration in the driver is not seen there). No Ray here; the fault tests under
tests/faults/ run the wrapped provider and model on the real cluster."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rs_embed_ray
from rs_embed_ray.api import plan_export
from rs_embed_ray.errors import ModelError, ProviderError
from rs_embed_ray.models.registry import register_model
from rs_embed_ray.providers import create_provider, provider_target, register_provider
from rs_embed_ray.testing import faults
from tests.conftest import tiny_raster_source

PACKAGE = Path(rs_embed_ray.__file__).parent


def _production_modules() -> list[Path]:
    return [
        p for p in sorted(PACKAGE.rglob("*.py")) if "testing" not in p.relative_to(PACKAGE).parts
    ]


def test_no_production_module_imports_testing_or_reads_a_faults_key():
    offenders = []
    for path in _production_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "rs_embed_ray.testing"
            ):
                offenders.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("rs_embed_ray.testing")
                ]
            elif isinstance(node, ast.Constant) and node.value == "faults":
                offenders.append(f"{path.name}:{node.lineno}: the key 'faults'")
    assert len(_production_modules()) > 30  # the walk saw the package
    assert offenders == []


def test_register_refuses_a_target_that_is_not_module_attr():
    with pytest.raises(ProviderError, match="'module:factory'"):
        register_provider("nowhere", "rs_embed_ray.providers.local")
    with pytest.raises(ModelError, match="'module:Class'"):
        register_model("nowhere", "rs_embed_ray.models.spectral_stats", like="spectral_stats")
    with pytest.raises(ProviderError, match="Unknown backend 'nowhere'"):
        provider_target("nowhere")


def test_a_worker_builds_from_the_target_without_a_registration(tmp_path):
    """What a fetch actor does: the name is unknown in its registry, the target is enough."""
    src = tiny_raster_source(tmp_path)
    target = "rs_embed_ray.testing.faults:FaultInjectingProvider"
    provider = create_provider("never-registered", target=target, wraps="local", source=str(src))
    try:
        assert isinstance(provider, faults.FaultInjectingProvider)
        assert provider.inner.name == "local"
    finally:
        provider.close()


def test_plan_carries_the_targets_of_test_and_real_implementations(tmp_path):
    src = tiny_raster_source(tmp_path)
    common = dict(temporal=None, out=str(tmp_path / "o"), layout="per_item")
    spatials = [rs_embed_ray.PointBuffer(15.0, 45.0, 160.0)]
    plan = plan_export(
        spatials=spatials,
        models=[faults.MODEL, "remoteclip"],
        model_configs={faults.MODEL: {"exit_in_init": False}},
        **faults.faulty_local(src, latency_s=0.0),
        **common,
    )
    assert plan.backend == faults.PROVIDER
    assert plan.provider_target == "rs_embed_ray.testing.faults:FaultInjectingProvider"
    assert plan.provider_options == {
        "wraps": "local",
        "source": str(src.resolve()),
        "latency_s": 0.0,
    }
    targets = {m.name: m.target for m in plan.models}
    assert targets == {
        faults.MODEL: "rs_embed_ray.testing.faults:CrashingSpectralStats",
        "remoteclip": "rs_embed_ray.models.remoteclip:RemoteCLIP",
    }
    # the test model shares spectral_stats' catalog facts, hence its fetch
    assert plan.model(faults.MODEL).info.sensor == plan.model(faults.MODEL).sensor
    plain = plan_export(
        spatials=spatials, models=["spectral_stats"], backend="local", source=str(src), **common
    )
    assert plain.provider_target == "rs_embed_ray.providers.local:LocalProvider"
    assert plain.models[0].target == "rs_embed_ray.models.spectral_stats:SpectralStats"


def test_the_test_model_refuses_options_it_does_not_read(tmp_path):
    faults.register()
    with pytest.raises(ModelError, match="unknown model_config key"):
        plan_export(
            spatials=[rs_embed_ray.PointBuffer(15.0, 45.0, 160.0)],
            temporal=None,
            models=[faults.MODEL],
            model_configs={faults.MODEL: {"faults": {"exit_on_call": 1}}},
            out=str(tmp_path / "o"),
            layout="per_item",
            **faults.faulty_local(tiny_raster_source(tmp_path)),
        )
