"""Bad input: each case raises a clear error before any Ray work (no cluster needed)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from rs_embed_ray import (
    BBox,
    ModelError,
    OutputSpec,
    PointBuffer,
    SensorSpec,
    SpecError,
    TemporalSpec,
)
from rs_embed_ray.api import plan_export
from tests.conftest import tiny_raster_source

T = TemporalSpec.range("2022-06-01", "2022-09-01")
P = PointBuffer(15.0, 45.0, 160.0)


def base(tmp_path, **kw):
    d = dict(
        spatials=[P, PointBuffer(15.01, 45.0, 160.0)],
        temporal=T,
        models=["remoteclip"],
        out=str(tmp_path / "o"),
        layout="per_item",
        backend="local",
        source=str(tiny_raster_source(tmp_path)),
    )
    d.update(kw)
    return d


CASES = [
    ("empty spatials", dict(spatials=[]), ModelError, "non-empty"),
    ("tuple spatials", dict(spatials=(P,)), ModelError, "non-empty"),
    ("not a spec", dict(spatials=[(15, 45)]), ModelError, "Invalid spatial spec type"),
    ("lon out of range", dict(spatials=[PointBuffer(200, 45, 10)]), SpecError, "lon"),
    ("lat NaN", dict(spatials=[PointBuffer(15, math.nan, 10)]), SpecError, "finite"),
    (
        "buffer <= 0",
        dict(spatials=[PointBuffer(15, 45, 0)]),
        SpecError,
        "buffer_m must be positive",
    ),
    ("bbox inverted", dict(spatials=[BBox(15, 45, 14, 46)]), SpecError, "Invalid bbox bounds"),
    ("bbox crs", dict(spatials=[BBox(15, 45, 16, 46, crs="EPSG:3857")]), SpecError, "EPSG:4326"),
    ("names length", dict(names=["a"]), ModelError, "same length"),
    ("duplicate names", dict(names=["a", "A"]), ModelError, "Duplicate name"),
    ("name with separator", dict(names=["a", "x/y"]), ModelError, "not a safe file name"),
    ("name dotdot", dict(names=["a", ".."]), ModelError, "not a safe file name"),
    ("absolute name", dict(names=["a", "/etc/passwd"]), ModelError, "not a safe file name"),
    ("unknown model", dict(models=["nope"]), ModelError, "Unknown model 'nope'"),
    ("empty models", dict(models=[]), ModelError, "non-empty"),
    ("same model twice", dict(models=["remoteclip", "remoteclip_s2rgb"]), ModelError, "Duplicate"),
    ("format nc", dict(format="nc"), ModelError, "Unsupported export format"),
    ("out without layout", dict(layout=None), ModelError, "Provide both out and layout"),
    ("out + out_dir", dict(out_dir="x"), ModelError, "not both"),
    ("bad layout", dict(layout="flat"), ModelError, "Unknown layout"),
    (
        "range start>=end",
        dict(temporal=TemporalSpec.range("2022-09-01", "2022-06-01")),
        SpecError,
        "start < end",
    ),
    (
        "range not iso",
        dict(temporal=TemporalSpec.range("2022/06/01", "2022-09-01")),
        SpecError,
        "ISO dates",
    ),
    ("year missing", dict(temporal=TemporalSpec(mode="year")), SpecError, "requires year"),
    ("year range", dict(temporal=TemporalSpec.year(0)), SpecError, "[1, 9999]"),
    ("local without source", dict(source=None), ModelError, "needs source"),
    ("missing source", dict(source="/nonexistent/x"), ModelError, "does not exist"),
    (
        "missing weights file",
        dict(weights={"remoteclip": "/nonexistent.pt"}),
        ModelError,
        "does not exist",
    ),
    ("weights for other model", dict(weights={"prithvi": "random"}), ModelError, "not among"),
    (
        "per_model_sensors other",
        dict(per_model_sensors={"dofa": SensorSpec("C", ("B1",))}),
        ModelError,
        "not among",
    ),
    ("chunk_size 0", dict(chunk_size=0), ModelError, "chunk_size must be >= 1"),
    ("num_workers bad", dict(num_workers="many"), ModelError, "num_workers must be an integer"),
    ("input_prep bad", dict(input_prep="crop"), ModelError, "input_prep string"),
    ("device bad", dict(device="tpu"), ModelError, "Unknown device"),
    (
        "nothing to save",
        dict(save_inputs=False, save_embeddings=False),
        ModelError,
        "Nothing to export",
    ),
    ("unknown backend", dict(backend="s3"), ModelError, "Unknown backend"),
]


@pytest.mark.parametrize("case,kw,exc,msg", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, case, kw, exc, msg):
    with pytest.raises(exc) as info:
        plan_export(**base(tmp_path, **kw))
    assert msg in str(info.value)


def test_planned_model_refused(tmp_path, monkeypatch):
    """A catalog id without an implementation (a stand-in entry: the real catalog's planned
    ids are being implemented one by one) is refused before any Ray work."""
    from rs_embed_ray.models.base import ModelInfo
    from rs_embed_ray.models.catalog import CATALOG

    monkeypatch.setitem(CATALOG, "zz_planned", ModelInfo("zz_planned", "planned", None))
    with pytest.raises(ModelError, match="not implemented"):
        plan_export(**base(tmp_path, models=["zz_planned"]))


def test_output_under_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelError, match="which is a file"):
        plan_export(**base(tmp_path, out=str(f / "sub")))


def test_output_spec_validation():
    with pytest.raises(SpecError, match="Unknown output mode"):
        OutputSpec(mode="cube")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="scale_m is no longer supported"):
        OutputSpec.pooled(scale_m=10)


def test_combined_extension_replaced_not_appended(tmp_path):
    plan = plan_export(**base(tmp_path, out=str(tmp_path / "g.nc"), layout="combined"))
    assert plan.out_path.name == "g.npz"
    plan = plan_export(
        **base(tmp_path, out=str(tmp_path / "run"), layout="combined", format="netcdf")
    )
    assert plan.out_path.name == "run.nc"


def test_range_temporal_is_deterministic():
    """The anchor's range spec carried a function object; ours serialises year as None."""
    import dataclasses

    t = TemporalSpec.range("2022-01-01", "2022-02-01")
    assert dataclasses.asdict(t)["year"] is None
    assert TemporalSpec.year(2021).year == 2021
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.start = "x"  # type: ignore[misc]


def test_bad_input_never_imports_ray(tmp_path):
    """A request that fails validation never reaches the pipeline (which imports ray)."""
    code = (
        "import sys\n"
        "from rs_embed_ray import export_batch, PointBuffer, ModelError\n"
        "try:\n"
        f"    export_batch(spatials=[PointBuffer(15,45,10)], temporal=None, models=['nope'], "
        f"out={str(tmp_path / 'o')!r}, layout='per_item')\n"
        "except ModelError:\n"
        "    pass\n"
        "print('ray' in sys.modules, 'rs_embed_ray.pipeline.runner' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    assert not (tmp_path / "o").exists()
