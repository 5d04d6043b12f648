"""NPZ files: small per-item files in one go, large combined files streamed row by row.

``NpzStreamWriter`` writes each array straight into the zip member (npy header first,
then rows), so a combined file of a million places never sits in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io import storage
from rs_embed_ray.io.atomic import atomic_path
from rs_embed_ray.io.zipdeflate import ZipWriter


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    """Write a whole npz atomically (no pickles): members DEFLATE-compressed (``zipdeflate``:
    ISA-L when installed), as ``np.savez_compressed`` writes them, or stored, as ``np.savez``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        zf = ZipWriter(fh, compress)
        for key, arr in arrays.items():
            with zf.member(f"{key}.npy") as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
        zf.close()


def array_to_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def array_from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _header(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    return {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(s) for s in shape),
    }


class NpzStreamWriter:
    """Build an npz member by member; commit() makes it appear atomically."""

    def __init__(self, path: str | Path, compress: bool = True) -> None:
        self.path = storage.as_path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._fh = open(self._tmp, "wb")  # closed by commit() or abort()
        self._zip = ZipWriter(self._fh, compress)
        self.keys: list[str] = []

    def add(self, key: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        self.stream(key, tuple(arr.shape), [arr], n_rows=None, dtype=arr.dtype)

    def stream(
        self,
        key: str,
        row_shape: tuple[int, ...],
        rows: Iterable[np.ndarray],
        n_rows: int | None,
        dtype: Any = np.float32,
    ) -> None:
        """Write ``key`` of shape (n_rows, *row_shape) from an iterable of rows.

        ``n_rows=None`` writes a single array given as the only element of ``rows``.
        """
        dt = np.dtype(dtype)
        shape = tuple(row_shape) if n_rows is None else (int(n_rows), *row_shape)
        with self._zip.member(f"{key}.npy") as fh:
            np.lib.format.write_array_header_2_0(fh, _header(shape, dt))
            written = 0
            for row in rows:
                r = np.ascontiguousarray(row, dtype=dt)
                expected = shape if n_rows is None else row_shape
                if tuple(r.shape) != tuple(expected):
                    raise ValueError(f"{key}: row shape {r.shape} != expected {expected}")
                fh.write(memoryview(r).cast("B"))
                written += 1
            want = 1 if n_rows is None else n_rows
            if written != want:
                raise ValueError(f"{key}: wrote {written} rows, expected {want}")
        self.keys.append(key)

    def commit(self) -> None:
        self._zip.close()
        self._fh.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._fh.close()
        try:
            raise RuntimeError("aborted")
        except RuntimeError as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
