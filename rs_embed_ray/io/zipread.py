"""Arrays read from an npz's members without ``np.load``'s per-member costs.

Why: reading one 12x224x224 float32 patch back from a shard took about 1 ms of CPU, of which
0.6 ms was ``zipfile``'s CRC-32 (zlib's) and most of the rest numpy's header parsing and
copies. Every patch is read by the model and again by the per-item writer. Here the
directory is parsed once by ``zipfile``; a stored member is read straight into a writable
buffer, its CRC checked with ISA-L's CRC-32 when installed (``zipdeflate.crc32``), and its
npy header parsed once per distinct header (cached). Compressed members go through ``zipfile``.
Object arrays are refused, as ``np.load(allow_pickle=False)`` refuses them.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
from typing import BinaryIO

import numpy as np

from rs_embed_ray.io.zipdeflate import crc32

_LOCAL_SIG = b"PK\x03\x04"
_LOCAL_HEADER = 30  # bytes before the name and extra field of a local header
_NPY_MAGIC = b"\x93NUMPY"


class NpzMembers:
    """The ``.npy`` members of one zip file (a path or an open binary file), by key."""

    def __init__(self, source: str | BinaryIO) -> None:
        self._fh: BinaryIO = open(source, "rb") if isinstance(source, str) else source
        try:
            self._zf = zipfile.ZipFile(self._fh)
        except BaseException:
            self._fh.close()
            raise
        self.files = [n.removesuffix(".npy") for n in self._zf.namelist()]
        self._keys = set(self.files)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def raw(self, key: str) -> bytes | bytearray:
        """The member's bytes, CRC checked (``zipfile.BadZipFile`` when they do not match)."""
        info = self._zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            # compressed or encrypted: zipfile's own path (a copy, so the array is writable)
            return bytearray(self._zf.read(info))
        fh = self._fh
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER)
        if len(head) != _LOCAL_HEADER or head[:4] != _LOCAL_SIG:
            raise zipfile.BadZipFile(f"bad local header for {info.filename}")
        name_len, extra_len = struct.unpack_from("<HH", head, 26)
        fh.seek(info.header_offset + _LOCAL_HEADER + name_len + extra_len)
        buf = bytearray(info.file_size)
        got = fh.readinto(memoryview(buf))  # type: ignore[attr-defined]
        if got != info.file_size:
            raise zipfile.BadZipFile(f"{info.filename} is cut short")
        if crc32(buf) != info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
        return buf

    def array(self, key: str) -> np.ndarray:
        """The member as an array; writable when it was stored."""
        return self._decode(self.raw(key))

    def _decode(self, buf: bytes | bytearray) -> np.ndarray:
        if buf[:6] != _NPY_MAGIC or buf[6] not in (1, 2):
            # not written by numpy's format 1 or 2 (3.0: UTF-8 field names): numpy reads it
            return np.lib.format.read_array(io.BytesIO(buf), allow_pickle=False)
        size_fmt = "<H" if buf[6] == 1 else "<I"
        start = 8 + struct.calcsize(size_fmt)
        (header_len,) = struct.unpack_from(size_fmt, buf, 8)
        header = bytes(buf[: start + header_len])
        shape, fortran, dtype = _parse_header(header)
        count = int(np.prod(shape, dtype=np.int64))
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=len(header))
        return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)

    def close(self) -> None:
        self._zf.close()
        self._fh.close()


@functools.lru_cache(maxsize=256)  # a shard's members share one or two headers
def _parse_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """numpy's own parser (safe literal evaluation, its checks), on the header alone."""
    fp = io.BytesIO(header)
    major, _ = np.lib.format.read_magic(fp)
    fmt = np.lib.format
    read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
    shape, fortran, dtype = read(fp)
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    return tuple(shape), bool(fortran), dtype


__all__ = ["NpzMembers"]
