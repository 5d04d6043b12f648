"""format='zarr' (issue 18 item 1, issue 23 item 2): the combined store holds what the combined
netCDF file holds (compared with xarray), written region by region, resumed from the regions
whose markers match, with ``geoemb:`` root attributes valid against the convention's schema.

The first tests call ``io.assemble.write_combined`` in-process on real shard files (no Ray):
the netCDF and Zarr sinks get the same shards, so every stacking case (all rows, missing rows
with ``indices``, rows of different shapes as per-place arrays) is compared cheaply. The last
ones run real exports on the session's Ray cluster (gse grids from the Earth Engine emulator).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from rs_embed_ray.io import zarrstore as zs
from rs_embed_ray.io.assemble import write_combined
from rs_embed_ray.io.shards import write_shard

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "geoemb" / "schema.json"
# attributes that differ by design: when and how each file was written, and our additions
WRITE_ATTRS = {"created_at", "history", "rs_embed_ray_manifest", "zarr_conventions", "proj:code"}
PATH_FIELDS = {"nc_path", "nc_variables", "zarr_path", "zarr_variables", "created_at"}
PATH_FIELDS |= {"completed_at", "manifest_path"}


def _ctx(
    fmt: str, models: list[dict[str, Any]], save_inputs: bool = True, dtype: str = "float32"
) -> dict[str, Any]:
    return {
        "format": fmt,
        "dtype": dtype,
        "save_inputs": save_inputs,
        "save_embeddings": True,
        "save_manifest": True,
        "backend": "local",
        "device": "cpu",
        "temporal": {"mode": "range", "start": "2022-06-01", "end": "2022-09-01"},
        "output": {"mode": "pooled"},
        "input_prep": None,
        "package_version": "test",
        "models": models,
    }


def _model(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "key": name,
        "sensor": {"collection": "COPERNICUS/S2_SR_HARMONIZED"},
        "describe": {"weights_source": "hf:org/repo/model.safetensors"},
        "input_key": name,
        "fetch_key": "g",
        "channels": None,
    }


class Shards:
    """Patches and embeddings of ``n`` places in real shard files (several per step)."""

    def __init__(self, folder: Path, n: int, emb_shape, failed=(), ragged=False, dtype="float32"):
        self.dtype = dtype
        rng = np.random.default_rng(0)
        self.patch: dict[int, dict[str, Any]] = {}
        self.embed: dict[int, dict[str, Any]] = {}
        folder.mkdir(parents=True, exist_ok=True)
        for part in range(0, n, 4):
            idx = range(part, min(n, part + 4))
            ps, es = folder / f"p{part}.npz", folder / f"e{part}.npz"
            patches = {i: (rng.random((3, 8, 8), dtype=np.float32), {"i": i}) for i in idx}
            shape = lambda i: (emb_shape[0], 2 + i % 2, 2) if ragged else emb_shape  # noqa: E731
            embs = {i: (rng.random(shape(i), dtype=np.float32), {"m": i}) for i in idx}
            write_shard(ps, patches)
            write_shard(es, embs)
            for i in idx:
                self.patch[i] = {"status": "ok", "shard": str(ps), "shape": [3, 8, 8]}
                ok = i not in failed
                self.embed[i] = {
                    "status": "ok" if ok else "failed",
                    "shard": str(es) if ok else None,
                    "error": None if ok else "boom",
                    "shape": list(shape(i)),
                }

    def write(self, fmt: str, path: Path, parallel_map=None) -> dict[str, Any]:
        n = len(self.patch)
        return write_combined(
            _ctx(fmt, [_model("m")], dtype=self.dtype),
            path,
            spatials=[{"lon": 10.0 + i, "lat": 45.0, "buffer_m": 100.0} for i in range(n)],
            names=[f"p{i:05d}" for i in range(n)],
            centers=[(10.0 + i, 45.0) for i in range(n)],
            patch_src={"g": self.patch},
            embed_src={"m": self.embed},
            fingerprint="fp",
            parallel_map=parallel_map,
        )


def _same_dataset(nc: Path, store: Path) -> None:
    """Same variables, dims, coordinates, values and attributes (but for WRITE_ATTRS)."""
    with xr.open_dataset(nc) as a, xr.open_zarr(store) as b:
        assert set(a.variables) == set(b.variables)
        assert dict(a.sizes) == dict(b.sizes)
        assert set(a.coords) == set(b.coords) == {"point", "lon", "lat", "name"}
        for k in a.variables:
            assert a[k].dims == b[k].dims, k
            va, vb = np.asarray(a[k].values), np.asarray(b[k].values)
            if vb.dtype == np.int8:  # int8 codes: xarray masks netCDF's -128 fill to float
                assert a[k].encoding["dtype"] == vb.dtype, k
                assert np.array_equal(va, vb.astype(va.dtype), equal_nan=True), k
            elif va.dtype.kind == "f":
                assert va.dtype == vb.dtype and np.array_equal(va, vb, equal_nan=True), k
            else:
                assert [str(x) for x in va.tolist()] == [str(x) for x in vb.tolist()], k
            assert a[k].attrs == b[k].attrs, k
        attrs_a = {k: v for k, v in a.attrs.items() if k not in WRITE_ATTRS}
        attrs_b = {k: v for k, v in b.attrs.items() if k not in WRITE_ATTRS}
        attrs_b = {k: v for k, v in attrs_b.items() if not k.startswith("geoemb:")}
        assert attrs_a == attrs_b
        man_a = json.loads(a.attrs["rs_embed_ray_manifest"])
        man_b = json.loads(b.attrs["rs_embed_ray_manifest"])
        strip = lambda m: {k: v for k, v in m.items() if k not in PATH_FIELDS}  # noqa: E731
        assert strip(man_a) == strip(man_b)


@pytest.mark.parametrize(
    ("emb_shape", "failed", "ragged"),
    [((6,), (), False), ((4, 3, 3), (2, 7), False), ((4,), (1,), True)],
    ids=["pooled", "grid-missing-rows", "per-place-arrays"],
)
def test_store_holds_what_netcdf_holds(tmp_path, monkeypatch, emb_shape, failed, ragged):
    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 3 * 8 * 8 * 3)  # 3 places per input region
    sh = Shards(tmp_path / "shards", 10, emb_shape, failed, ragged)
    man_nc = sh.write("netcdf", tmp_path / "c.nc")
    man_z = sh.write("zarr", tmp_path / "c.zarr")
    assert man_z["zarr_path"] == str(tmp_path / "c.zarr") and man_z["status"] == man_nc["status"]
    _same_dataset(tmp_path / "c.nc", tmp_path / "c.zarr")
    root = zarr.open_group(tmp_path / "c.zarr", mode="r")
    assert root.metadata.zarr_format == 3
    inputs = root["inputs_bchw__m"]
    assert inputs.shards == (3, 3, 8, 8) and inputs.chunks == (1, 3, 8, 8)  # sharded by places
    codec = inputs.compressors[0]
    assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "zstd"
    assert json.loads((tmp_path / "c.json").read_text())["zarr_variables"] == sorted(
        man_z["zarr_variables"]
    )
    # consolidated at the end: one read of the root gives every array's metadata
    meta = json.loads((tmp_path / "c.zarr" / "zarr.json").read_text())
    assert "inputs_bchw__m" in meta["consolidated_metadata"]["metadata"]


def test_pooled_vectors_are_chunked_along_places_unsharded(tmp_path, monkeypatch):
    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 6 * 4)  # 4 places per embedding region
    sh = Shards(tmp_path / "shards", 9, (6,))
    sh.write("zarr", tmp_path / "c.zarr")
    emb = zarr.open_group(tmp_path / "c.zarr", mode="r")["embeddings__m"]
    assert emb.chunks == (4, 6) and emb.shards is None


def _recording(log: list[dict[str, Any]], stop_after: int | None = None):
    """A parallel_map that runs jobs in order and, with ``stop_after``, dies after that many
    (a writer pool killed mid-write: later regions and their markers never get written)."""

    def run(fn, jobs):
        out = []
        for k, job in enumerate(jobs):
            if stop_after is not None and k == stop_after:
                raise RuntimeError("writer killed")
            out.append(fn(job))
            log.append(out[-1])
        return out

    return run


def _chunk_files(store: Path, key: str) -> list[Path]:
    return sorted(p for p in (store / key / "c").rglob("*") if p.is_file())


def test_resume_adopts_intact_regions_and_rewrites_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 3 * 8 * 8 * 2)  # 2 places per region
    sh = Shards(tmp_path / "shards", 10, (4, 3, 3))
    store = tmp_path / "c.zarr"
    first: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="writer killed"):
        sh.write("zarr", store, parallel_map=_recording(first, stop_after=4))
    assert len(first) == 4 and not (tmp_path / "c.json").exists()
    with pytest.raises(ValueError, match="unfinished Zarr store"):
        from rs_embed_ray.io.formats.zarr import ZarrReader

        ZarrReader(str(store))
    # a region whose data was written but whose marker was not (the task died in between)
    root = zarr.open_group(store, mode="r+")
    root[zs.MARKS]["inputs_bchw__m"][1] = np.zeros(2 * zs.DIGEST, np.uint8)
    # a region whose chunk object is damaged after its marker was written
    _chunk_files(store, "inputs_bchw__m")[2].write_bytes(b"not a shard")
    # what a chunk write killed midway leaves on a local disk: zarr's temp file
    stray = store / "inputs_bchw__m" / "c" / "4" / "0" / "0" / "0.1f2e.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half")
    second: list[dict[str, Any]] = []
    man = sh.write("zarr", store, parallel_map=_recording(second))
    adopted = {(r["marks"], r["region"]) for r in second if r["adopted"]}
    assert adopted == {("inputs_bchw__m", 0), ("inputs_bchw__m", 3)}
    assert len(second) == 6  # five input regions (two places each) and one of embeddings
    assert ("embeddings__m", 0) in {(r["marks"], r["region"]) for r in second}
    assert man["status"] == "ok" and not stray.exists()
    sh.write("netcdf", tmp_path / "c.nc")
    _same_dataset(tmp_path / "c.nc", store)  # what the resumed store holds is all correct


def test_resume_does_not_adopt_regions_made_of_other_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 3 * 8 * 8 * 5)
    sh = Shards(tmp_path / "a", 5, (6,))
    sh.write("zarr", tmp_path / "c.zarr")
    other = Shards(tmp_path / "b", 5, (6,))  # same shapes, recomputed rows (new shard files)
    log: list[dict[str, Any]] = []
    other.write("zarr", tmp_path / "c.zarr", parallel_map=_recording(log))
    assert log and not any(r["adopted"] for r in log)
    with xr.open_zarr(tmp_path / "c.zarr") as ds:
        rows = [np.load(other.embed[i]["shard"])[f"d{i}"] for i in range(5)]
        assert np.array_equal(ds["embeddings__m"].values, np.stack(rows))


def test_regions_go_to_a_store_named_by_an_fsspec_url(tmp_path):
    """The store is opened in one function from a path or a URL (object storage later): here
    fsspec's in-memory file system, a real fsspec backend with no server."""
    sh = Shards(tmp_path / "shards", 4, (6,))
    url = f"memory://rs-embed-ray-tests/{tmp_path.name}.zarr"
    layout = zs.StoreLayout(4, ["lon", "lat", "name"])
    assert layout.add_stacked("embeddings__m", 4, (6,)) == 4
    coords = {"lon": [0.0] * 4, "lat": [1.0] * 4, "name": list("abcd")}
    assert not zs.create_store(url, layout, coords, {"title": "t"})
    job = zs.RegionJob(
        url, "embeddings__m", 0, 0, tuple((i, sh.embed[i]["shard"]) for i in range(4))
    )
    assert not zs.run_job(job)["adopted"] and zs.run_job(job)["adopted"]
    zs.consolidate(url)
    with xr.open_zarr(url) as ds:
        want = np.stack([np.load(sh.embed[i]["shard"])[f"d{i}"] for i in range(4)])
        assert np.array_equal(ds["embeddings__m"].values, want)
        assert ds["name"].values.tolist() == list("abcd")


def test_geoemb_root_attributes_validate_against_the_convention_schema(tmp_path):
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    sh = Shards(tmp_path / "shards", 4, (6,))
    sh.write("zarr", tmp_path / "c.zarr")
    doc = json.loads((tmp_path / "c.zarr" / "zarr.json").read_text())
    validator.validate(doc)
    attrs = doc["attributes"]
    assert attrs["geoemb:type"] == "chip" and attrs["geoemb:dimensions"] == 6
    assert attrs["geoemb:chip_layout"]["chip_size"] == [8, 8]  # the fetched patch
    assert attrs["geoemb:model"] == "https://huggingface.co/org/repo"
    assert attrs["geoemb:data_type"] == "float32" and "geoemb:quantization" not in attrs
    # the schema is not vacuous: a chip without its layout is refused
    del doc["attributes"]["geoemb:chip_layout"]
    assert not validator.is_valid(doc)


# -- compact vectors (issue 23 item 3): int8 codes with scales and offsets, float16 ------------


def _rows(sh: Shards, idx) -> np.ndarray:
    return np.stack([np.load(sh.embed[i]["shard"])[f"d{i}"] for i in idx])


@pytest.mark.parametrize(
    ("emb_shape", "failed", "ragged"),
    [((6,), (), False), ((4, 3, 3), (2, 7), False), ((4,), (1,), True)],
    ids=["pooled", "grid-missing-rows", "per-place-arrays"],
)
def test_int8_store_holds_what_int8_netcdf_holds(tmp_path, monkeypatch, emb_shape, failed, ragged):
    from rs_embed_ray.io import quantize as q
    from rs_embed_ray.io.load import load_export

    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 3 * 8 * 8 * 3)  # several regions per stack
    sh = Shards(tmp_path / "shards", 10, emb_shape, failed, ragged, dtype="int8")
    man_nc = sh.write("netcdf", tmp_path / "c.nc")
    man_z = sh.write("zarr", tmp_path / "c.zarr")
    _same_dataset(tmp_path / "c.nc", tmp_path / "c.zarr")  # codes, scales, offsets, attrs
    emb_nc, emb_z = man_nc["models"][0]["embeddings"], man_z["models"][0]["embeddings"]
    assert emb_z == emb_nc and emb_z["dtype"] == "int8"  # the netCDF writer's references
    assert man_z["zarr_variables"] == sorted(man_nc["nc_variables"])  # scales, offsets too
    root = zarr.open_group(tmp_path / "c.zarr", mode="r")
    key = emb_z.get("npz_key") or emb_z["npz_keys"][0]
    assert root[key].dtype == np.int8 and root[q.scale_key(key)].dtype == np.float32
    attrs = root.attrs.asdict()
    assert attrs["geoemb:data_type"] == "int8"
    assert attrs["geoemb:quantization"] == q.describe("int8")
    assert json.loads(attrs["quantization"])["scale_and_offset"]  # netCDF's global attribute
    schema = json.loads(SCHEMA.read_text())
    import jsonschema

    jsonschema.Draft202012Validator(schema).validate(
        json.loads((tmp_path / "c.zarr" / "zarr.json").read_text())
    )
    if ragged:
        return
    ok = [i for i in range(10) if i not in failed]
    want = _rows(sh, ok)
    got = load_export(tmp_path / "c.zarr").embedding("m")
    got = np.stack([np.asarray(g) for g in got]) if isinstance(got, list) else np.asarray(got)
    got = got[ok] if len(got) == 10 else got
    assert got.dtype == np.float32 and 0 < np.abs(got - want).max() < 0.01  # decoded, lossy
    raw = load_export(tmp_path / "c.zarr", dequantize=False).embedding("m")
    if not failed:
        assert np.asarray(raw).dtype == np.int8 and np.abs(np.asarray(raw)).max() == 127


def test_float16_store_and_its_geoemb_quantization(tmp_path):
    from rs_embed_ray.io import quantize as q
    from rs_embed_ray.io.load import load_export

    sh = Shards(tmp_path / "shards", 5, (6,), dtype="float16")
    man = sh.write("zarr", tmp_path / "c.zarr")
    assert man["models"][0]["embeddings"]["dtype"] == "float16"
    with xr.open_zarr(tmp_path / "c.zarr") as ds:
        assert ds["embeddings__m"].dtype == np.float16
        assert "embeddings_scale__m" not in ds.variables
        assert ds.attrs["geoemb:quantization"] == q.describe("float16")
        assert ds.attrs["geoemb:data_type"] == "float16"
    want = _rows(sh, range(5))
    got = np.asarray(load_export(tmp_path / "c.zarr").embedding("m"))
    assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float16))
    raw = np.asarray(load_export(tmp_path / "c.zarr", dequantize=False).embedding("m"))
    assert raw.dtype == np.float16


def test_int8_resume_checks_scales_and_offsets_too(tmp_path, monkeypatch):
    monkeypatch.setattr(zs, "REGION_BYTES", 4 * 4 * 3 * 3 * 2)  # 2 places per grid region
    sh = Shards(tmp_path / "shards", 8, (4, 3, 3), dtype="int8")
    store = tmp_path / "c.zarr"
    first: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="writer killed"):
        sh.write("zarr", store, parallel_map=_recording(first, stop_after=11))
    marks = [(r["marks"], r["region"]) for r in first if r["marks"] == "embeddings__m"]
    assert len(marks) == 3  # eight input regions, then three of the four grid regions
    # damage the offsets of the grid's second region after its marker was written
    root = zarr.open_group(store, mode="r+")
    root["embeddings_offset__m"][2:4] = np.float32(0.5)
    second: list[dict[str, Any]] = []
    sh.write("zarr", store, parallel_map=_recording(second))
    adopted = {(r["marks"], r["region"]) for r in second if r["adopted"]}
    assert ("embeddings__m", 0) in adopted and ("embeddings__m", 2) in adopted
    assert ("embeddings__m", 1) not in adopted and ("embeddings__m", 3) not in adopted
    sh.write("netcdf", tmp_path / "c.nc")
    _same_dataset(tmp_path / "c.nc", store)  # the damaged offsets were written again


def test_per_item_zarr_is_refused_before_ray(tmp_path, raster_source):
    from rs_embed_ray.cli import main
    from tests.conftest import points
    from tests.test_cli import write_points

    pts = write_points(tmp_path / "p.csv", points(1))
    argv = ["export", "--points", str(pts), "--out", str(tmp_path / "o"), "--format", "zarr"]
    argv += ["--layout", "per_item", "--models", "spectral_stats", "--year", "2022"]
    argv += ["--backend", "local", "--source", str(raster_source)]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    assert "layout='combined'" in res.output and not (tmp_path / "o").exists()


# -- a real export on the session's Ray cluster ---------------------------------------------


@pytest.fixture(scope="module")
def gse_store(module_scratch, ray_cluster) -> dict[str, Any]:
    """gse grids (64 bands) of 3 places from the Earth Engine emulator in a Zarr store, two
    writer tasks. (The comparison with netCDF is above, on the same shards, without Ray.)"""
    from rs_embed_ray import OutputSpec, PointBuffer, TemporalSpec, export_batch
    from rs_embed_ray.testing.ee_emulator import EEEmulator

    places = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 120.0) for i in range(3)]
    with EEEmulator(retry_after_s=0) as emu:
        return export_batch(
            spatials=places,
            temporal=TemporalSpec.year(2022),
            models=["gse"],
            output=OutputSpec.grid(),
            backend="gee",
            provider_options={"url": emu.url},
            out=str(module_scratch("gse") / "c"),
            layout="combined",
            format="zarr",
            save_inputs=False,
            show_progress=False,
            writer_workers=2,
        )


def test_gse_grid_store_is_sharded_and_carries_geoemb(gse_store):
    import jsonschema

    assert gse_store["status"] == "ok"
    store = Path(gse_store["zarr_path"])
    assert store.name == "c.zarr"
    emb = zarr.open_group(store, mode="r")["embeddings__gse"]
    assert emb.shards is not None and emb.chunks[0] == 1  # grid output: sharded by places
    doc = json.loads((store / "zarr.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)
    attrs = doc["attributes"]
    assert attrs["geoemb:type"] == "pixel" and attrs["geoemb:dimensions"] == 64
    assert attrs["proj:code"] == "EPSG:3857"
    assert [c["name"] for c in attrs["zarr_conventions"]] == ["geoemb:", "proj:"]
    assert attrs["geoemb:source_data"][0].startswith("https://developers.google.com/earth-engine")
    with xr.open_zarr(store) as ds:
        assert ds["embeddings__gse"].dims == ("point", "band", "y", "x")
        assert ds.sizes["point"] == 3 and ds.sizes["band"] == 64
        assert np.isfinite(ds["embeddings__gse"].values).any()


def test_load_export_inspect_and_resume_read_the_store(gse_store, tmp_path):
    from rs_embed_ray import load_export
    from rs_embed_ray.cli import main
    from rs_embed_ray.io.formats import get_format

    store = gse_store["zarr_path"]
    got = load_export(store)
    assert got.layout == "combined" and got.n_items == 3
    with xr.open_zarr(store) as ds:
        want = ds["embeddings__gse"].values
    assert np.array_equal(np.asarray(got.models["gse"].embeddings), want, equal_nan=True)
    res = CliRunner().invoke(main, ["inspect", store, "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").stat().st_size > 1000
    man = json.loads(Path(store).with_suffix(".json").read_text())
    fmt = get_format("zarr")
    assert fmt.intact(Path(store), man)  # what resume asks before skipping the export
    key = man["zarr_variables"][0]
    zarr.open_group(store, mode="r+")[zs.MARKS][key][0] = np.zeros(2 * zs.DIGEST, np.uint8)
    assert not fmt.intact(Path(store), man)  # a region without its marker: not complete
