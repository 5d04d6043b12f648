"""Per-item npz files: what numpy reads back, deflated members, no pickles."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from rs_embed_ray.io.npz import NpzStreamWriter, write_npz


def test_write_npz_reads_back_with_numpy_as_deflated_members(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "input_chw__dofa": rng.uniform(0, 3000, (9, 16, 16)).astype(np.float32),
        "embedding__dofa": rng.normal(size=768).astype(np.float32),
        "names": np.asarray(["a", "bb"]),
        "empty": np.zeros((0, 3), np.int16),
    }
    path = tmp_path / "p.npz"
    write_npz(path, arrays)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and np.array_equal(z[k], v)
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        # the bulky member really is compressed (these DN values deflate well)
        big = zf.getinfo("input_chw__dofa.npy")
        assert big.compress_size < big.file_size


def test_write_npz_refuses_object_arrays_and_leaves_nothing(tmp_path):
    path = tmp_path / "p.npz"
    with pytest.raises(ValueError, match="pickle"):
        write_npz(path, {"x": np.asarray([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_streamed_npz_is_deflated_and_reads_back(tmp_path):
    path = tmp_path / "c.npz"
    w = NpzStreamWriter(path)
    rows = [np.full(4, i, np.float32) for i in range(3)]
    w.stream("embedding__m", (4,), rows, n_rows=3)
    w.commit()
    with np.load(path) as z:
        assert np.array_equal(z["embedding__m"], np.stack(rows))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("embedding__m.npy").compress_type == zipfile.ZIP_DEFLATED
