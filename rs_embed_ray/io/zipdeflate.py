"""Zip files with DEFLATE members compressed by ISA-L (the ``isal`` package) when installed.

Why: compressing one saved 12x224x224 float32 input costs about 60 ms of CPU with zlib at
level 1 and about 4 ms with ISA-L's deflate at level 1, for the same size (docs/benchmarks.md).
On a small machine that CPU is taken from the forward. The stream is plain DEFLATE, so numpy,
``zipfile`` and ``unzip`` read the files as before. The standard library's ``zipfile`` cannot
be given another compressor, so members are framed here: a local header, the data, the central
directory. Every member carries ZIP64 sizes, as ``zipfile`` writes with ``force_zip64``; the
ZIP64 end records are added when the directory needs them.

The output must be seekable: each member's CRC and sizes are filled in after its data.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

try:  # ISA-L: the same DEFLATE format, about 15x less CPU than zlib at level 1
    from isal import isal_zlib as _isal
except ImportError:  # no wheel for this platform: the standard library's zlib
    _isal = None

STORED, DEFLATED = 0, 8
# zlib's level when ISA-L is not installed. Level 1 takes 45 ms of CPU for a 9x224x224 float32
# input where numpy's savez_compressed (level 6) takes 72 ms, for 0.3% more bytes.
ZLIB_LEVEL = 1
ISAL_LEVEL = 1  # ISA-L's levels are 0-3; 1 compresses these inputs as well as zlib's 1 and 6

_VERSION = 45  # ZIP64
_MADE_BY = (3 << 8) | _VERSION  # UNIX, as zipfile writes on Linux
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_ZIP64 = struct.Struct("<HHQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_CENTRAL_ZIP64 = struct.Struct("<HHQQQ")
_END64 = struct.Struct("<IQHHIIQQQQ")
_END64_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_CRC_AT = 14  # offset of the CRC in the local header; the ZIP64 sizes follow the name
# past these the end of central directory needs its ZIP64 records
MAX_ENTRIES = 0xFFFF - 1
MAX_OFFSET = 0xFFFFFFFF - 1


def backend() -> str:
    """Which library compresses: ``"isal"`` or ``"zlib"``."""
    return "zlib" if _isal is None else "isal"


# ISA-L's CRC-32 (the same polynomial as zlib's) is about 15x faster: 0.04 against 0.64 ms for
# a 2.4 MB member here; every member's data goes through it, stored shards included
crc32 = zlib.crc32 if _isal is None else _isal.crc32


def compressobj() -> Any:
    """A raw-DEFLATE compressor (no zlib header), as zip members hold."""
    if _isal is not None:
        return _isal.compressobj(ISAL_LEVEL, _isal.DEFLATED, -15)
    return zlib.compressobj(ZLIB_LEVEL, zlib.DEFLATED, -15)


@dataclass
class _Entry:
    raw_name: bytes
    flags: int  # bit 11: the name is UTF-8 (an ASCII name needs no flag)
    method: int
    offset: int
    crc: int = 0
    size: int = 0
    compressed: int = 0


class _Member:
    """The writable body of one member: ``write`` takes bytes or any contiguous buffer."""

    def __init__(self, fh: BinaryIO, entry: _Entry) -> None:
        self._fh = fh
        self._entry = entry
        self._compressor = compressobj() if entry.method == DEFLATED else None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        entry = self._entry
        entry.crc = crc32(view, entry.crc)
        entry.size += len(view)
        out = view if self._compressor is None else self._compressor.compress(view)
        entry.compressed += len(out)
        self._fh.write(out)
        return len(view)

    def finish(self) -> None:
        if self._compressor is not None:
            tail = self._compressor.flush()
            self._entry.compressed += len(tail)
            self._fh.write(tail)


class ZipWriter:
    """Write a zip member by member into a seekable binary file; ``close`` adds the directory.

    Closing the writer does not close ``fh``.
    """

    def __init__(self, fh: BinaryIO, compress: bool = True) -> None:
        self._fh = fh
        self._method = DEFLATED if compress else STORED
        self._entries: list[_Entry] = []
        t = time.localtime()
        self._time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
        self._date = ((max(t.tm_year, 1980) - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
        self._closed = False

    @contextmanager
    def member(self, name: str) -> Iterator[_Member]:
        """The body of member ``name``; its CRC and sizes are written when the block ends."""
        if self._closed:
            raise ValueError("the zip is closed")
        flags = 0 if name.isascii() else 0x800
        entry = _Entry(name.encode("utf-8"), flags, self._method, self._fh.tell())
        self._fh.write(self._local_header(entry))
        body = _Member(self._fh, entry)
        yield body
        body.finish()
        end = self._fh.tell()
        self._fh.seek(entry.offset + _CRC_AT)
        self._fh.write(struct.pack("<I", entry.crc))
        self._fh.seek(entry.offset + _LOCAL.size + len(entry.raw_name))
        self._fh.write(_LOCAL_ZIP64.pack(1, 16, entry.size, entry.compressed))
        self._fh.seek(end)
        self._entries.append(entry)

    def close(self) -> None:
        """Write the central directory and the end records."""
        if self._closed:
            return
        self._closed = True
        start = self._fh.tell()
        for e in self._entries:
            self._fh.write(
                _CENTRAL.pack(
                    0x02014B50,
                    _MADE_BY,
                    _VERSION,
                    e.flags,
                    e.method,
                    self._time,
                    self._date,
                    e.crc,
                    _U32,
                    _U32,
                    len(e.raw_name),
                    _CENTRAL_ZIP64.size,
                    0,
                    0,
                    0,
                    0o600 << 16,
                    _U32,
                )
            )
            self._fh.write(e.raw_name)
            self._fh.write(_CENTRAL_ZIP64.pack(1, 24, e.size, e.compressed, e.offset))
        end = self._fh.tell()
        count, size = len(self._entries), end - start
        if count > MAX_ENTRIES or size > MAX_OFFSET or start > MAX_OFFSET:
            self._fh.write(
                _END64.pack(
                    0x06064B50,
                    _END64.size - 12,
                    _MADE_BY,
                    _VERSION,
                    0,
                    0,
                    count,
                    count,
                    size,
                    start,
                )
            )
            self._fh.write(_END64_LOCATOR.pack(0x07064B50, 0, end, 1))
        self._fh.write(
            _END.pack(
                0x06054B50,
                0,
                0,
                min(count, _U16),
                min(count, _U16),
                min(size, _U32),
                min(start, _U32),
                0,
            )
        )

    def _local_header(self, e: _Entry) -> bytes:
        head = _LOCAL.pack(
            0x04034B50,
            _VERSION,
            e.flags,
            e.method,
            self._time,
            self._date,
            0,
            _U32,
            _U32,
            len(e.raw_name),
            _LOCAL_ZIP64.size,
        )
        return head + e.raw_name + _LOCAL_ZIP64.pack(1, 16, 0, 0)
