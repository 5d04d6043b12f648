"""Issue 23: STAC metadata beside every export (validated offline against the published
schemas), compact vectors (dtype float16 / int8) in every format, and TorchGeo's readers on
a one-model GeoParquet export. One module-scoped set of real exports (remoteclip with a
checkpoint from the tests' writer, on the synthetic raster source) serves every test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from rs_embed_ray import ModelError, TemporalSpec
from rs_embed_ray.api import export_batch, plan_export
from rs_embed_ray.cli import main
from rs_embed_ray.io import quantize as q
from rs_embed_ray.io.load import load_export
from rs_embed_ray.options import ExportConfig, ExportOptions
from tests.conftest import points, tiny_raster_source
from tests.stac.validate import COLLECTION, EMB, ITEM, ITEM_1_1, MLM, PROCESSING, validate

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
N = 3


@pytest.fixture(scope="module")
def exports(ray_cluster, raster_source, remoteclip_ckpt, module_scratch) -> dict[str, Path]:
    """float32 GeoParquet (one model), int8 per-item npz (made float16 by the last test),
    int8 combined netCDF (two models), int8 Zarr store (one model): the same places and model."""
    root = module_scratch("q_stac")
    kw = dict(
        spatials=points(N),
        temporal=WINDOW,
        weights={"remoteclip": str(remoteclip_ckpt)},
        backend="local",
        source=str(raster_source),
        save_inputs=False,
        show_progress=False,
        num_workers=2,
        chunk_size=4,
    )
    both = ["spectral_stats", "remoteclip"]
    out = {
        "pq": root / "one.parquet",
        "pi8": root / "pi8",
        "nc8": root / "two8.nc",
        "z8": root / "one8.zarr",
    }
    export_batch(out=str(out["pq"]), layout="combined", format="geoparquet",
                 models=["remoteclip"], **kw)  # fmt: skip
    export_batch(out=str(out["pi8"]), layout="per_item", format="npz", dtype="int8",
                 models=["remoteclip"], **kw)  # fmt: skip
    export_batch(out=str(out["nc8"]), layout="combined", format="netcdf", dtype="int8",
                 models=both, **kw)  # fmt: skip
    # float16 Zarr is covered in-process (tests/io/test_zarr_format.py): one Ray export here
    export_batch(out=str(out["z8"]), layout="combined", format="zarr", dtype="int8",
                 models=["remoteclip"], **kw)  # fmt: skip
    return out


def _ref(exports) -> np.ndarray:
    return np.asarray(load_export(exports["pq"]).embedding("remoteclip"))


# -- compact vectors -------------------------------------------------------------------------


def test_encode_decode_error_bound_and_edge_cases():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 768)).astype(np.float32)
    codes, scale, offset = q.encode(v, "int8")
    assert codes.dtype == np.int8 and scale.shape == (5,) and codes.min() >= -127
    back = q.decode(codes, scale, offset)
    assert np.all(np.abs(back - v) <= scale[:, None] / 2 + 1e-6)
    grid = rng.normal(size=(2, 16, 3, 4)).astype(np.float32)  # (N, D, h, w): per pixel
    c, s, o = q.encode(grid, "int8")
    assert s.shape == (2, 3, 4)
    assert q.cosine_min(q.decode(c, s, o).transpose(0, 2, 3, 1).reshape(-1, 16),
                        grid.transpose(0, 2, 3, 1).reshape(-1, 16)) > 0.999  # fmt: skip
    const = np.full((1, 8), 3.5, np.float32)
    assert np.allclose(q.decode(*q.encode(const, "int8")), const)
    bad = np.array([[1.0, np.nan, 2.0]], np.float32)
    assert np.isnan(q.decode(*q.encode(bad, "int8"))).all()
    with pytest.raises(ValueError, match="Unknown dtype 'int4'"):
        q.check_dtype("int4")


@pytest.mark.usefixtures("ray_cluster")
def test_int8_and_float16_decode_close_to_float32_in_every_format(exports):
    ref = _ref(exports)
    for key, floor in (("pi8", 0.999), ("nc8", 0.999), ("z8", 0.999)):
        got = load_export(exports[key]).embedding("remoteclip")
        assert np.asarray(got).dtype == np.float32
        assert q.cosine_min(ref, got) >= floor, key
        assert q.cosine_min(ref, got) < 1.0 - 1e-9, key  # really stored compact
    raw = np.asarray(load_export(exports["pi8"], dequantize=False).embedding("remoteclip"))
    assert raw.dtype == np.int8 and np.abs(raw).max() == 127
    da = load_export(exports["nc8"], as_xarray=True).embedding("remoteclip")
    assert da.dtype == np.float32 and da.dims[0] == "item"
    raw = np.asarray(load_export(exports["z8"], dequantize=False).embedding("remoteclip"))
    assert raw.dtype == np.int8 and np.abs(raw).max() == 127  # the Zarr store's codes
    with xr.open_zarr(exports["z8"]) as ds:  # opened without our code: decodable by hand
        codes = ds["embeddings__remoteclip"].values.astype(np.float32)
        scale, offset = (ds[f"embeddings_{s}__remoteclip"].values for s in ("scale", "offset"))
        got = codes * scale[:, None] + offset[:, None]  # the file's formula, by hand
        assert q.cosine_min(ref, got) >= 0.999
        assert ds.attrs["geoemb:quantization"]["quantized_dtype"] == "int8"


@pytest.mark.usefixtures("ray_cluster")
def test_files_hold_codes_with_scale_offset_opened_without_our_code(exports):
    files = sorted(exports["pi8"].glob("*.npz"))
    with np.load(files[0]) as z:
        assert z["embedding__remoteclip"].dtype == np.int8
        assert z["embedding_scale__remoteclip"].shape == ()
        assert z["embedding_offset__remoteclip"].dtype == np.float32
    side = json.loads(files[0].with_suffix(".json").read_text())
    ref = side["models"][0]["embedding"]
    assert ref["dtype"] == "int8" and ref["quantization"]["scale_key"] == (
        "embedding_scale__remoteclip"
    )
    with xr.open_dataset(exports["nc8"]) as ds:
        assert ds["embeddings_scale__remoteclip"].dims == ("point",)
        assert json.loads(ds.attrs["quantization"])["quantized_dtype"] == "int8"
        enc = ds["embeddings__remoteclip"].encoding["dtype"]
        assert enc == np.int8
    with zipfile.ZipFile(files[0]) as zf:  # a quarter of float32's bytes, plus 8
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    assert sizes["embedding__remoteclip.npy"] == 512 + 128  # the codes and the npy header


def test_dtype_refused_at_plan_time(tmp_path):
    base = dict(
        spatials=points(1), temporal=WINDOW, models=["spectral_stats"], backend="local",
        source=str(tiny_raster_source(tmp_path)), out=str(tmp_path / "o.nc"),
        layout="combined", format="netcdf",
    )  # fmt: skip
    with pytest.raises(ModelError, match="format='netcdf' cannot store dtype='float16'"):
        plan_export(ExportOptions(**base, dtype="float16"))
    with pytest.raises(ModelError, match="Unknown dtype 'int4'"):
        plan_export(ExportOptions(**base, dtype="int4"))
    zarr = {**base, "out": str(tmp_path / "o.zarr"), "format": "zarr", "save_inputs": False}
    for dtype in ("int8", "float16"):  # the Zarr store holds both (issue 23 item 3)
        assert plan_export(ExportOptions(**zarr, dtype=dtype)).run_fingerprint()
    cfg = ExportOptions(spatials=[], temporal=None, models=["m"], config=ExportConfig(dtype="int8"))
    assert cfg.flat().dtype == "int8"  # rs-embed 0.3's spelling carries it too
    p32 = plan_export(ExportOptions(**base))
    p8 = plan_export(ExportOptions(**base, dtype="int8"))
    assert p32.run_fingerprint() != p8.run_fingerprint()  # resume treats it as a change
    assert not (tmp_path / "o.nc").exists()
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat\n15.0,45.0\n")
    args = ["export", "--points", str(pts), "--models", "spectral_stats"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "c.nc"), "--dtype", "int4"])
    assert res.exit_code == 2 and "int4" in res.output


# -- STAC ------------------------------------------------------------------------------------


def _stac_docs(exports, key):
    out = exports[key]
    root = out / "stac" if out.is_dir() else out.with_name(out.stem + ".stac")
    return root, {p.relative_to(root).as_posix(): json.loads(p.read_text())
                  for p in root.rglob("*.json")}  # fmt: skip


@pytest.mark.usefixtures("ray_cluster")
def test_stac_collections_and_items_validate_offline(exports):
    for key in ("pq", "nc8"):
        root, docs = _stac_docs(exports, key)
        models = {k.split("/")[0] for k in docs}
        assert models == ({"remoteclip"} if key == "pq" else {"remoteclip", "spectral_stats"})
        for m in models:
            col, item = docs[f"{m}/collection.json"], docs[f"{m}/item.json"]
            validate(col, EMB)
            validate(col, COLLECTION)
            for schema in (EMB, PROCESSING, ITEM):
                validate(item, schema)
            validate(docs[f"{m}/model.json"], MLM)
            validate(docs[f"{m}/model.json"], ITEM_1_1)
            href = item["assets"]["embeddings"]["href"]
            assert (root / m / href).resolve() == exports[key].resolve()
            assert col["emb:type"] == "chip"
            assert {ln["rel"] for ln in col["links"]} >= {"emb:model", "emb:source-data"}
        col = docs["remoteclip/collection.json"]
        props = docs["remoteclip/item.json"]["properties"]
        assert col["emb:dimensions"] == 512 and col["emb:chip_layout"]["chip_size"] == [224, 224]
        assert col["data_type"] == props["emb:runtime_parameters"]["dtype"]
        assert ("emb:quantization" in props) == (col["data_type"] != "float32")
        energy = props["emb:energy"]
        assert energy["device_type"] == "cpu" and energy["inference_duration_s"] > 0
        assert "provider_options" not in props["emb:runtime_parameters"]
        model = docs["remoteclip/model.json"]
        assert model["assets"]["model"]["sha256"] and len(model["properties"]["bands"]) == 3


@pytest.mark.usefixtures("ray_cluster")
def test_per_item_stac_is_one_item_collection_with_an_item_per_place(exports):
    root, docs = _stac_docs(exports, "pi8")
    feats = docs["remoteclip/items.json"]["features"]
    assert len(feats) == N
    for f in feats:
        for schema in (EMB, PROCESSING, ITEM):
            validate(f, schema)
        assert (root / "remoteclip" / f["assets"]["embeddings"]["href"]).is_file()
        assert f["geometry"]["type"] == "Point"
    # what a STAC client reads, without our code
    import pystac

    items = pystac.ItemCollection.from_file(str(root / "remoteclip" / "items.json"))
    assert len(items) == N


# -- TorchGeo --------------------------------------------------------------------------------

_TORCHGEO_SCRIPT = """
import sys
from torchgeo.datasets import ClayEmbeddings, EarthIndexEmbeddings
for cls in (EarthIndexEmbeddings, ClayEmbeddings):
    ds = cls(root=sys.argv[1])
    s = ds[0]
    print(cls.__name__, len(ds), tuple(s["embedding"].shape), str(s["embedding"].dtype),
          float(s["x"]), float(s["y"]))
"""


def _torchgeo_python() -> str | None:
    """An interpreter with torchgeo >= 0.9: $RS_EMBED_RAY_TORCHGEO_PYTHON, else this one."""
    env = os.environ.get("RS_EMBED_RAY_TORCHGEO_PYTHON")
    if env:
        return env
    try:
        import torchgeo
    except ImportError:
        return None
    major, minor = (int(x) for x in torchgeo.__version__.split(".")[:2])
    return sys.executable if (major, minor) >= (0, 9) else None


def test_one_model_geoparquet_opens_with_torchgeo_readers(request):
    python = _torchgeo_python()
    if python is None:
        pytest.skip(
            "TorchGeo's EarthIndexEmbeddings/ClayEmbeddings need torchgeo >= 0.9 (Python >= "
            "3.12); set RS_EMBED_RAY_TORCHGEO_PYTHON to such an interpreter"
        )
    exports = request.getfixturevalue("exports")  # only when TorchGeo can run
    run = subprocess.run(
        [python, "-c", _TORCHGEO_SCRIPT, str(exports["pq"])],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    ref = load_export(exports["pq"])
    lon, lat = ref.spatials[0]["lon"], ref.spatials[0]["lat"]
    assert [ln.split()[0] for ln in lines] == ["EarthIndexEmbeddings", "ClayEmbeddings"]
    for line in lines:
        parts = line.split()
        assert parts[1] == str(N) and parts[2:4] == ["(512,)", "torch.float32"]
        assert abs(float(parts[4]) - lon) < 1e-5 and abs(float(parts[5]) - lat) < 1e-5


# -- resume (last: it rewrites the per-item export) -----------------------------------------


@pytest.mark.usefixtures("ray_cluster")
def test_resume_with_another_dtype_rewrites_files_and_stac(exports, raster_source, remoteclip_ckpt):
    """Last: it turns the int8 per-item export into float16."""
    folder = exports["pi8"]
    export_batch(
        spatials=points(N), temporal=WINDOW, models=["remoteclip"], out=str(folder),
        layout="per_item", format="npz", weights={"remoteclip": str(remoteclip_ckpt)},
        backend="local", source=str(raster_source), save_inputs=False, show_progress=False,
        resume=True,
        dtype="float16",
    )  # fmt: skip
    for f in folder.glob("*.npz"):
        with np.load(f) as z:
            assert z["embedding__remoteclip"].dtype == np.float16
            assert "embedding_scale__remoteclip" not in z.files
    col = json.loads((folder / "stac" / "remoteclip" / "collection.json").read_text())
    assert col["data_type"] == "float16"
    got = load_export(folder).embedding("remoteclip")
    assert np.asarray(got).dtype == np.float32
    assert 1.0 - 1e-9 > q.cosine_min(_ref(exports), got) >= 0.99999
    raw = load_export(folder, dequantize=False).embedding("remoteclip")
    assert np.asarray(raw).dtype == np.float16
