"""``providers.gee.npy``: a computePixels NPY body is read as ``np.load`` reads it (the
client's ``NumPyConverter``), checked on generated arrays (hypothesis) written by numpy's
own writer in both header versions, and a fetch through the real client and the emulator
gets the same pixels with either converter."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib import format as npy_format

from rs_embed_ray.providers.gee import npy
from rs_embed_ray.providers.gee.npy import NpyConverter, read_npy

# what computePixels returns (one field per band) and what else an NPY body may hold
SCALARS = st.sampled_from(["<f4", ">f4", "<f8", "<i2", ">u2", "<i4", "|u1", "|i1", "?", "<c8"])


@st.composite
def dtypes(draw: st.DrawFn) -> np.dtype:
    if draw(st.booleans()):
        return np.dtype(draw(SCALARS))
    names = draw(
        st.lists(
            st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,6}", fullmatch=True),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    return np.dtype([(n, draw(SCALARS)) for n in names])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, np.ndarray]:
    dtype = draw(dtypes())
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    arr = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()) and arr.ndim > 1:
        arr = np.asfortranarray(arr)
    fh = io.BytesIO()
    npy_format.write_array(fh, arr, version=draw(st.sampled_from([(1, 0), (2, 0)])))
    return fh.getvalue(), arr


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes(order="A") == want.tobytes(order="A")
    assert got.flags.c_contiguous == want.flags.c_contiguous
    assert got.flags.f_contiguous == want.flags.f_contiguous
    assert got.flags.writeable and want.flags.writeable


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_reads_what_np_load_reads(body):
    data, _ = body
    _same(read_npy(data), np.load(io.BytesIO(data)))
    _same(read_npy(data), np.load(io.BytesIO(data)))  # again, from the header cache


@settings(max_examples=100, deadline=None)
@given(bodies(), st.data())
def test_a_short_or_damaged_body_fails_as_np_load_fails(body, data):
    raw, _ = body
    cut = data.draw(st.integers(0, len(raw) - 1))
    bad = raw[:cut]
    with pytest.raises(Exception) as ours:
        read_npy(bad)
    with pytest.raises(Exception) as theirs:
        np.load(io.BytesIO(bad))
    assert type(ours.value) is type(theirs.value)


def test_the_header_is_parsed_once_per_distinct_header():
    npy._header.cache_clear()
    fh = io.BytesIO()
    np.save(fh, np.zeros((3, 4, 5), dtype=[("B4", "<f4"), ("B8", "<f4")]))
    for _ in range(5):
        read_npy(fh.getvalue())
    info = npy._header.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_result_owns_its_memory():
    """The array is not a view of the response (whose bytes the client may reuse)."""
    fh = io.BytesIO()
    np.save(fh, np.arange(12, dtype="<f4").reshape(3, 4))
    got = read_npy(fh.getvalue())
    got[0, 0] = 99.0
    assert got.base is None or got.base.flags.owndata


def test_converter_asks_for_npy():
    """The body asks for the format the client's own converter asks for."""
    from ee.image_converter import NumPyConverter

    assert NpyConverter().expected_data_format() == NumPyConverter().expected_data_format()


@pytest.mark.parametrize("cast", [True, False])  # float32 bands, and float64 as the server's
def test_same_request_and_pixels_as_the_clients_converter(ee_client, cast):
    """Through the real client and the emulator: the request body is byte for byte the one
    ``fileFormat="NUMPY_NDARRAY"`` sends, and the array is the one it returns."""
    import ee

    from rs_embed_ray import geo
    from rs_embed_ray.providers.gee.tiles import _grid_param

    grid = _grid_param(geo.Grid(x0=1000.0, y0=2000.0, scale=10.0, width=33, height=17))
    img = ee.ImageCollection("COPERNICUS/S2_SR_HARMONIZED").median().select(["B4", "B8", "B11"])
    img = img.toFloat() if cast else img
    ee_client.record_bodies = True
    got = {}
    for fmt in ("NUMPY_NDARRAY", NpyConverter()):
        ee_client.reset_stats()
        arr = ee.data.computePixels({"expression": img, "fileFormat": fmt, "grid": grid})
        (req,) = ee_client.requests_of("computePixels")
        got[str(fmt)[:5]] = (req["body"], arr)
    (body_a, arr_a), (body_b, arr_b) = got.values()
    assert body_a == body_b
    _same(arr_b, arr_a)
    assert arr_b.dtype.names == ("B4", "B8", "B11")
