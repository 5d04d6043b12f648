"""The npz format: ``<name>.npz`` per place (``np.savez_compressed``), or one combined npz
streamed member by member. Arrays are never unpickled on read."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io.formats.arrays import ArrayFileFormat, ArraySink, CheckView
from rs_embed_ray.io.formats.base import ArrayReader, Arrays, Doc, Places
from rs_embed_ray.io.npz import NpzStreamWriter, write_npz


def npz_member_problem(path: str, key: str) -> str | None:
    """Why array ``key`` of an npz cannot be trusted (missing, object dtype, a header that
    declares more bytes than the member holds), from its header only; None when it can."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = zf.getinfo(f"{key}.npy")
            with zf.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(fh)
    except KeyError:
        return f"array {key!r} is missing"
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return f"array {key!r} has a damaged header ({exc})"
    if dtype.hasobject:
        return (
            f"array {key!r} holds Python objects; refusing to unpickle it (export arrays are "
            "plain numeric arrays)"
        )
    want = math.prod(int(n) for n in shape) * dtype.itemsize
    if want > member.file_size:
        return (
            f"array {key!r} declares shape {tuple(shape)} ({want} bytes) but holds "
            f"{member.file_size} bytes: the file is damaged or crafted"
        )
    return None


class NpzReader(ArrayReader):
    def __init__(self, path: str) -> None:
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path!r} is not an npz archive.")
        self.path = path
        self.coords = {}
        self.attrs = {}
        self._npz: Any = np.load(path, allow_pickle=False)
        self.keys = [str(k) for k in self._npz.files]
        self.names = set(self.keys)

    def read(self, key: str) -> np.ndarray:
        # a crafted header (a shape of 10^12 elements) is refused before any allocation
        why = npz_member_problem(self.path, key)
        if why is not None and "is missing" not in why:
            raise ValueError(f"{self.path!r}: {why}.")
        try:
            return np.asarray(self._npz[key])
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                raise ValueError(
                    f"{self.path!r}: array {key!r} holds Python objects; refusing to "
                    "unpickle it (export arrays are plain numeric arrays)."
                ) from exc
            raise

    def shape(self, key: str) -> tuple[int, ...] | None:
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(f"{key}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    return tuple(np.lib.format.read_array_header_1_0(fh)[0])
                if version == (2, 0):
                    return tuple(np.lib.format.read_array_header_2_0(fh)[0])
        except (KeyError, ValueError, OSError, zipfile.BadZipFile):
            pass
        return None

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()
            self._npz = None


class _NpzSink(ArraySink):
    def open_writer(self, places: Places) -> Any:
        return NpzStreamWriter(self.path)

    def on_write_complete(self, manifest: dict[str, Any]) -> None:
        manifest["npz_path"] = str(self.path)
        manifest["npz_keys"] = sorted(self.writer.keys)
        self.writer.commit()


class NpzFormat(ArrayFileFormat):
    name = "npz"
    extensions = (".npz",)
    keys_field = "npz_keys"
    decode_all = True
    magic = (b"PK\x03\x04",)

    def write_item(self, path: Path, arrays: Arrays, manifest: Doc, attrs: Doc) -> None:
        manifest["npz_path"] = str(path)
        manifest["npz_keys"] = sorted(arrays)
        write_npz(path, arrays)

    def combined_sink(self, path: Path, attrs: dict[str, Any]) -> ArraySink:
        return _NpzSink(path, attrs)

    def open_reader(self, path: str) -> NpzReader:
        return NpzReader(path)

    def header_problem(self, path: str, keys: list[str]) -> str | None:
        try:
            if not zipfile.is_zipfile(path):
                return "it is not an npz archive"
        except OSError as exc:
            return f"it cannot be read ({exc})"
        for k in keys:
            why = npz_member_problem(path, k)
            if why is not None:
                return why
        return None

    @contextmanager
    def check_view(self, path: Path) -> Iterator[CheckView]:
        with np.load(path, allow_pickle=False) as z:
            yield CheckView(set(z.files), list(z.files), lambda k: np.asarray(z[k], np.float32))
