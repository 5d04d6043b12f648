"""File formats as plug-ins: each registered once, found by name or path.

``get_format("npz")`` / ``guess_format(path)`` return a :class:`Format`; the writers, the
loader, planning and resume ask it for what differs between file types. See
``registry`` for adding one.
"""

from rs_embed_ray.io.formats.base import (
    ArrayReader,
    CombinedSink,
    Format,
    ModelColumns,
    Places,
    Stack,
)
from rs_embed_ray.io.formats.geoparquet import GeoParquetFormat
from rs_embed_ray.io.formats.netcdf import NetcdfFormat
from rs_embed_ray.io.formats.npz import NpzFormat
from rs_embed_ray.io.formats.registry import (
    all_extensions,
    all_formats,
    find_format,
    format_names,
    get_format,
    guess_format,
    names_text,
    register,
    unregister,
)
from rs_embed_ray.io.formats.zarr import ZarrFormat

# registration order is the order messages list the formats in
register(NpzFormat())
register(NetcdfFormat())
register(GeoParquetFormat())
register(ZarrFormat())

__all__ = [
    "ArrayReader",
    "CombinedSink",
    "Format",
    "ModelColumns",
    "Places",
    "Stack",
    "all_extensions",
    "all_formats",
    "find_format",
    "format_names",
    "get_format",
    "guess_format",
    "names_text",
    "register",
    "unregister",
]
