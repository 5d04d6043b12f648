"""NPZ files: small per-item files in one go, large combined files streamed row by row.

``NpzStreamWriter`` writes each array straight into the zip member (npy header first,
then rows), so a combined file of a million places never sits in memory.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io import storage
from rs_embed_ray.io.atomic import atomic_path

# zlib level of compressed members. Still DEFLATE, so any npz reader opens the files as
# before. Level 1 takes 45 ms of CPU for a 9x224x224 float32 input where numpy's
# savez_compressed (level 6) takes 72 ms, for 0.3% more bytes (docs/benchmarks.md). That CPU
# is taken from the forward on a small machine and from the host on a GPU one.
DEFLATE_LEVEL = 1


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    """Write a whole npz atomically (no pickles); compressed members at ``DEFLATE_LEVEL``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if not compress:
            np.savez(fh, **dict(arrays))
            return
        with zipfile.ZipFile(
            fh, "w", zipfile.ZIP_DEFLATED, compresslevel=DEFLATE_LEVEL, allowZip64=True
        ) as zf:
            for key, arr in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


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
        mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        level = DEFLATE_LEVEL if compress else None
        self._zip = zipfile.ZipFile(
            self._tmp, "w", compression=mode, compresslevel=level, allowZip64=True
        )
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
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
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
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._zip.close()
        try:
            raise RuntimeError("aborted")
        except RuntimeError as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
