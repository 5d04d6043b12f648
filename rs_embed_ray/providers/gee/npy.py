"""computePixels' NPY responses read with numpy's header parser run once per distinct header.

Why: the responses of one request shape carry the same NPY header (the bands' dtype and the
tile's shape), yet the client's ``NumPyConverter`` (``np.load``) parses it again for every
place with ``ast.literal_eval`` and then copies the data in chunks: 47 us for 4 bands of
32 x 32 (8 us here), 1.38 ms for 12 bands of 224 x 224 (1.02 ms here; docs/benchmarks.md,
session 19). :class:`NpyConverter` is an
``ee.image_converter.ImageConverter``, the client's own hook for ``fileFormat``: the request
asks for ``NPY`` as before (same body), and the response is read by numpy's parser once per
header, keyed by the header's bytes, then by ``np.frombuffer``. What ``np.load`` would not
take (another format version, object arrays, a short body) goes to ``np.load`` itself, so it
fails as it did. ``tests/ee/test_npy_converter.py`` compares both on generated arrays.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np
from ee.image_converter import ImageConverter
from numpy.lib import format as npy_format

MAGIC = npy_format.MAGIC_PREFIX
MAX_HEADERS = 256  # distinct headers kept per process (a run has one per tile shape)


@functools.lru_cache(maxsize=MAX_HEADERS)
def _header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran order, dtype) of an NPY header, as numpy's own reader parses it."""
    fh = io.BytesIO(head)
    version = npy_format.read_magic(fh)
    read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    shape, fortran, dtype = read[version](fh)
    if dtype.hasobject or fh.tell() != len(head):
        return None
    return tuple(shape), bool(fortran), dtype


def _header_end(data: bytes | memoryview) -> int | None:
    """Where the array data of an NPY v1/v2 body starts, or None if it is not one."""
    if len(data) < 12 or bytes(data[:6]) != MAGIC:
        return None
    if data[6] == 1 and data[7] == 0:
        return 10 + int.from_bytes(data[8:10], "little")
    if data[6] == 2 and data[7] == 0:
        return 12 + int.from_bytes(data[8:12], "little")
    return None


def read_npy(data: bytes) -> np.ndarray:
    """The array ``np.load(io.BytesIO(data))`` returns (writable, C- or Fortran-ordered)."""
    end = _header_end(data)
    parsed = _header(bytes(data[:end])) if end is not None and end <= len(data) else None
    if parsed is None:
        return np.load(io.BytesIO(data))
    shape, fortran, dtype = parsed
    count = math.prod(shape)
    if count == 0 or dtype.itemsize == 0 or len(data) - end < count * dtype.itemsize:
        return np.load(io.BytesIO(data))  # empty arrays; a short body fails as it did
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=end).copy()
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


class NpyConverter(ImageConverter):
    """``fileFormat`` for computePixels: ``NPY`` on the wire, read by :func:`read_npy`."""

    def expected_data_format(self) -> str:
        return "NPY"

    def do_conversion(self, data: bytes) -> Any:
        return read_npy(data)


NPY = NpyConverter()
