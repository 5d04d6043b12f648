"""Our zip framing (io/zipdeflate.py) read by readers we did not write: the standard library's
``zipfile`` (CRC checked), numpy's ``np.load`` and Info-ZIP's ``unzip -t``; generated arrays
(hypothesis), both compressors (ISA-L and zlib), and the ZIP64 end records."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rs_embed_ray.io import zipdeflate
from rs_embed_ray.io.npz import NpzStreamWriter, write_npz

DTYPES = st.sampled_from(["float32", "float64", "int16", "uint8", "int64", "bool"])
ARRAYS = DTYPES.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=40))
)
NAMES = st.text(
    alphabet=st.characters(categories=("L", "N"), include_characters="_-"), min_size=1, max_size=12
)


def _unzip_ok(path) -> None:
    if shutil.which("unzip") is None:
        return  # Info-ZIP is not installed here; zipfile and numpy still read the file
    done = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _same(path, arrays) -> None:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every member's CRC matches its data
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape
            assert np.array_equal(z[k], v, equal_nan=v.dtype.kind == "f")


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(NAMES, ARRAYS, min_size=1, max_size=4), st.booleans())
def test_generated_arrays_read_back_with_zipfile_and_numpy(tmp_path_factory, arrays, compress):
    path = tmp_path_factory.mktemp("z") / "a.npz"
    write_npz(path, arrays, compress=compress)
    _same(path, arrays)


@pytest.mark.parametrize("backend", ["isal", "zlib"])
def test_members_are_deflate_that_unzip_checks(tmp_path, monkeypatch, backend):
    if backend == "zlib":
        monkeypatch.setattr(zipdeflate, "_isal", None)
        monkeypatch.setattr(zipdeflate, "crc32", zlib.crc32)
    elif zipdeflate.backend() != "isal":
        pytest.skip("isal is not installed")
    assert zipdeflate.backend() == backend
    rng = np.random.default_rng(1)
    arrays = {
        "input_chw__dofa": rng.integers(0, 3000, (12, 64, 64)).astype(np.float32),
        "embedding__dofa": rng.normal(size=768).astype(np.float32),
        "naïve": np.arange(3),  # a UTF-8 member name
    }
    path = tmp_path / "p.npz"
    write_npz(path, arrays)
    _same(path, arrays)
    _unzip_ok(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("input_chw__dofa.npy")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.compress_size < 0.8 * info.file_size


def test_zip64_end_records_when_the_directory_needs_them(tmp_path, monkeypatch):
    monkeypatch.setattr(zipdeflate, "MAX_ENTRIES", 1)  # as if there were 65,535 members
    arrays = {f"a{i}": np.full((3, 5), i, np.int32) for i in range(3)}
    path = tmp_path / "p.npz"
    write_npz(path, arrays)
    assert b"PK\x06\x06" in path.read_bytes()  # the ZIP64 end of central directory
    _same(path, arrays)
    _unzip_ok(path)


def test_streamed_rows_read_back(tmp_path):
    path = tmp_path / "c.npz"
    w = NpzStreamWriter(path)
    rows = [np.full((2, 3), i, np.float32) for i in range(50)]
    w.stream("inputs", (2, 3), rows, n_rows=50)
    w.add("names", np.asarray([f"p{i}" for i in range(50)]))
    w.commit()
    _same(path, {"inputs": np.stack(rows), "names": np.asarray([f"p{i}" for i in range(50)])})
    _unzip_ok(path)


def test_a_member_accepts_any_contiguous_buffer():
    buf = io.BytesIO()
    zf = zipdeflate.ZipWriter(buf)
    with zf.member("x.bin") as m:
        m.write(b"abc")
        m.write(bytearray(b"de"))
        m.write(np.arange(4, dtype=np.uint8))
    zf.close()
    with zipfile.ZipFile(buf) as z:
        assert z.read("x.bin") == b"abcde\x00\x01\x02\x03"
