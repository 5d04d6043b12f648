"""Catalog data: all 20 rs-embed ids, aliases, statuses, cheap import, no ray in models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.catalog import CATALOG, CATALOG_IDS, IMPLEMENTATIONS, MODEL_ALIASES
from rs_embed_ray.models.registry import get_info, require_available

PKG = Path(__file__).resolve().parents[2] / "rs_embed_ray"


def test_all_twenty_ids_are_catalogued():
    assert len(CATALOG_IDS) == 20 and set(CATALOG_IDS) <= set(CATALOG)
    for mid in CATALOG_IDS:
        info = CATALOG[mid]
        assert info.model_id == mid
        assert info.weights_source, mid
        assert info.dim_pooled, mid
        desc = info.describe()
        assert desc["model"] == mid and desc["status"] in ("available", "planned")
        if info.kind == "on_the_fly":
            assert info.sensor is not None and info.image_size, mid
            assert info.sensor.bands, mid


def test_status_matches_implementations():
    for mid in CATALOG_IDS:
        assert (CATALOG[mid].status == "available") == (mid in IMPLEMENTATIONS), mid


def test_aliases_resolve_into_catalog():
    for alias, mid in MODEL_ALIASES.items():
        assert get_info(alias).model_id == mid


def test_selected_facts_from_the_spec():
    assert CATALOG["prithvi"].sensor.scale_m == 30
    assert CATALOG["prithvi"].sensor.bands == ("B2", "B3", "B4", "B8A", "B11", "B12")
    assert CATALOG["dofa"].sensor.bands[:3] == ("B4", "B3", "B2")
    assert CATALOG["anysat"].fetch_semantics == "multi:8"
    assert CATALOG["remoteclip"].fetch_semantics == "single"
    assert CATALOG["gse"].kind == "precomputed" and CATALOG["gse"].sensor.fill_value == -9999
    assert CATALOG["olmoearth"].grid_hw == (64, 64)


def test_planned_model_is_refused_clearly(monkeypatch):
    from rs_embed_ray.models.base import ModelInfo

    # a stand-in: the real catalog's planned ids are being implemented one by one
    monkeypatch.setitem(CATALOG, "zz_planned", ModelInfo("zz_planned", "planned", None))
    with pytest.raises(ModelError, match="not implemented yet"):
        require_available("zz_planned")


def test_catalog_import_is_cheap():
    code = (
        "import sys, rs_embed_ray.models.registry as r; r.list_models(); "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)


@pytest.mark.parametrize(
    "path", sorted([*PKG.joinpath("models").glob("*.py"), PKG / "testing" / "checkpoints.py"])
)
def test_no_ray_import_in_models(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "ray" for a in node.names), path
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "ray", path
