"""Compact embedding vectors: the storage ``dtype`` of an export and its encode / decode.

``float32`` (the default) stores the model's output as is. ``float16`` casts it. ``int8`` is
linear quantization with one scale and one offset per vector (the vector of a pooled
embedding, each pixel's vector of a grid): ``code = round((v - offset) / scale)`` in
``[-127, 127]`` and ``v ~ code * scale + offset``, where ``offset`` is the middle of the
vector's range and ``scale`` its half-width over 127, so the error of a value is at most
``scale / 2``. The scales and offsets are stored beside the codes as float32 arrays named
:func:`scale_key` / :func:`offset_key` of the codes' key, the same way in every format, and
:func:`describe` is what the STAC ``emb:quantization`` field and the files' ``quantization``
attribute say. Pure numpy; every format plug-in (npz, netCDF, GeoParquet, Zarr) calls it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT32 = "float32"
FLOAT16 = "float16"
INT8 = "int8"
DTYPES = (FLOAT32, FLOAT16, INT8)
_LEVELS = 127  # codes in [-127, 127]: symmetric about the offset, -128 unused


def check_dtype(value: Any) -> str:
    """The storage dtype named by ``value`` (ValueError naming the choices otherwise)."""
    name = str(value).strip().lower() if value is not None else ""
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {value!r}: use one of {', '.join(DTYPES)}.")
    return name


def is_quantized(dtype: str) -> bool:
    """Whether vectors of ``dtype`` need a scale and offset to decode."""
    return dtype == INT8


def vector_axis(ndim: int) -> int:
    """The axis a vector runs along: the last of a pooled ``(D,)`` / ``(N, D)`` array, the
    channel axis ``-3`` of a grid ``(D, h, w)`` / ``(N, D, h, w)``."""
    return -3 if ndim >= 3 else -1


def scale_key(key: str) -> str:
    """The key of the scales of codes stored under ``key`` (``embedding__m`` ->
    ``embedding_scale__m``): an unknown kind to key parsers, so never taken for a model."""
    kind, sep, rest = key.partition("__")
    return f"{kind}_scale{sep}{rest}"


def offset_key(key: str) -> str:
    """The key of the offsets of codes stored under ``key``."""
    kind, sep, rest = key.partition("__")
    return f"{kind}_offset{sep}{rest}"


def encode(arr: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(codes, scale, offset)`` of float vectors ``arr``; scale/offset are None unless int8.

    int8 scale and offset have ``arr``'s shape without its vector axis. A vector holding a
    non-finite value gets a NaN scale and offset (it decodes to NaN, as it was)."""
    a = np.asarray(arr, dtype=np.float32)
    if dtype == FLOAT32:
        return a, None, None
    if dtype == FLOAT16:
        return a.astype(np.float16), None, None
    axis = vector_axis(a.ndim)
    finite = np.isfinite(a).all(axis=axis)
    safe = np.where(np.isfinite(a), a, 0.0)
    lo, hi = safe.min(axis=axis), safe.max(axis=axis)
    offset = ((hi + lo) / 2.0).astype(np.float32)
    scale = ((hi - lo) / (2.0 * _LEVELS)).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)  # constant vector
    centred = (safe - np.expand_dims(offset, axis)) / np.expand_dims(scale, axis)
    codes = np.clip(np.rint(centred), -_LEVELS, _LEVELS).astype(np.int8)
    scale = np.where(finite, scale, np.float32(np.nan)).astype(np.float32)
    offset = np.where(finite, offset, np.float32(np.nan)).astype(np.float32)
    return codes, scale, offset


def decode(
    codes: np.ndarray, scale: np.ndarray | None = None, offset: np.ndarray | None = None
) -> np.ndarray:
    """float32 vectors from stored ``codes`` (and int8's ``scale`` / ``offset``)."""
    c = np.asarray(codes)
    if scale is None or offset is None:
        return c.astype(np.float32, copy=False)
    axis = vector_axis(c.ndim)
    s = np.expand_dims(np.asarray(scale, np.float32), axis)
    o = np.expand_dims(np.asarray(offset, np.float32), axis)
    return (c.astype(np.float32) * s + o).astype(np.float32)


def describe(dtype: str) -> dict[str, Any] | None:
    """What ``emb:quantization`` / the ``quantization`` attribute say (None for float32):
    the STAC Embedding Extension's fields (``method``, ``original_dtype``,
    ``quantized_dtype``); int8's scales and offsets are per vector, so they are stored in
    the files beside the codes rather than listed here."""
    if dtype == FLOAT16:
        return {"method": "cast", "original_dtype": FLOAT32, "quantized_dtype": FLOAT16}
    if dtype == INT8:
        return {"method": "linear-per-vector", "original_dtype": FLOAT32, "quantized_dtype": INT8}
    return None


def file_attribute(dtype: str) -> dict[str, Any] | None:
    """The ``quantization`` attribute of a file: :func:`describe` plus how to decode."""
    desc = describe(dtype)
    if desc is None or dtype != INT8:
        return desc
    return {
        **desc,
        "formula": "value = code * scale + offset",
        "code_range": [-_LEVELS, _LEVELS],
        "scale_and_offset": "float32, one per vector, stored beside the codes",
        "naming": "<kind>_scale__<model> and <kind>_offset__<model> beside <kind>__<model>",
    }


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine similarity between matching vectors of ``a`` and ``b`` (N, D...)."""
    x = np.asarray(a, np.float64).reshape(len(a), -1)
    y = np.asarray(b, np.float64).reshape(len(b), -1)
    num = (x * y).sum(axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return float(np.min(num / den))
