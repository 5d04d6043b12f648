"""Formats as plug-ins: the registry, a new format added as one plug-in (writers, loader and
resume find it without a change elsewhere), the combined sink's commit and abort, and the
integrity checks resume relies on. Real files throughout (npz, netCDF, Parquet), no Ray."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_ray.io.assemble import write_combined
from rs_embed_ray.io.formats import (
    all_extensions,
    format_names,
    get_format,
    guess_format,
    register,
    unregister,
)
from rs_embed_ray.io.formats.arrays import ArraySink
from rs_embed_ray.io.formats.npz import NpzFormat
from rs_embed_ray.io.load import load_export, summarize_export
from rs_embed_ray.io.manifest import array_sha1
from rs_embed_ray.io.npz import NpzStreamWriter
from rs_embed_ray.io.shards import write_shard
from tests.io.writer_ctx import model_spec, writer_ctx

N, D, C, H = 4, 6, 3, 5
TEMPORAL = {"mode": "range", "year": None, "start": "2022-06-01", "end": "2022-09-01"}


def _model(name: str, key: str, fetch_key: str | None) -> dict[str, Any]:
    channels = [2, 0] if fetch_key else None
    return model_spec(name, key, fetch_key, describe={"dim_pooled": D}, channels=channels)


def _ctx(fmt: str, save_inputs: bool = True) -> dict[str, Any]:
    # two models on one fetch: the second one's inputs are the first one's (dedup)
    models = [_model("m-1", "m_1", "g"), _model("m-2", "m_2", "g")]
    return writer_ctx(fmt, models, save_inputs=save_inputs, temporal=TEMPORAL)


def _sources(tmp_path: Path, failed: int = 1) -> tuple[dict, dict]:
    """Shards of patches and embeddings (place ``failed`` has no embedding of m-1)."""
    rng = np.random.default_rng(0)
    patches = {i: (rng.random((C, H, H), dtype=np.float32), {}) for i in range(N)}
    write_shard(tmp_path / "p.npz", patches)
    patch_src = {
        "g": {
            i: {"status": "ok", "shard": str(tmp_path / "p.npz"), "shape": [C, H, H]}
            for i in range(N)
        }
    }
    embed_src: dict[str, dict[int, dict[str, Any]]] = {}
    for k, key in enumerate(("m_1", "m_2")):
        ok = {
            i: (np.arange(D, dtype=np.float32) + 10 * i + k, {"weights": {"w": key}, "i": i})
            for i in range(N)
            if not (key == "m_1" and i == failed)
        }
        write_shard(tmp_path / f"{key}.npz", ok)
        embed_src[key] = {
            i: {"status": "ok", "shard": str(tmp_path / f"{key}.npz"), "shape": [D]}
            if i in ok
            else {"status": "failed", "shard": "", "shape": None, "error": "boom"}
            for i in range(N)
        }
    return patch_src, embed_src


def _write(ctx: dict[str, Any], path: Path, patch_src: dict, embed_src: dict) -> dict[str, Any]:
    spatials = [{"lon": 10.0 + i, "lat": 40.0, "buffer_m": 5.0} for i in range(N)]
    return write_combined(
        ctx,
        path,
        spatials=spatials,
        names=[f"n{i}" for i in range(N)],
        centers=[(10.0 + i, 40.0) for i in range(N)],
        patch_src=patch_src,
        embed_src=embed_src,
        fingerprint="fp",
    )


# -- the registry ----------------------------------------------------------------------------


def test_registry_finds_formats_by_name_and_path():
    assert format_names() == ("npz", "netcdf", "geoparquet", "zarr")
    assert all_extensions() == [".npz", ".nc", ".netcdf", ".parquet", ".zarr"]
    assert guess_format("out/A.NC").name == "netcdf"
    assert guess_format("x.parquet").name == "geoparquet"
    assert guess_format("x.zarr").directory_store and not get_format("zarr").per_item
    assert guess_format("x.json") is None and guess_format("dir") is None
    assert not get_format("geoparquet").per_item and get_format("npz").per_item
    with pytest.raises(ValueError, match="'npz', 'netcdf', 'geoparquet' or 'zarr'"):
        get_format("tiff")


def test_registry_refuses_ambiguous_plugins():
    class Twin(NpzFormat):
        extensions = (".other",)

    with pytest.raises(ValueError, match="already registered"):
        register(Twin())

    class SameSuffix(NpzFormat):
        name = "npz2"

    with pytest.raises(ValueError, match=r"'\.npz' already belongs to format 'npz'"):
        register(SameSuffix())
    assert "npz2" not in format_names()


# -- a new format is one plug-in ---------------------------------------------------------------


class _StoredSink(ArraySink):
    def open_writer(self, places):
        return NpzStreamWriter(self.path, compress=False)

    def on_write_complete(self, manifest):
        manifest["npz_path"] = str(self.path)
        manifest["npz_keys"] = sorted(self.writer.keys)
        self.writer.commit()


class _StoredNpz(NpzFormat):
    """An npz whose members are not compressed, under its own name and extension."""

    name = "npz_stored"
    extensions = (".npzs",)

    def combined_sink(self, path, attrs):
        return _StoredSink(path, attrs)


@pytest.fixture
def stored_format():
    fmt = register(_StoredNpz())
    yield fmt
    unregister(fmt.name)


def test_new_format_plugs_in_without_other_changes(tmp_path, stored_format):
    patch_src, embed_src = _sources(tmp_path)
    ref = _write(_ctx("npz"), tmp_path / "ref.npz", patch_src, embed_src)
    man = _write(_ctx("npz_stored"), tmp_path / "new.npzs", patch_src, embed_src)
    with zipfile.ZipFile(tmp_path / "new.npzs") as z:  # the plug-in's writer wrote it
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    assert man["npz_keys"] == ref["npz_keys"]
    assert [e["status"] for e in man["models"]] == ["partial", "ok"]
    assert man["models"][1]["inputs"]["dedup_reused"] is True
    got, want = load_export(tmp_path / "new.npzs"), load_export(tmp_path / "ref.npz")
    for m in ("m-1", "m-2"):
        np.testing.assert_array_equal(got.models[m].inputs, want.models[m].inputs)
        e = np.asarray(got.embedding(m))
        np.testing.assert_array_equal(e, np.asarray(want.embedding(m)))
    assert np.isnan(np.asarray(got.embedding("m-1"))[1]).all()
    assert summarize_export(tmp_path / "new.npzs")["format"] == "npz_stored"
    assert stored_format.intact(tmp_path / "new.npzs", man)


# -- the combined sink: commit, abort ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npz", "netcdf", "geoparquet"])
def test_failed_combined_write_leaves_nothing(tmp_path, fmt):
    patch_src, embed_src = _sources(tmp_path)
    (tmp_path / "m_2.npz").unlink()  # the second model's shard is gone mid-write
    ext = get_format(fmt).ext
    before = set(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError):
        _write(
            _ctx(fmt, save_inputs=fmt != "geoparquet"),
            tmp_path / f"c{ext}",
            *(patch_src, embed_src),
        )
    assert set(tmp_path.iterdir()) == before  # no file, no sidecar, no temp file


def test_geoparquet_refuses_two_vector_sizes_before_writing(tmp_path):
    patch_src, embed_src = _sources(tmp_path)
    embed_src["m_2"][3]["shape"] = [D + 1]
    with pytest.raises(ValueError, match="one pooled vector size per model; model 'm-2'"):
        _write(_ctx("geoparquet", save_inputs=False), tmp_path / "c.parquet", patch_src, embed_src)
    assert not (tmp_path / "c.parquet").exists()


# -- integrity checks (resume) ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_item_integrity_checks(tmp_path, fmt):
    f = get_format(fmt)
    arrays = {
        "input_chw__m": np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3),
        "embedding__m": np.linspace(0, 1, D, dtype=np.float32),
    }
    refs = {
        k: {"npz_key": k, "shape": list(a.shape), "sha1": array_sha1(a)} for k, a in arrays.items()
    }
    manifest: dict[str, Any] = {
        "models": [{"input": refs["input_chw__m"], "embedding": refs["embedding__m"]}]
    }
    path = tmp_path / f"p00000{f.ext}"
    f.write_item(path, arrays, manifest, {"temporal": TEMPORAL})
    assert f.header_problem(str(path), list(arrays)) is None
    assert f.intact(path, manifest) and f.matches(path, refs)
    assert not f.matches(path, {"embedding__m": refs["embedding__m"]})  # a key too many
    wrong = {**refs, "embedding__m": {**refs["embedding__m"], "sha1": "0" * 40}}
    assert not f.matches(path, wrong)
    f.write_item(path, {**arrays, "embedding__m": arrays["embedding__m"] + 1}, {}, {})
    assert not f.intact(path, manifest)  # same keys, other values
    path.write_bytes(b"garbage!" * 8)
    assert not f.intact(path, manifest) and not f.matches(path, refs)
    assert f.header_problem(str(path), []) is not None


# -- room for a format whose one file is a directory (a Zarr store, say) ----------------------


class _DirReader:
    """Arrays as ``<key>.npy`` files of a directory."""

    def __init__(self, path: str) -> None:
        self.path, self.coords, self.attrs = path, {}, {}
        self.keys = sorted(p.stem for p in Path(path).glob("*.npy"))
        self.names = set(self.keys)

    def read(self, key: str) -> np.ndarray:
        return np.load(Path(self.path) / f"{key}.npy", allow_pickle=False)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.read(key).shape)

    def file_spatials(self) -> None:
        return None

    def file_temporals(self) -> None:
        return None

    def close(self) -> None:
        pass


class _DirStore(NpzFormat):
    name = "npy_dir"
    extensions = (".npydir",)
    directory_store = True

    def open_reader(self, path):
        return _DirReader(path)


def test_a_directory_store_loads_as_one_combined_export(tmp_path):
    store = tmp_path / "c.npydir"
    store.mkdir()
    emb = np.arange(N * D, dtype=np.float32).reshape(N, D)
    np.save(store / "embeddings__m_1.npy", emb)
    manifest = {
        "n_items": N,
        "status": "ok",
        "spatials": [{"lon": float(i), "lat": 0.0} for i in range(N)],
        "models": [{"model": "m-1", "status": "ok", "embeddings": {"npz_key": "embeddings__m_1"}}],
    }
    (tmp_path / "c.json").write_text(json.dumps(manifest))
    register(_DirStore())
    try:
        res = load_export(store)
        assert res.layout == "combined" and res.n_items == N
        np.testing.assert_array_equal(res.embedding("m-1"), emb)
    finally:
        unregister("npy_dir")
    with pytest.raises(ValueError):  # unregistered, the folder is a per-item dir of nothing
        load_export(store)
