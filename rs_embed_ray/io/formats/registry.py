"""The format registry: each format is registered once, by name, and found by name or path.

As xarray lists its backends and guesses one from a path, the registry keeps the formats in
registration order (the order error messages list them in) and asks each whether it can
open a path. A new format (Zarr, say) is one module with a :class:`Format` subclass and one
:func:`register` call; plan, writers, loader and resume find it here.
"""

from __future__ import annotations

import os

from rs_embed_ray.io.formats.base import Format

_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt``; a second format with the same name or an extension already taken is
    refused (which file is which must never be ambiguous)."""
    if fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    taken = {e: f.name for f in _FORMATS.values() for e in f.extensions}
    for ext in fmt.extensions:
        if ext in taken:
            raise ValueError(f"extension {ext!r} already belongs to format {taken[ext]!r}")
    _FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    return tuple(_FORMATS)


def all_formats() -> list[Format]:
    return list(_FORMATS.values())


def names_text(quote: bool = True) -> str:
    """``'npz', 'netcdf' or 'geoparquet'``: the formats as a message lists them."""
    names = [repr(n) if quote else n for n in _FORMATS]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def find_format(name: str) -> Format | None:
    return _FORMATS.get(name)


def get_format(name: str) -> Format:
    """The format called ``name``; ValueError naming the known ones otherwise."""
    fmt = _FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"Unknown format {name!r}; expected {names_text()}.")
    return fmt


def guess_format(path: str | os.PathLike[str]) -> Format | None:
    """The first registered format that says it can open ``path``, else None."""
    for fmt in _FORMATS.values():
        if fmt.guess_can_open(path):
            return fmt
    return None


def all_extensions() -> list[str]:
    """Every extension of every format, in registration order."""
    return [e for f in _FORMATS.values() for e in f.extensions]


def unregister(name: str) -> None:
    """Remove a format (a plug-in that is unloaded; tests that register their own)."""
    _FORMATS.pop(name, None)
