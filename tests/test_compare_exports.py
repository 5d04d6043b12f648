"""scripts/compare_exports.py's ``diff`` on two small trees built here (no Ray): equal trees
pass, and a flipped float bit, a changed non-volatile manifest key and a missing file fail."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_exports.py"


@pytest.fixture(scope="module")
def ce():
    spec = importlib.util.spec_from_file_location("compare_exports", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _manifest(root: Path, ce, **extra) -> dict:
    man = {"status": "ok", "npz_path": str(root / "p00000.npz"), "n_items": 1, **extra}
    for key in ce.VOLATILE_KEYS:  # each volatile key carries a value unique to this tree
        man[key] = f"{root.name}-{time.monotonic_ns()}"
    return man


def _savez(path: Path, date_time: tuple[int, ...], **arrays: np.ndarray) -> None:
    """An .npz as np.savez writes it, with the zip members' timestamp chosen."""
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr))
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=date_time), buf.getvalue())


def _tree(root: Path, ce, emb: np.ndarray, date_time=(2026, 1, 1, 0, 0, 0)) -> Path:
    (root / "items").mkdir(parents=True)
    _savez(root / "items/p00000.npz", date_time, embedding__m=emb, input_chw__m=np.ones((2, 3)))
    (root / "items" / "p00000.json").write_text(json.dumps(_manifest(root, ce)))
    return root


def _diff(ce, a: Path, b: Path) -> tuple[int, str]:
    out = io.StringIO()
    rc = ce.diff(str(a), str(b), stream=out)
    return rc, out.getvalue()


EMB = np.linspace(0.0, 1.0, 8, dtype=np.float32)


def test_equal_trees_are_equal(tmp_path, ce):
    a = _tree(tmp_path / "a", ce, EMB)
    # written a minute later: the zip members' timestamps differ, their content does not
    b = _tree(tmp_path / "b", ce, EMB.copy(), date_time=(2026, 1, 1, 0, 1, 0))
    assert (a / "items/p00000.npz").read_bytes() != (b / "items/p00000.npz").read_bytes()
    rc, text = _diff(ce, a, b)
    assert rc == 0, text
    assert "identical" in text


def test_one_float_bit_in_an_npz_member(tmp_path, ce):
    flipped = EMB.copy()
    flipped.view(np.uint32)[3] ^= 1  # the last mantissa bit: allclose would call it equal
    assert np.allclose(flipped, EMB) and not np.array_equal(flipped, EMB)
    rc, text = _diff(ce, _tree(tmp_path / "a", ce, EMB), _tree(tmp_path / "b", ce, flipped))
    assert rc == 1
    assert "items/p00000.npz: member embedding__m.npy: bytes differ" in text
    assert "1 difference(s)" in text


def test_changed_non_volatile_manifest_key(tmp_path, ce):
    a, b = _tree(tmp_path / "a", ce, EMB), _tree(tmp_path / "b", ce, EMB)
    man = json.loads((b / "items/p00000.json").read_text())
    man["n_items"] = 2
    (b / "items/p00000.json").write_text(json.dumps(man))
    rc, text = _diff(ce, a, b)
    assert rc == 1
    assert "items/p00000.json: /n_items: 1 != 2" in text


def test_path_outside_the_root_is_not_normalised(tmp_path, ce):
    a, b = _tree(tmp_path / "a", ce, EMB), _tree(tmp_path / "b", ce, EMB)
    man = json.loads((b / "items/p00000.json").read_text())
    man["npz_path"] = str(tmp_path / "elsewhere" / "p00000.npz")
    (b / "items/p00000.json").write_text(json.dumps(man))
    rc, text = _diff(ce, a, b)
    assert rc == 1 and "/npz_path" in text


def test_missing_file(tmp_path, ce):
    a, b = _tree(tmp_path / "a", ce, EMB), _tree(tmp_path / "b", ce, EMB)
    shutil.copy(a / "items/p00000.npz", a / "items/p00001.npz")
    rc, text = _diff(ce, a, b)
    assert rc == 1
    assert "items/p00001.npz: only in A" in text


def test_run_refuses_a_non_empty_folder(tmp_path, ce, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert ce.main(["run", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"
