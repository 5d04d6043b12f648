"""load_export / summarize_export over hand-built exports of both layouts and both formats."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from rs_embed_ray.io import load as load_mod
from rs_embed_ray.io.keys import array_key, parse_array_key, sanitize_key
from rs_embed_ray.io.load import (
    ExportResult,
    ModelResult,
    _build_combined_model_result,
    _find_per_item_files,
    _load_arrays,
    _resolve_combined_paths,
    _stack_per_item_embeddings,
    load_export,
    summarize_export,
)

N = 3
D = 4
C, H = 2, 5
PB = {"lon": 10.0, "lat": 20.0, "buffer_m": 100.0, "crs": "EPSG:4326"}
TEMPORAL = {"mode": "range", "year": None, "start": "2022-06-01", "end": "2022-09-01"}


# ---------------------------------------------------------------------------------------------
# fixture builders
# ---------------------------------------------------------------------------------------------


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


def _emb(i: int, d: int = D) -> np.ndarray:
    return np.arange(d, dtype=np.float32) + 10 * i


def _inp(i: int, c: int = C, h: int = H, w: int = H) -> np.ndarray:
    return np.full((c, h, w), float(i), dtype=np.float32)


def _pb(i: int) -> dict[str, Any]:
    return {**PB, "lon": PB["lon"] + i}


def _ref(key: str, arr: np.ndarray) -> dict[str, Any]:
    return {"npz_key": key, "dtype": "float32", "shape": list(arr.shape), "sha1": "x" * 40}


def write_point(
    d: Path,
    index: int,
    *,
    name: str | None = None,
    models: tuple[str, ...] = ("dummy_a", "dummy-b"),
    failed: tuple[str, ...] = (),
    inputs: bool = True,
    fmt: str = "npz",
    sidecar: bool = True,
    point_index: bool = True,
    emb_shape: tuple[int, ...] | None = None,
) -> Path:
    """One per-item point like the exporter writes it (dedup input for later models)."""
    name = name or f"p{index:05d}"
    arrays: dict[str, np.ndarray] = {}
    entries = []
    input_ref = None
    for m in models:
        key = sanitize_key(m)
        entry: dict[str, Any] = {"model": m, "status": "ok", "sensor": None, "describe": {}}
        if inputs:
            if input_ref is None:
                arrays[f"input_chw__{key}"] = _inp(index)
                input_ref = _ref(f"input_chw__{key}", arrays[f"input_chw__{key}"])
                entry["input"] = input_ref
            else:
                entry["input"] = {**input_ref, "dedup_reused": True}
        else:
            entry["input"] = None
        if m in failed:
            entry.update(status="failed", error="RuntimeError('boom')", embedding=None, meta=None)
        else:
            e = _emb(index) if emb_shape is None else np.full(emb_shape, index, np.float32)
            arrays[f"embedding__{key}"] = e
            entry["embedding"] = _ref(f"embedding__{key}", e)
            entry["meta"] = {"i": index, "model": m}
        entries.append(entry)
    n_failed = sum(e["status"] == "failed" for e in entries)
    manifest: dict[str, Any] = {
        "created_at": "2026-01-01T00:00:00Z",
        "status": "ok" if not n_failed else ("failed" if n_failed == len(entries) else "partial"),
        "models": entries,
        "spatial": _pb(index),
        "temporal": TEMPORAL,
        "output": {"mode": "pooled", "pooling": "mean", "grid_orientation": "north_up"},
        "summary": {"total_models": len(entries), "failed_models": n_failed},
    }
    if point_index:
        manifest["point_index"] = index
    if fmt == "npz":
        path = d / f"{name}.npz"
        np.savez_compressed(path, **arrays)
    else:
        path = d / f"{name}.nc"
        ds = xr.Dataset(
            {
                k: (("dim",) if v.ndim == 1 else ("band", "y", "x")[-v.ndim :], v)
                for k, v in arrays.items()
            }
        )
        ds.to_netcdf(path)
    if sidecar:
        _dump(d / f"{name}.json", manifest)
    return path


def write_combined(
    d: Path,
    stem: str = "run",
    *,
    n: int = N,
    models: tuple[str, ...] = ("dummy_a", "dummy-b"),
    fmt: str = "npz",
    sidecar: bool = True,
    grid: bool = False,
) -> Path:
    """A combined export with stacked embeddings and deduplicated stacked inputs."""
    arrays: dict[str, np.ndarray] = {}
    entries = []
    input_ref = None
    for m in models:
        key = sanitize_key(m)
        if grid:
            emb = np.stack([np.full((D, 2, 3), i, np.float32) for i in range(n)])
        else:
            emb = np.stack([_emb(i) for i in range(n)])
        arrays[f"embeddings__{key}"] = emb
        entry: dict[str, Any] = {
            "model": m,
            "sensor": None,
            "status": "ok",
            "describe": {},
            "embeddings": {"npz_key": f"embeddings__{key}", "shape": list(emb.shape)},
            "metas": [{"i": i} for i in range(n)],
        }
        if input_ref is None:
            arrays[f"inputs_bchw__{key}"] = np.stack([_inp(i) for i in range(n)])
            input_ref = {"npz_key": f"inputs_bchw__{key}", "shape": [n, C, H, H]}
            entry["inputs"] = input_ref
        else:
            entry["inputs"] = {**input_ref, "dedup_reused": True}
        entries.append(entry)
    manifest = {
        "status": "ok",
        "stage": "done",
        "resume_incomplete": False,
        "models": entries,
        "n_items": n,
        "temporal": TEMPORAL,
        "spatials": [_pb(i) for i in range(n)],
        "names": [f"site{i}" for i in range(n)],
    }
    if fmt == "npz":
        path = d / f"{stem}.npz"
        np.savez_compressed(path, **arrays)
    else:
        path = d / f"{stem}.nc"
        data_vars = {}
        for k, v in arrays.items():
            dims = ("item", "dim") if v.ndim == 2 else ("item", "band", "y", "x")
            if k.startswith("embeddings") and v.ndim == 4:
                dims = ("item", "dim", "grid_y", "grid_x")
            data_vars[k] = (dims, v)
        coords = {
            "item": np.arange(n),
            "lon": ("item", np.array([_pb(i)["lon"] for i in range(n)])),
            "lat": ("item", np.full(n, PB["lat"])),
            "name": ("item", np.array([f"site{i}" for i in range(n)], dtype=object)),
        }
        xr.Dataset(data_vars, coords=coords, attrs={"n_items": n}).to_netcdf(path)
    if sidecar:
        _dump(path.with_suffix(".json"), manifest)
    return path


# ---------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("foo/bar baz", "foo_bar_baz"),
        ("a---b///c", "a_b_c"),
        ("mock-model", "mock_model"),
        ("mock_model", "mock_model"),
        ("__x__y__", "x_y"),
        ("Prithvi-EO v2", "Prithvi_EO_v2"),
        ("", "item"),
        ("///", "item"),
        ("café", "caf"),
        (42, "42"),
    ],
)
def test_sanitize_key(raw: Any, key: str) -> None:
    assert sanitize_key(raw) == key


def test_parse_array_key() -> None:
    assert parse_array_key("embedding__m") == ("embedding", "m", None)
    assert parse_array_key("embedding__m__00012") == ("embedding", "m", 12)
    assert parse_array_key("inputs_bchw__dummy_a") == ("inputs_bchw", "dummy_a", None)
    assert parse_array_key("__prefetch_bchw__abc") is None
    assert parse_array_key("embedding__m__x") is None
    assert parse_array_key("foo__m") is None
    assert parse_array_key("embedding") is None
    assert array_key("embedding", "a-b", 3) == "embedding__a_b__00003"


# ---------------------------------------------------------------------------------------------
# path resolution, arrays, stacking (contract §3 / §6 test_load_export)
# ---------------------------------------------------------------------------------------------


class TestResolveCombinedPaths:
    def test_npz_and_nc(self, tmp_path: Path) -> None:
        for ext, fmt in ((".npz", "npz"), (".nc", "netcdf"), (".netcdf", "netcdf")):
            (tmp_path / f"r{ext}").touch()
            (tmp_path / "r.json").touch()
            assert _resolve_combined_paths(str(tmp_path / f"r{ext}")) == (
                str(tmp_path / f"r{ext}"),
                str(tmp_path / "r.json"),
                fmt,
            )

    def test_json_prefers_npz_then_nc(self, tmp_path: Path) -> None:
        js = tmp_path / "r.json"
        js.touch()
        (tmp_path / "r.nc").touch()
        assert _resolve_combined_paths(str(js))[2] == "netcdf"
        (tmp_path / "r.npz").touch()
        assert _resolve_combined_paths(str(js)) == (str(tmp_path / "r.npz"), str(js), "npz")

    def test_json_without_arrays(self, tmp_path: Path) -> None:
        (tmp_path / "r.json").touch()
        with pytest.raises(FileNotFoundError, match="paired"):
            _resolve_combined_paths(str(tmp_path / "r.json"))

    def test_arrays_without_json(self, tmp_path: Path) -> None:
        (tmp_path / "r.npz").touch()
        with pytest.raises(FileNotFoundError, match="manifest"):
            _resolve_combined_paths(str(tmp_path / "r.npz"))

    def test_unknown_extension(self, tmp_path: Path) -> None:
        (tmp_path / "r.csv").touch()
        with pytest.raises(ValueError, match="extension"):
            _resolve_combined_paths(str(tmp_path / "r.csv"))


def test_load_export_path_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_export(tmp_path / "missing.npz")
    (tmp_path / "r.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="extension"):
        load_export(tmp_path / "r.csv")
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="paired"):
        load_export(tmp_path / "r.json")
    (tmp_path / "empty.npz").touch()  # unreadable and no sidecar
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_export(tmp_path / "empty.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))  # not our keys, no sidecar
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_export(tmp_path / "foreign.npz")


def test_load_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", foo=np.array([1.0, 2.0], dtype=np.float32))
    out = _load_arrays(str(tmp_path / "a.npz"), "npz")
    np.testing.assert_array_equal(out["foo"], [1.0, 2.0])
    with pytest.raises(ValueError, match="format"):
        _load_arrays(str(tmp_path / "x.bin"), "bin")


class TestStacking:
    def test_all_present(self) -> None:
        out = _stack_per_item_embeddings([np.ones(4) * i for i in range(3)])
        assert out is not None and out.shape == (3, 4) and out.dtype == np.float32

    def test_all_none(self) -> None:
        assert _stack_per_item_embeddings([None, None]) is None

    def test_nan_fill(self) -> None:
        out = _stack_per_item_embeddings([np.ones(4), None, np.ones(4) * 2])
        assert out is not None and np.isnan(out[1]).all()
        np.testing.assert_array_equal(out[2], np.full(4, 2.0))

    def test_shape_mismatch_raises(self) -> None:
        with pytest.raises(ValueError, match="different shapes"):
            _stack_per_item_embeddings([np.ones(4), np.ones(5)])


def test_build_combined_model_result_pads_meta_and_failed() -> None:
    arrays = {"embeddings__prithvi": np.zeros((N, D), np.float64)}
    entry = {"model": "prithvi", "status": "ok", "metas": [{"a": 1}, "junk"]}
    res = _build_combined_model_result(entry, arrays, N)
    assert res.embeddings is not None and res.embeddings.dtype == np.float32
    assert res.embeddings.shape == (N, D) and res.inputs is None
    assert res.meta == [{"a": 1}, {}, {}]
    failed = _build_combined_model_result(
        {"model": "prithvi", "status": "failed", "error": "boom"}, {}, N
    )
    assert failed.status == "failed" and failed.embeddings is None and failed.error == "boom"


# ---------------------------------------------------------------------------------------------
# per-item layout
# ---------------------------------------------------------------------------------------------


class TestPerItem:
    def test_basic_two_models_with_dedup_inputs(self, tmp_path: Path) -> None:
        for i in range(N):
            write_point(tmp_path, i)
        res = load_export(tmp_path)
        assert res.layout == "per_item" and res.n_items == N and res.status == "ok"
        assert list(res.models) == ["dummy_a", "dummy-b"]
        assert res.ok_models == ["dummy_a", "dummy-b"] and res.failed_models == []
        for m in ("dummy_a", "dummy-b"):
            mr = res.models[m]
            assert mr.embeddings is not None and mr.embeddings.shape == (N, D)
            assert mr.embeddings.dtype == np.float32
            np.testing.assert_array_equal(mr.embeddings[2], _emb(2))
            # the second model's input is a dedup reference to the first model's array
            assert mr.inputs is not None and mr.inputs.shape == (N, C, H, H)
            np.testing.assert_array_equal(mr.inputs[1], _inp(1))
            assert mr.meta[1] == {"i": 1, "model": m}
        assert res.spatials == [_pb(i) for i in range(N)]
        assert res.temporal == TEMPORAL
        assert res.manifest["point_index"] == 0
        np.testing.assert_array_equal(res.embedding("dummy-b"), res.models["dummy-b"].embeddings)

    def test_partial_and_failed_models(self, tmp_path: Path) -> None:
        write_point(tmp_path, 0)
        write_point(tmp_path, 1, failed=("dummy_a", "dummy-b"))
        write_point(tmp_path, 2, failed=("dummy-b",))
        res = load_export(tmp_path)
        a, b = res.models["dummy_a"], res.models["dummy-b"]
        assert a.status == "partial" and b.status == "partial"
        assert a.embeddings is not None and np.isnan(a.embeddings[1]).all()
        np.testing.assert_array_equal(a.embeddings[2], _emb(2))
        assert a.meta[1] == {} and a.error is None
        assert res.status == "partial"
        assert res.ok_models == [] and res.failed_models == []
        assert res.partial_models == ["dummy_a", "dummy-b"]

    def test_model_failed_everywhere(self, tmp_path: Path) -> None:
        for i in range(N):
            write_point(tmp_path, i, failed=("dummy-b",))
        res = load_export(tmp_path)
        b = res.models["dummy-b"]
        assert b.status == "failed" and b.embeddings is None
        assert b.error == "RuntimeError('boom')"
        assert b.inputs is not None  # inputs were saved even though the model failed
        assert res.failed_models == ["dummy-b"] and res.ok_models == ["dummy_a"]
        assert res.status == "partial"
        with pytest.raises(ValueError, match=r"has no embeddings \(status='failed'\)"):
            res.embedding("dummy-b")
        with pytest.raises(KeyError, match=r"dummy_a"):
            res.embedding("prithvi")

    def test_custom_names_use_point_index(self, tmp_path: Path) -> None:
        write_point(tmp_path, 1, name="siteA")
        write_point(tmp_path, 0, name="siteB")
        res = load_export(tmp_path)
        mr = res.models["dummy_a"]
        assert mr.embeddings is not None
        np.testing.assert_array_equal(mr.embeddings, np.stack([_emb(0), _emb(1)]))
        assert res.spatials[0] == _pb(0)

    def test_missing_point_keeps_row_alignment(self, tmp_path: Path) -> None:
        write_point(tmp_path, 0)
        write_point(tmp_path, 2)
        res = load_export(tmp_path)
        assert res.n_items == 3 and res.spatials[1] == {}
        mr = res.models["dummy_a"]
        assert mr.embeddings is not None and np.isnan(mr.embeddings[1]).all()
        assert mr.inputs is not None and np.isnan(mr.inputs[1]).all()
        np.testing.assert_array_equal(mr.embeddings[2], _emb(2))

    def test_p_digits_name_without_point_index(self, tmp_path: Path) -> None:
        write_point(tmp_path, 1, point_index=False)
        res = load_export(tmp_path)
        assert res.n_items == 2
        mr = res.models["dummy_a"]
        assert mr.embeddings is not None and np.isnan(mr.embeddings[0]).all()

    def test_orphan_npz_without_json_ignored(self, tmp_path: Path) -> None:
        (tmp_path / "p00000.npz").touch()
        with pytest.raises(ValueError, match="No per-item"):
            _find_per_item_files(str(tmp_path))
        with pytest.raises(ValueError, match="No per-item"):
            load_export(tmp_path)

    def test_empty_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="No per-item"):
            load_export(tmp_path)

    def test_unrelated_files_and_subdirectories_ignored(self, tmp_path: Path) -> None:
        for i in range(2):
            write_point(tmp_path, i)
        (tmp_path / "README.md").write_text("hi")
        np.savez(tmp_path / "other.npz", embedding__dummy_a=np.zeros(D))  # no sidecar
        write_point(tmp_path, 5, name="p00009", inputs=False)
        (tmp_path / "p00009.json").unlink()  # orphan beside sidecar'd points: ignored
        sub = tmp_path / "_rs_embed_ray"
        sub.mkdir()
        write_point(sub, 7)  # not recursive
        files = _find_per_item_files(str(tmp_path))
        assert [os.path.basename(f[0]) for f in files] == ["p00000.npz", "p00001.npz"]
        res = load_export(tmp_path)
        assert res.n_items == 2

    def test_stray_combined_files_ignored(self, tmp_path: Path) -> None:
        for i in range(2):
            write_point(tmp_path, i)
        write_combined(tmp_path, "run", n=5)
        res = load_export(tmp_path)
        assert res.n_items == 2
        assert res.models["dummy_a"].embeddings.shape == (2, D)  # type: ignore[union-attr]

    def test_duplicate_point_index(self, tmp_path: Path) -> None:
        write_point(tmp_path, 0)
        write_point(tmp_path, 0, name="stale")
        with pytest.raises(ValueError, match="both claim point_index=0"):
            load_export(tmp_path)
        with pytest.raises(ValueError, match="both claim point_index=0"):
            summarize_export(tmp_path)

    def test_ragged_grids_load_as_list(self, tmp_path: Path) -> None:
        write_point(tmp_path, 0, emb_shape=(D, 2, 2), inputs=False)
        write_point(tmp_path, 1, emb_shape=(D, 3, 2), inputs=False)
        write_point(tmp_path, 3, emb_shape=(D, 2, 2), inputs=False)
        emb = load_export(tmp_path).models["dummy_a"].embeddings
        assert isinstance(emb, list) and len(emb) == 4
        assert emb[0].shape == (D, 2, 2) and emb[1].shape == (D, 3, 2)  # type: ignore[union-attr]
        assert emb[2] is None and emb[3] is not None

    def test_netcdf_points(self, tmp_path: Path) -> None:
        for i in range(2):
            write_point(tmp_path, i, fmt="netcdf")
        res = load_export(tmp_path)
        mr = res.models["dummy-b"]
        assert mr.embeddings is not None and mr.embeddings.shape == (2, D)
        np.testing.assert_array_equal(mr.embeddings[1], _emb(1))
        assert mr.inputs is not None and mr.inputs.shape == (2, C, H, H)

    def test_single_point_file(self, tmp_path: Path) -> None:
        write_point(tmp_path, 4)
        res = load_export(tmp_path / "p00004.json")
        assert res.layout == "per_item" and res.n_items == 1
        np.testing.assert_array_equal(res.embedding("dummy_a"), _emb(4)[None])


# ---------------------------------------------------------------------------------------------
# combined layout
# ---------------------------------------------------------------------------------------------


class TestCombined:
    @pytest.mark.parametrize("fmt", ["npz", "netcdf"])
    def test_stacked(self, tmp_path: Path, fmt: str) -> None:
        path = write_combined(tmp_path, fmt=fmt)
        for p in (path, path.with_suffix(".json")):
            res = load_export(p)
            assert res.layout == "combined" and res.n_items == N and res.status == "ok"
            assert res.spatials == [_pb(i) for i in range(N)] and res.temporal == TEMPORAL
            for m in ("dummy_a", "dummy-b"):
                mr = res.models[m]
                assert mr.embeddings is not None and mr.embeddings.dtype == np.float32
                np.testing.assert_array_equal(mr.embeddings, np.stack([_emb(i) for i in range(N)]))
                # dedup reference resolves to the first model's stacked inputs
                assert mr.inputs is not None and mr.inputs.shape == (N, C, H, H)
                assert mr.meta == [{"i": i} for i in range(N)]
            assert res.manifest["n_items"] == N

    def test_netcdf_extension_alias(self, tmp_path: Path) -> None:
        path = write_combined(tmp_path, fmt="netcdf")
        alias = path.with_suffix(".netcdf")
        path.rename(alias)
        assert load_export(alias).models["dummy_a"].embeddings.shape == (N, D)  # type: ignore[union-attr]

    def test_partial_ragged_keys_with_indices(self, tmp_path: Path) -> None:
        np.savez(
            tmp_path / "run.npz",
            embedding__m__00000=np.array([1.0, 2.0], np.float32),
            embedding__m__00002=np.array([5.0, 6.0], np.float32),
            inputs_bchw__m=np.stack([_inp(0), _inp(2)]),
        )
        _dump(
            tmp_path / "run.json",
            {
                "n_items": 3,
                "status": "partial",
                "spatials": [{}, {}, {}],
                "models": [
                    {
                        "model": "m",
                        "status": "partial",
                        "inputs": {"npz_key": "inputs_bchw__m", "indices": [0, 2]},
                        "embeddings": {
                            "npz_keys": ["embedding__m__00000", "embedding__m__00002"],
                            "indices": [0, 2],
                        },
                        "metas": [{}, None, {}],
                        "failed_indices": [1],
                        "errors_by_index": {"1": "RuntimeError('boom')"},
                    }
                ],
            },
        )
        res = load_export(tmp_path / "run.npz")
        mr = res.models["m"]
        assert res.status == "partial" and mr.status == "partial"
        assert mr.embeddings is not None and mr.embeddings.shape == (3, 2)
        np.testing.assert_allclose(mr.embeddings[0], [1.0, 2.0])
        assert np.isnan(mr.embeddings[1]).all()
        np.testing.assert_allclose(mr.embeddings[2], [5.0, 6.0])
        # stacked inputs covering only indices [0, 2] are re-aligned to rows
        assert mr.inputs is not None and mr.inputs.shape == (3, C, H, H)
        assert np.isnan(mr.inputs[1]).all()
        np.testing.assert_array_equal(mr.inputs[2], _inp(2))

    def test_ragged_suffix_without_indices(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "run.npz", embedding__m__00001=np.ones(2, np.float32))
        entry = {
            "model": "m",
            "status": "partial",
            "embeddings": {"npz_keys": ["embedding__m__00001"]},
        }
        _dump(tmp_path / "run.json", {"n_items": 2, "models": [entry]})
        emb = load_export(tmp_path / "run.npz").embedding("m")
        assert isinstance(emb, np.ndarray) and np.isnan(emb[0]).all() and (emb[1] == 1).all()

    def test_ragged_grids_all_ok_load_as_list(self, tmp_path: Path) -> None:
        shapes = [(D, 2, 2), (D, 3, 2), (D, 2, 4)]
        arrays = {f"embedding__m__{i:05d}": np.full(s, i, np.float32) for i, s in enumerate(shapes)}
        np.savez(tmp_path / "run.npz", **arrays)
        entry = {
            "model": "m",
            "status": "ok",
            "embeddings": {"npz_keys": sorted(arrays), "indices": [0, 1, 2]},
        }
        _dump(tmp_path / "run.json", {"n_items": 3, "status": "ok", "models": [entry]})
        emb = load_export(tmp_path / "run.npz").embedding("m")
        assert isinstance(emb, list) and [e.shape for e in emb] == shapes  # type: ignore[union-attr]
        assert all(e.dtype == np.float32 for e in emb)  # type: ignore[union-attr]
        xemb = load_export(tmp_path / "run.npz", as_xarray=True).embedding("m")
        assert isinstance(xemb, list) and xemb[1].dims == ("dim", "y", "x")  # type: ignore[union-attr]

    def test_netcdf_padded_ragged_rows_are_cropped(self, tmp_path: Path) -> None:
        padded = np.full((2, D, 3, 3), np.nan, np.float32)
        padded[0, :, :2, :2] = 1.0
        padded[1] = 2.0
        xr.Dataset({"embeddings__m": (("item", "dim", "grid_y", "grid_x"), padded)}).to_netcdf(
            tmp_path / "g.nc"
        )
        ref = {
            "npz_key": "embeddings__m",
            "ragged": True,
            "shapes": {"0": [D, 2, 2], "1": [D, 3, 3]},
        }
        _dump(
            tmp_path / "g.json",
            {"n_items": 2, "models": [{"model": "m", "status": "ok", "embeddings": ref}]},
        )
        emb = load_export(tmp_path / "g.nc").embedding("m")
        assert isinstance(emb, list)
        assert emb[0].shape == (D, 2, 2) and (emb[0] == 1).all()  # type: ignore[union-attr]
        assert emb[1].shape == (D, 3, 3)  # type: ignore[union-attr]

    def test_failed_model_and_accessor_errors(self, tmp_path: Path) -> None:
        path = write_combined(tmp_path, models=("dummy_a",))
        manifest = json.loads(path.with_suffix(".json").read_text())
        manifest["models"].append(
            {"model": "bad", "status": "failed", "error": "ModelError('x')", "embeddings": None}
        )
        manifest["status"] = "partial"
        _dump(path.with_suffix(".json"), manifest)
        res = load_export(path)
        assert res.failed_models == ["bad"] and res.ok_models == ["dummy_a"]
        assert res.models["bad"].error == "ModelError('x')"
        assert res.models["bad"].meta == [{}] * N
        with pytest.raises(ValueError, match=r"no embeddings \(status='failed'\)"):
            res.embedding("bad")
        with pytest.raises(KeyError, match=r"\['bad', 'dummy_a'\]"):
            res.embedding("prithvi")

    def test_unfinished_checkpoint_loads(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = write_combined(tmp_path)
        manifest = json.loads(path.with_suffix(".json").read_text())
        manifest.update(status="running", stage="prefetched", resume_incomplete=True)
        _dump(path.with_suffix(".json"), manifest)
        res = load_export(path)
        assert res.status == "running"
        assert "unfinished checkpoint" in caplog.text

    def test_no_n_items_falls_back_to_spatials(self, tmp_path: Path) -> None:
        path = write_combined(tmp_path)
        manifest = json.loads(path.with_suffix(".json").read_text())
        del manifest["n_items"]
        _dump(path.with_suffix(".json"), manifest)
        assert load_export(path).n_items == N


# ---------------------------------------------------------------------------------------------
# exports without a sidecar (save_manifest=False)
# ---------------------------------------------------------------------------------------------


class TestWithoutManifest:
    def test_combined_npz_from_keys(self, tmp_path: Path) -> None:
        path = write_combined(tmp_path, sidecar=False)
        res = load_export(path)
        assert res.status == "unknown" and res.manifest == {} and res.n_items == N
        assert set(res.models) == {"dummy_a", "dummy_b"}  # sanitised keys
        a = res.models["dummy_a"]
        assert a.status == "unknown" and a.inputs is not None
        np.testing.assert_array_equal(
            res.embedding("dummy_b"), np.stack([_emb(i) for i in range(N)])
        )
        assert res.ok_models == [] and res.failed_models == []

    def test_combined_partial_keys(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "r.npz", embedding__m__00000=np.ones(2), embedding__m__00003=np.ones(2))
        emb = load_export(tmp_path / "r.npz").embedding("m")
        assert isinstance(emb, np.ndarray) and emb.shape == (4, 2) and np.isnan(emb[1]).all()

    def test_combined_netcdf_coords_and_attrs(self, tmp_path: Path) -> None:
        path = write_combined(tmp_path, fmt="netcdf", sidecar=False)
        res = load_export(path)
        assert res.n_items == N and res.spatials[2] == {"lon": PB["lon"] + 2, "lat": PB["lat"]}
        x = load_export(path, as_xarray=True).embedding("dummy_a")
        assert list(x.coords["name"].values) == ["site0", "site1", "site2"]  # type: ignore[union-attr]

    def test_netcdf_embedded_manifest_used(self, tmp_path: Path) -> None:
        path = write_combined(tmp_path, fmt="netcdf")
        manifest = path.with_suffix(".json").read_text()
        path.with_suffix(".json").unlink()
        with xr.open_dataset(path) as ds:
            ds2 = ds.load()
        ds2.attrs["rs_embed_ray_manifest"] = manifest
        path.unlink()
        ds2.to_netcdf(path)
        res = load_export(path)
        assert res.status == "ok" and set(res.models) == {"dummy_a", "dummy-b"}
        assert res.manifest["n_items"] == N
        assert summarize_export(path)["models"]["dummy-b"]["ok"] == N

    def test_per_item_directory_from_keys(self, tmp_path: Path) -> None:
        for i in (0, 2):
            write_point(tmp_path, i, sidecar=False)
        res = load_export(tmp_path)
        assert res.layout == "per_item" and res.n_items == 3 and res.status == "unknown"
        a = res.models["dummy_a"]
        assert a.embeddings is not None and np.isnan(a.embeddings[1]).all()
        assert a.inputs is not None and a.inputs.shape == (3, C, H, H)
        assert res.models["dummy_b"].inputs is None  # dedup input is stored once, under dummy_a
        s = summarize_export(tmp_path)
        assert s["has_manifest"] is False and s["missing_items"] == [1]
        assert s["models"]["dummy_b"] == {"status": "unknown", "ok": 2, "failed": 0}


# ---------------------------------------------------------------------------------------------
# pickles are never loaded
# ---------------------------------------------------------------------------------------------


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "run.npz", embeddings__m=np.array([{"evil": 1}, None], dtype=object))
    entry = {"model": "m", "status": "ok", "embeddings": {"npz_key": "embeddings__m"}}
    _dump(tmp_path / "run.json", {"n_items": 2, "models": [entry]})
    with pytest.raises(ValueError, match="unpickle"):
        load_export(tmp_path / "run.npz")


def test_np_load_never_allows_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real_load = np.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(load_mod.np, "load", spy)
    write_combined(tmp_path / "", "c")
    d = tmp_path / "pi"
    d.mkdir()
    write_point(d, 0)
    load_export(tmp_path / "c.npz")
    load_export(d)
    assert seen and all(v is False for v in seen)


# ---------------------------------------------------------------------------------------------
# xarray view
# ---------------------------------------------------------------------------------------------


class TestAsXarray:
    def test_combined_pooled(self, tmp_path: Path) -> None:
        res = load_export(write_combined(tmp_path), as_xarray=True)
        x = res.embedding("dummy_a")
        assert isinstance(x, xr.DataArray) and x.dims == ("item", "dim")
        np.testing.assert_allclose(x["lon"].values, [PB["lon"] + i for i in range(N)])
        np.testing.assert_allclose(x["lat"].values, [PB["lat"]] * N)
        assert list(x["name"].values) == ["site0", "site1", "site2"]
        assert x.sel(item=1).values.tolist() == _emb(1).tolist()
        assert isinstance(res.models["dummy_a"].inputs, np.ndarray)

    def test_combined_grid_netcdf(self, tmp_path: Path) -> None:
        x = load_export(
            write_combined(tmp_path, fmt="netcdf", grid=True), as_xarray=True
        ).embedding("dummy-b")
        assert isinstance(x, xr.DataArray) and x.dims == ("item", "dim", "y", "x")
        assert x.shape == (N, D, 2, 3)

    def test_per_item_bbox_centre_and_names(self, tmp_path: Path) -> None:
        write_point(tmp_path, 0, name="alpha")
        p = write_point(tmp_path, 1, name="beta")
        manifest = json.loads(p.with_suffix(".json").read_text())
        manifest["spatial"] = {"minlon": 0.0, "minlat": 10.0, "maxlon": 2.0, "maxlat": 14.0}
        _dump(p.with_suffix(".json"), manifest)
        x = load_export(tmp_path, as_xarray=True).embedding("dummy_a")
        assert isinstance(x, xr.DataArray)
        assert list(x["name"].values) == ["alpha", "beta"]
        np.testing.assert_allclose(x["lon"].values, [PB["lon"], 1.0])
        np.testing.assert_allclose(x["lat"].values, [PB["lat"], 12.0])


# ---------------------------------------------------------------------------------------------
# summarize_export
# ---------------------------------------------------------------------------------------------


class TestSummarize:
    def test_combined_counts(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = write_combined(tmp_path, models=("dummy_a",))
        manifest = json.loads(path.with_suffix(".json").read_text())
        manifest["models"] += [
            {"model": "half", "status": "partial", "failed_indices": [1]},
            {"model": "bad", "status": "failed", "error": "x"},
        ]
        manifest["status"] = "partial"
        _dump(path.with_suffix(".json"), manifest)

        def no_arrays(*a: Any, **k: Any) -> Any:
            raise AssertionError("summarize_export must not open array files")

        monkeypatch.setattr(load_mod, "_ArrayFile", no_arrays)
        s = summarize_export(path)
        assert s["layout"] == "combined" and s["format"] == "npz" and s["n_items"] == N
        assert s["status"] == "partial" and s["stage"] == "done"
        assert s["models"] == {
            "dummy_a": {"status": "ok", "ok": 3, "failed": 0},
            "half": {"status": "partial", "ok": 2, "failed": 1},
            "bad": {"status": "failed", "ok": 0, "failed": 3},
        }
        assert (s["ok"], s["failed"]) == (5, 4)
        assert s["ok_models"] == ["dummy_a"] and s["partial_models"] == ["half"]
        assert s["failed_models"] == ["bad"]

    def test_per_item_counts(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write_point(tmp_path, 0)
        write_point(tmp_path, 1, failed=("dummy-b",))
        write_point(tmp_path, 3, fmt="netcdf")
        monkeypatch.setattr(load_mod, "_ArrayFile", None)  # manifests only
        s = summarize_export(tmp_path)
        assert s["layout"] == "per_item" and s["format"] == "mixed"
        assert s["n_items"] == 4 and s["missing_items"] == [2]
        assert s["models"]["dummy_a"] == {"status": "ok", "ok": 3, "failed": 0}
        assert s["models"]["dummy-b"] == {"status": "partial", "ok": 2, "failed": 1}
        assert s["status"] == "partial" and (s["ok"], s["failed"]) == (5, 1)

    def test_combined_without_manifest(self, tmp_path: Path) -> None:
        s = summarize_export(write_combined(tmp_path, sidecar=False))
        assert s["has_manifest"] is False and s["status"] == "unknown"
        assert s["models"]["dummy_a"] == {"status": "unknown", "ok": N, "failed": 0}

    def test_missing_path(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            summarize_export(tmp_path / "nope")


def test_public_types_are_dataclasses() -> None:
    mr = ModelResult(name="m", status="failed", embeddings=None, inputs=None, meta=[], error="e")
    res = ExportResult(
        layout="combined",
        spatials=[],
        temporal=None,
        n_items=0,
        status="failed",
        models={"m": mr},
        manifest={},
    )
    assert res.failed_models == ["m"]
    with pytest.raises(ValueError, match="no embeddings"):
        res.embedding("m")
