"""Our npz member reader (io/zipread.py) against ``np.load``, which we did not write: the same
arrays from files written by numpy (``savez``, ``savez_compressed``) and by our own writer,
on generated arrays (hypothesis); damaged members are refused as ``zipfile`` refuses them."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rs_embed_ray.io.npz import write_npz
from rs_embed_ray.io.shards import ShardReader, write_shard
from rs_embed_ray.io.zipread import NpzMembers

DTYPES = st.sampled_from(["<f4", ">f8", "<i2", "|u1", "<u8", "|b1", "<c8", "<M8[s]"])
ARRAYS = DTYPES.flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0))
)
WRITERS = {
    "savez": np.savez,
    "savez_compressed": np.savez_compressed,
    "ours_stored": lambda p, **a: write_npz(p, a, compress=False),
    "ours_deflate": lambda p, **a: write_npz(p, a, compress=True),
}


@settings(max_examples=60, deadline=None)
@given(
    arrays=st.lists(ARRAYS, min_size=1, max_size=4),
    writer=st.sampled_from(sorted(WRITERS)),
    fortran=st.booleans(),
)
def test_same_arrays_as_np_load(tmp_path_factory, arrays, writer, fortran):
    named = {f"a{i}": np.asfortranarray(a) if fortran else a for i, a in enumerate(arrays)}
    path = tmp_path_factory.mktemp("zr") / "x.npz"
    WRITERS[writer](path, **named)
    members = NpzMembers(str(path))
    try:
        with np.load(path, allow_pickle=False) as ref:
            assert sorted(members.files) == sorted(ref.files)
            for key in ref.files:
                got, want = members.array(key), ref[key]
                assert got.dtype == want.dtype and got.shape == want.shape
                np.testing.assert_array_equal(got, want)
                assert got.flags.writeable  # models may work on their input in place
    finally:
        members.close()


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, d0=np.array([{"x": 1}], dtype=object))
    members = NpzMembers(str(path))
    with pytest.raises(ValueError, match="allow_pickle"):
        members.array("d0")
    members.close()


def test_a_flipped_byte_fails_the_crc_as_in_zipfile(tmp_path):
    path = tmp_path / "s.npz"
    items = {i: (np.full((3, 8, 8), i, np.float32), {"i": i}) for i in range(3)}
    write_shard(path, items)
    data = bytearray(path.read_bytes())
    at = data.find(np.full((3, 8, 8), 1, np.float32).tobytes())  # the d1 member's data
    data[at + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf, pytest.raises(zipfile.BadZipFile):
        zf.read("d1.npy")
    members = NpzMembers(str(path))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        members.array("d1")
    np.testing.assert_array_equal(members.array("d2"), items[2][0])  # the others still read
    members.close()
    reader = ShardReader()
    assert not reader.has(path, 1)
    assert reader.has(path, 2)
    reader.close()


def test_shard_reader_round_trip_with_metas(tmp_path):
    path = tmp_path / "s.npz"
    items = {7: (np.arange(24, dtype=np.float32).reshape(2, 3, 4), {"naïve": "ü", "n": [1, 2]})}
    write_shard(path, items)
    reader = ShardReader()
    arr, meta = reader.read(path, 7)
    np.testing.assert_array_equal(arr, items[7][0])
    assert meta == items[7][1] and reader.read_meta(path, 7) == meta
    reader.close()
