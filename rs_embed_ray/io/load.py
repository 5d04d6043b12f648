"""Read exports back into memory: :func:`load_export` and :func:`summarize_export`.

Two layouts (contract §3), each in npz or NetCDF:

* **combined** — one ``<base>.npz`` / ``<base>.nc`` / ``<base>.parquet`` (GeoParquet, pooled
  vectors, one row per place) holding every point and model, with a ``<base>.json`` manifest
  beside it;
* **per_item** — a directory with one ``<name>.npz`` / ``<name>.nc`` + ``<name>.json`` pair per
  point; the manifest's ``point_index`` (or a ``p<digits>`` file name) gives the row.

Beyond the rs-embed loader: combined grids of different sizes per point load as a list of
arrays (instead of ``None``); exports written without a sidecar (``save_manifest=False``) load
when their arrays follow the key conventions (models inferred from keys, status
``"unknown"``); partial combined arrays stored with ``indices`` are re-aligned to their rows;
``as_xarray=True`` returns labelled ``xarray.DataArray`` embeddings. Places with time windows
of their own have them in ``ExportResult.temporals``.

Arrays are read without ever unpickling (``np.load(..., allow_pickle=False)``); NetCDF files
are opened with xarray, the needed variables are read into memory and the file is closed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Union

import numpy as np

from rs_embed_ray.io import quantize, storage
from rs_embed_ray.io.formats import (
    ArrayReader,
    Format,
    all_extensions,
    all_formats,
    find_format,
    guess_format,
    names_text,
)
from rs_embed_ray.io.formats.base import spatial_lonlat as _spatial_lonlat
from rs_embed_ray.io.keys import (
    EMBEDDING,
    EMBEDDINGS,
    INPUT_CHW,
    INPUTS_BCHW,
    array_key,
    parse_array_key,
    sanitize_key,
)
from rs_embed_ray.io.state import STATE_DIR_PER_ITEM

if TYPE_CHECKING:
    import xarray as xr

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# whether this load decodes int8 / float16 vectors to float32 (load_export's ``dequantize``)
_DEQUANTIZE: ContextVar[bool] = ContextVar("dequantize", default=True)

__all__ = ["ExportResult", "ModelResult", "load_export", "summarize_export"]

#: What ``ModelResult.embeddings`` / ``inputs`` may hold (see :class:`ModelResult`).
ArrayData = Union[np.ndarray, "list[np.ndarray | None]"]
EmbeddingData = Union[
    np.ndarray, "list[np.ndarray | None]", "xr.DataArray", "list[xr.DataArray | None]"
]

_POINT_NAME = re.compile(r"^p([0-9]+)$")
_EMBEDDED_MANIFEST_ATTR = "rs_embed_ray_manifest"
_MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_REF_KEY_FIELDS = ("npz_key", "nc_variable", "nc_key", "variable", "parquet_column")
_REF_KEYS_FIELDS = ("npz_keys", "nc_variables", "nc_keys", "variables")


# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass
class ModelResult:
    """One model's results over all points of an export.

    ``embeddings``: float32 ``(n_items, D)`` (pooled) or ``(n_items, D, h, w)`` (grid); rows of
    points without an embedding are NaN. When the per-point grids differ in size (ragged), it
    is a ``list`` of length ``n_items`` holding one ``(D, h, w)`` array per point, ``None`` where
    a point has no embedding. ``None`` when the model has no embeddings at all (failed, or
    ``save_embeddings=False``). With ``load_export(..., as_xarray=True)`` it is an
    ``xarray.DataArray`` (dims ``(item, dim[, y, x])``; a list of them when ragged).
    ``inputs``: the saved model inputs, same conventions (``(n_items, C, H, W)`` or
    ``(n_items, T, C, H, W)``), or ``None`` when no inputs were saved.
    ``meta``: one dict per point (``{}`` where unknown). ``error``: the model's error when it
    failed as a whole, else ``None``. ``status``: ``"ok"``, ``"partial"``, ``"failed"`` or
    ``"unknown"`` (export without a manifest).
    """

    name: str
    status: str
    embeddings: EmbeddingData | None
    inputs: ArrayData | None
    meta: list[dict[str, Any]]
    error: str | None = None


@dataclass
class ExportResult:
    """A loaded export (see :func:`load_export`).

    ``layout`` is ``"combined"`` or ``"per_item"``; ``spatials`` one dict per point (``{}``
    where unknown); ``temporal`` the manifest's temporal dict or ``None``; ``status`` the
    overall status; ``models`` results by model name (user spelling); ``manifest`` the raw
    manifest (combined) or the lowest-index point manifest (per-item), ``{}`` without one.
    ``temporals``: each point's own window (temporal dict, ``None`` for the default window)
    when points have windows of their own, else ``None`` (``temporal`` applies to all).
    """

    layout: str
    spatials: list[dict[str, Any]]
    temporal: dict[str, Any] | None
    n_items: int
    status: str
    models: dict[str, ModelResult]
    manifest: dict[str, Any]
    temporals: list[dict[str, Any] | None] | None = None

    def embedding(self, model: str) -> EmbeddingData:
        """Embeddings of ``model``; KeyError if unknown, ValueError if it has none."""
        if model not in self.models:
            raise KeyError(
                f"Model {model!r} not found in export. Available models: {sorted(self.models)}"
            )
        result = self.models[model]
        if result.embeddings is None:
            raise ValueError(
                f"Model {model!r} has no embeddings (status={result.status!r}). "
                f"Error: {result.error}"
            )
        return result.embeddings

    @property
    def ok_models(self) -> list[str]:
        """Names of models whose status is ``"ok"``."""
        return [name for name, r in self.models.items() if r.status == "ok"]

    @property
    def failed_models(self) -> list[str]:
        """Names of models whose status is ``"failed"``."""
        return [name for name, r in self.models.items() if r.status == "failed"]

    @property
    def partial_models(self) -> list[str]:
        """Names of models whose status is ``"partial"``."""
        return [name for name, r in self.models.items() if r.status == "partial"]


#: (result, point names or None, coordinates found in the file) — internal loader output
_Loaded = tuple[ExportResult, "list[str] | None", "dict[str, np.ndarray]"]


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def load_export(
    path: str | os.PathLike[str], *, as_xarray: bool = False, dequantize: bool = True
) -> ExportResult:
    """Load an export written by ``export_batch``.

    A directory loads as a per-item export; a ``.npz`` / ``.nc`` / ``.netcdf`` / ``.parquet``
    / ``.json`` file as a combined export (a single per-item point file loads as a one-item
    export).
    ``as_xarray=True`` turns each model's embeddings into an ``xarray.DataArray`` with dims
    ``(item, dim[, y, x])`` and ``lon`` / ``lat`` (and ``name`` where known) coordinates.

    Vectors stored as int8 or float16 (``dtype=``) come back as float32, decoded with their
    per-vector scale and offset; ``dequantize=False`` returns the stored codes instead.

    An ``s3://`` / ``gs://`` export is copied to a local temp folder first (io.storage).

    Raises FileNotFoundError (missing path, missing manifest or paired array file) and
    ValueError (unknown extension, no point files, two files claiming one point index).
    """
    token = _DEQUANTIZE.set(bool(dequantize))
    try:
        return _load_export(_local(path), as_xarray)
    finally:
        _DEQUANTIZE.reset(token)


def _load_export(path: str, as_xarray: bool) -> ExportResult:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Export path does not exist: {path!r}")
    if _is_per_item_dir(path):
        result, names, coords = _load_per_item(path)
    else:
        result, names, coords = _load_combined(path)
    if as_xarray:
        _convert_to_xarray(result, names, coords)
    return result


def summarize_export(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Cheap summary of an export from its manifests only (arrays are not read).

    Returns ``{"path", "layout", "format", "has_manifest", "n_items", "status", "stage",
    "models": {name: {"status", "ok", "failed"}}, "ok", "failed", "ok_models",
    "partial_models", "failed_models", "missing_items"}``. ``ok`` / ``failed`` count
    (point, model) pairs; ``missing_items`` lists per-item indices below ``n_items`` with no
    file. Exports without a manifest are summarised from their array keys (status
    ``"unknown"``).
    """
    path = _local(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Export path does not exist: {path!r}")
    if _is_per_item_dir(path):
        return _summarize_per_item(path)
    return _summarize_combined(path)


# --------------------------------------------------------------------------------------------
# Array files
# --------------------------------------------------------------------------------------------


def _local(path: str | os.PathLike[str]) -> str:
    """A local path of the export: ``path``, or a copy of an object-store export without
    its run state."""
    if storage.is_remote(path):
        return storage.materialize(str(path), skip=(STATE_DIR_PER_ITEM,))
    return os.fspath(path)


def _import_xarray() -> Any:
    try:
        import xarray as xr
    except ImportError as exc:  # pragma: no cover - xarray is a dependency
        raise ImportError("xarray is required for as_xarray=True (pip install xarray).") from exc
    return xr


def _is_per_item_dir(path: str) -> bool:
    """A directory of per-item files (not a format whose one file is a directory)."""
    if not os.path.isdir(path):
        return False
    found = guess_format(path)
    return found is None or not found.directory_store


def _format_of(path: str) -> str | None:
    """The name of the format whose files are named like ``path``, else None."""
    found = guess_format(path)
    return found.name if found is not None else None


def _per_item_format(path: str) -> str | None:
    """The format of a per-item point file named like ``path`` (None: not one)."""
    found = guess_format(path)
    return found.name if found is not None and found.per_item else None


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _format(fmt: str) -> Format:
    found = find_format(fmt)
    if found is None:
        raise ValueError(f"Unknown array file format {fmt!r}; expected {names_text()}.")
    return found


class _ArrayFile(Mapping[str, np.ndarray]):
    """Read-only, lazy and cached access to the arrays of one export file, through its
    format's reader (io.formats): the loader itself never asks which format it reads."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self._reader: ArrayReader | None = _format(fmt).open_reader(path)
        self.coords: dict[str, np.ndarray] = self._reader.coords
        self.attrs: dict[str, Any] = self._reader.attrs
        self._keys = list(self._reader.keys)
        self._keyset = set(self._reader.names)
        self._cache: dict[str, np.ndarray] = {}

    def _open(self) -> ArrayReader:
        if self._reader is None:
            raise ValueError(f"{self.path!r} is closed.")
        return self._reader

    def file_spatials(self) -> list[dict[str, Any]] | None:
        """Places read from the file itself (GeoParquet geometry), else None."""
        return self._reader.file_spatials() if self._reader is not None else None

    def file_temporals(self) -> list[dict[str, Any] | None] | None:
        """Per-place windows read from the file itself (GeoParquet columns), else None."""
        return self._reader.file_temporals() if self._reader is not None else None

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._cache:
            return self._cache[key]
        if key not in self._keyset:
            raise KeyError(key)
        arr = self._open().read(key)
        scale, offset = quantize.scale_key(key), quantize.offset_key(key)
        if _DEQUANTIZE.get() and scale in self._keyset and offset in self._keyset:
            arr = quantize.decode(arr, self[scale], self[offset])
        self._cache[key] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keyset

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of ``key`` without reading its data where the format allows it."""
        if key in self._cache:
            return tuple(self._cache[key].shape)
        shape = self._reader.shape(key) if self._reader is not None else None
        return shape if shape is not None else tuple(self[key].shape)

    def embedded_manifest(self) -> dict[str, Any] | None:
        """The manifest our writers embed in the file (netCDF, GeoParquet), if any."""
        raw = self.attrs.get(_EMBEDDED_MANIFEST_ATTR)
        if not isinstance(raw, str):
            return None
        try:
            data = json_loads(raw, "the embedded manifest")
        except ValueError as exc:
            log.warning("%s: %s; ignored", self.path, exc)
            return None
        return data if isinstance(data, dict) else None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> _ArrayFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_arrays(arrays_path: str, fmt: str) -> dict[str, np.ndarray]:
    """Every array of an export file (GeoParquet: the vector columns, as
    ``embeddings__<key>``)."""
    if find_format(fmt) is None:
        raise ValueError(f"Unknown format {fmt!r}; expected {names_text()}.")
    with _ArrayFile(arrays_path, fmt) as arrays:
        return {k: arrays[k] for k in arrays}


def json_loads(raw: str | bytes, what: str) -> Any:
    """``json.loads`` whose every failure is a ValueError naming ``what``: a crafted file
    nested deeper than the parser's recursion limit is refused, not a RecursionError."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be a manifest.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def _load_json(json_path: str) -> dict[str, Any]:
    """Load a JSON manifest; ValueError when unreadable or not an object."""
    try:
        size = os.path.getsize(json_path)
        if size > _MAX_MANIFEST_BYTES:
            raise ValueError(
                f"Failed to load manifest {json_path!r}: {size} bytes, more than any manifest "
                f"this package writes ({_MAX_MANIFEST_BYTES} bytes)."
            )
        with open(json_path, "rb") as f:
            data = json_loads(f.read(), f"Manifest {json_path!r}")
    except OSError as exc:
        raise ValueError(f"Failed to load manifest {json_path!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"Manifest {json_path!r} is not a JSON object.")
    return data


def _as_float32(arr: Any) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == object:
        raise ValueError("Export arrays must be numeric; found an object array.")
    if not _DEQUANTIZE.get() and a.dtype in (np.int8, np.float16):
        return a  # the stored codes, as asked
    return a.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Row assembly
# --------------------------------------------------------------------------------------------


def _stack_rows(per_point: Sequence[np.ndarray | None]) -> ArrayData | None:
    """Stack per-point arrays into ``(n, ...)`` with NaN rows for ``None``.

    All ``None`` → ``None``; arrays of different shapes → a list (``None`` kept) instead.
    """
    present = [a for a in per_point if a is not None]
    if not present:
        return None
    shape = present[0].shape
    if any(a.shape != shape for a in present):
        log.debug("per-point arrays differ in shape; returning a list (ragged)")
        return [None if a is None else _as_float32(a) for a in per_point]
    fill = np.full(shape, np.nan, dtype=np.float32)
    return np.stack([fill if a is None else _as_float32(a) for a in per_point], axis=0)


def _stack_per_item_embeddings(per_point: list[np.ndarray | None]) -> np.ndarray | None:
    """Dense stack with NaN fill from the first present shape; ValueError when shapes differ."""
    out = _stack_rows(per_point)
    if isinstance(out, list):
        shapes = sorted({tuple(a.shape) for a in out if a is not None})
        raise ValueError(f"Per-point arrays have different shapes {shapes}; cannot stack.")
    return out


def _ref_key(ref: Any) -> str | None:
    if isinstance(ref, dict):
        for field in _REF_KEY_FIELDS:
            value = ref.get(field)
            if isinstance(value, str) and value:
                return value
    return None


def _ref_keys(ref: Any) -> list[Any] | None:
    if isinstance(ref, dict):
        for field in _REF_KEYS_FIELDS:
            value = ref.get(field)
            if isinstance(value, list) and value:
                return value
    return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _gather_ragged_rows(
    ref: dict[str, Any], arrays: Mapping[str, np.ndarray], n_items: int
) -> ArrayData | None:
    """Assemble a per-point reference (``npz_keys`` + ``indices``) into rows.

    Row index: ``indices[j]``, else the numeric suffix after the last ``__``, else ``j``.
    Missing rows are NaN; per-point shapes that differ give a list (see :class:`ModelResult`).
    """
    keys = _ref_keys(ref)
    if not keys:
        return None
    indices = ref.get("indices") if isinstance(ref, dict) else None
    per_point: list[np.ndarray | None] = [None] * n_items
    for j, key in enumerate(keys):
        if not (isinstance(key, str) and key in arrays):
            continue
        idx = None
        if isinstance(indices, list) and j < len(indices):
            idx = _int_or_none(indices[j])
        if idx is None:
            tail = key.rsplit("__", 1)[-1]
            idx = int(tail) if tail.isascii() and tail.isdigit() else j
        if 0 <= idx < n_items:
            per_point[idx] = _as_float32(arrays[key])
        else:
            log.warning("array %r claims row %d outside 0..%d; ignored", key, idx, n_items - 1)
    return _stack_rows(per_point)


def _align_dense(arr: np.ndarray, indices: Any, n_items: int, key: str) -> np.ndarray:
    """Scatter a stacked array that covers only ``indices`` into ``n_items`` NaN-filled rows."""
    if not (isinstance(indices, list) and indices) or arr.ndim == 0:
        return arr
    parsed = [_int_or_none(i) for i in indices]
    idx = [i for i in parsed if i is not None]
    if len(idx) != len(parsed) or len(idx) != arr.shape[0] or idx == list(range(n_items)):
        return arr
    if any(not 0 <= i < n_items for i in idx):
        log.warning("%r: indices outside 0..%d; rows left as stored", key, n_items - 1)
        return arr
    out = np.full((n_items, *arr.shape[1:]), np.nan, dtype=np.float32)
    out[idx] = arr
    return out


def _combined_ref_array(
    ref: Any, arrays: Mapping[str, np.ndarray], *, default_key: str, n_items: int
) -> ArrayData | None:
    """Resolve a combined reference: a dense key (``npz_key`` or default) or per-point keys."""
    ref = ref if isinstance(ref, dict) else {}
    key = _ref_key(ref) or default_key
    if key in arrays:
        arr = _align_dense(_as_float32(arrays[key]), ref.get("indices"), n_items, key)
        if ref.get("ragged") and isinstance(ref.get("shapes"), dict):
            return _unpad_rows(arr, ref["shapes"], n_items, key)
        return arr
    return _gather_ragged_rows(ref, arrays, n_items)


def _unpad_rows(arr: np.ndarray, shapes: dict[str, Any], n_items: int, key: str) -> ArrayData:
    """Crop the rows of a padded ragged stack (NetCDF) back to their own shapes."""
    if arr.ndim == 0 or arr.shape[0] != n_items:
        return arr
    rows: list[np.ndarray | None] = [None] * n_items
    for i in range(n_items):
        shape = shapes.get(str(i))
        if not isinstance(shape, list) or len(shape) != arr.ndim - 1:
            continue
        try:
            rows[i] = arr[i][tuple(slice(0, int(d)) for d in shape)]
        except (TypeError, ValueError):
            log.warning("%r: bad shape %r for row %d; row left out", key, shape, i)
    return _stack_rows(rows) if any(r is not None for r in rows) else arr


def _build_combined_model_result(
    entry: dict[str, Any], arrays: Mapping[str, np.ndarray], n_items: int
) -> ModelResult:
    """ModelResult of one entry of a combined manifest's ``models`` list."""
    name = str(entry.get("model", ""))
    embeddings = _combined_ref_array(
        entry.get("embeddings"),
        arrays,
        default_key=array_key(EMBEDDINGS, name),
        n_items=n_items,
    )
    inputs = _combined_ref_array(
        entry.get("inputs"),
        arrays,
        default_key=array_key(INPUTS_BCHW, name),
        n_items=n_items,
    )
    raw_metas = entry.get("metas")
    raw_metas = raw_metas if isinstance(raw_metas, list) else []
    meta = [
        raw_metas[i] if i < len(raw_metas) and isinstance(raw_metas[i], dict) else {}
        for i in range(n_items)
    ]
    error = entry.get("error") or None
    return ModelResult(
        name=name,
        status=str(entry.get("status", "failed")),
        embeddings=embeddings,
        inputs=inputs,
        meta=meta,
        error=str(error) if error is not None else None,
    )


# --------------------------------------------------------------------------------------------
# Combined layout
# --------------------------------------------------------------------------------------------


def _resolve_combined_paths(path: str) -> tuple[str, str, str]:
    """``(arrays_path, json_path, fmt)`` of a combined export given any of its files."""
    base, ext = os.path.splitext(path)
    ext = ext.lower()
    if ext == ".json":
        for fmt in all_formats():
            arrays_path = base + fmt.ext
            if os.path.exists(arrays_path):
                return arrays_path, path, fmt.name
        wanted = _or_list([f.ext for f in all_formats()])
        raise FileNotFoundError(f"Found manifest {path!r} but no paired {wanted} file at {base!r}.")
    name = _format_of(path)
    if name is None:
        wanted = _or_list([*all_extensions(), ".json"])
        raise ValueError(
            f"Unrecognised file extension {ext!r}; expected {wanted} for a combined export "
            "(or a directory for a per-item export)."
        )
    json_path = base + ".json"
    if not os.path.exists(json_path):
        raise FileNotFoundError(
            f"Array file {path!r} found but no paired manifest at {json_path!r}."
        )
    return path, json_path, name


def _is_point_manifest(manifest: dict[str, Any]) -> bool:
    """A per-item point manifest (rather than a combined one)."""
    return (
        "n_items" not in manifest
        and "spatials" not in manifest
        and ("point_index" in manifest or "spatial" in manifest)
    )


def _combined_n_items(manifest: dict[str, Any], arrays: _ArrayFile | None) -> int:
    """``n_items`` of the manifest (0 if unusable); without the key, from spatials or arrays."""
    if "n_items" in manifest:
        return max(_int_or_none(manifest.get("n_items")) or 0, 0)
    spatials = manifest.get("spatials")
    if isinstance(spatials, list):
        return len(spatials)
    if arrays is not None:
        return _n_items_from_keys(arrays)
    return 0


def _without_manifest(
    path: str, read: Callable[[str, str], _T | None], missing: FileNotFoundError
) -> _T:
    """A combined file whose manifest is missing: what ``read(path, format)`` makes of the
    file alone (the loader and the summary share this fallback), else ``missing``."""
    name = _format_of(path)
    if name is not None:
        found = read(path, name)
        if found is not None:
            return found
    raise missing


def _load_combined(path: str) -> _Loaded:
    try:
        arrays_path, json_path, fmt = _resolve_combined_paths(path)
    except FileNotFoundError as exc:
        return _without_manifest(path, _load_file_without_manifest, exc)
    manifest = _load_json(json_path)
    if _is_point_manifest(manifest):
        base = os.path.splitext(os.path.basename(arrays_path))[0]
        return _assemble_per_item([_Point(0, base, arrays_path, fmt, manifest)], n_items=1)
    with _ArrayFile(arrays_path, fmt) as arrays:
        return _combined_from_manifest(manifest, arrays)


def _combined_from_manifest(manifest: dict[str, Any], arrays: _ArrayFile) -> _Loaded:
    """Combined ExportResult of a manifest and its (open) array file."""
    n_items = _combined_n_items(manifest, arrays)
    models: dict[str, ModelResult] = {}
    for entry in manifest.get("models") or []:
        if not isinstance(entry, dict):
            continue
        result = _build_combined_model_result(entry, arrays, n_items)
        if result.name in models:
            log.warning("%s: model %r listed twice; keeping the last", arrays.path, result.name)
        models[result.name] = result
    if manifest.get("resume_incomplete") or manifest.get("status") == "running":
        log.warning(
            "%s is an unfinished checkpoint (stage=%r); loading what it holds",
            arrays.path,
            manifest.get("stage"),
        )
    raw_spatials = manifest.get("spatials")
    if not isinstance(raw_spatials, list):  # GeoParquet's embedded manifest: in the columns
        raw_spatials = arrays.file_spatials()
    spatials = [s if isinstance(s, dict) else {} for s in raw_spatials or []]
    spatials += [{} for _ in range(n_items - len(spatials))]
    temporal = manifest.get("temporal") or None
    names = manifest.get("names")
    names = [str(n) for n in names] if isinstance(names, list) and len(names) == n_items else None
    temporals = manifest.get("temporals")
    if temporals is None and manifest.get("has_temporals"):
        temporals = arrays.file_temporals()
    if not (isinstance(temporals, list) and len(temporals) == n_items):
        temporals = None
    result = ExportResult(
        layout="combined",
        spatials=spatials,
        temporal=temporal if isinstance(temporal, dict) else None,
        n_items=n_items,
        status=str(manifest.get("status", "ok")),
        models=models,
        manifest=manifest,
        temporals=[t if isinstance(t, dict) else None for t in temporals]
        if temporals is not None
        else None,
    )
    return result, names, dict(arrays.coords)


# --------------------------------------------------------------------------------------------
# Exports without a manifest (save_manifest=False): models from array keys
# --------------------------------------------------------------------------------------------


@dataclass
class _KeyModel:
    """Array keys of one model found in a file without a manifest."""

    dense_embeddings: str | None = None
    dense_inputs: str | None = None
    embedding: str | None = None
    input: str | None = None
    embedding_points: dict[int, str] | None = None
    input_points: dict[int, str] | None = None


def _models_from_keys(keys: Sequence[str]) -> dict[str, _KeyModel]:
    models: dict[str, _KeyModel] = {}
    for key in sorted(keys):
        parsed = parse_array_key(key)
        if parsed is None:
            continue
        m = models.setdefault(parsed.model_key, _KeyModel())
        if parsed.index is not None:
            if parsed.kind == EMBEDDING:
                m.embedding_points = {**(m.embedding_points or {}), parsed.index: key}
            elif parsed.kind == INPUT_CHW:
                m.input_points = {**(m.input_points or {}), parsed.index: key}
        elif parsed.kind == EMBEDDINGS:
            m.dense_embeddings = key
        elif parsed.kind == INPUTS_BCHW:
            m.dense_inputs = key
        elif parsed.kind == EMBEDDING:
            m.embedding = key
        elif parsed.kind == INPUT_CHW:
            m.input = key
    return dict(sorted(models.items()))


def _is_combined_style(models: dict[str, _KeyModel]) -> bool:
    return any(
        m.dense_embeddings or m.dense_inputs or m.embedding_points or m.input_points
        for m in models.values()
    )


def _n_items_from_keys(arrays: _ArrayFile) -> int:
    attr_n = _int_or_none(arrays.attrs.get("n_items"))
    n = max(attr_n or 0, 0)
    for key in arrays:
        parsed = parse_array_key(key)
        if parsed is None:
            continue
        if parsed.index is not None:
            n = max(n, parsed.index + 1)
        elif parsed.kind in (EMBEDDINGS, INPUTS_BCHW):
            shape = arrays.shape(key)
            if shape:
                n = max(n, int(shape[0]))
    return n


def _spatials_from_coords(coords: dict[str, np.ndarray], n_items: int) -> list[dict[str, Any]]:
    lon, lat = coords.get("lon"), coords.get("lat")
    if lon is None or lat is None or lon.shape != (n_items,) or lat.shape != (n_items,):
        return [{} for _ in range(n_items)]
    out: list[dict[str, Any]] = []
    for x, y in zip(lon.tolist(), lat.tolist(), strict=True):
        ok = isinstance(x, float | int) and isinstance(y, float | int)
        out.append({"lon": float(x), "lat": float(y)} if ok and math.isfinite(x + y) else {})
    return out


def _load_file_without_manifest(path: str, fmt: str) -> _Loaded | None:
    """Load an array file whose sidecar is missing, or ``None`` when its keys are not ours."""
    try:
        arrays = _ArrayFile(path, fmt)
    except Exception as exc:
        log.debug("%s: not readable as %s (%s)", path, fmt, exc)
        return None
    base = os.path.splitext(os.path.basename(path))[0]
    with arrays:
        embedded = arrays.embedded_manifest()
        if embedded is not None:
            log.info("%s has no sidecar; using the manifest embedded in the file", path)
            if not _is_point_manifest(embedded):
                return _combined_from_manifest(embedded, arrays)
            arrays.close()
            return _assemble_per_item([_Point(0, base, path, fmt, embedded)], n_items=1)
        key_models = _models_from_keys(list(arrays))
        if not key_models:
            return None
        if not _is_combined_style(key_models):
            arrays.close()
            return _assemble_per_item([_Point(0, base, path, fmt, None)], n_items=1)
        log.info("%s has no manifest; models inferred from array keys (status 'unknown')", path)
        n_items = _n_items_from_keys(arrays)
        models: dict[str, ModelResult] = {}
        for name, km in key_models.items():
            entry: dict[str, Any] = {"model": name, "status": "unknown"}
            for field, dense, points in (
                ("embeddings", km.dense_embeddings, km.embedding_points),
                ("inputs", km.dense_inputs, km.input_points),
            ):
                if dense:
                    entry[field] = {"npz_key": dense}
                elif points:
                    idx = sorted(points)
                    entry[field] = {"npz_keys": [points[i] for i in idx], "indices": idx}
            models[name] = _build_combined_model_result(entry, arrays, n_items)
        coords = dict(arrays.coords)
    names = None
    if "name" in coords and coords["name"].shape == (n_items,):
        names = [str(v) for v in coords["name"].tolist()]
    file_spatials = arrays.file_spatials()
    result = ExportResult(
        layout="combined",
        spatials=file_spatials
        if file_spatials is not None and len(file_spatials) == n_items
        else _spatials_from_coords(coords, n_items),
        temporal=None,
        n_items=n_items,
        status="unknown",
        models=models,
        manifest={},
    )
    return result, names, coords


# --------------------------------------------------------------------------------------------
# Per-item layout
# --------------------------------------------------------------------------------------------


class _NoPairedFiles(ValueError):
    """No array file with a sidecar in a per-item directory."""


@dataclass
class _Point:
    """One per-item point file: its row, name, array file and manifest (None: infer)."""

    index: int
    name: str
    arrays_path: str
    fmt: str
    manifest: dict[str, Any] | None


def _find_per_item_files(directory: str) -> list[tuple[str, str, str, str]]:
    """Sorted ``(arrays_path, json_path, fmt, base)`` of every array file with a sidecar.

    Not recursive; array files without ``<base>.json`` and other files are ignored.
    """
    entries: list[tuple[str, str, str, str]] = []
    for fname in sorted(os.listdir(directory)):
        base = os.path.splitext(fname)[0]
        fmt = _per_item_format(fname)
        full = os.path.join(directory, fname)
        if fmt is None or not os.path.isfile(full):
            continue
        json_path = os.path.join(directory, base + ".json")
        if not os.path.isfile(json_path):
            log.debug("%s has no manifest beside it; ignored", full)
            continue
        entries.append((full, json_path, fmt, base))
    if not entries:
        raise _NoPairedFiles(
            f"No per-item export files found in {directory!r}. Expected "
            f"{_or_list([repr('<name>' + f.ext) for f in all_formats() if f.per_item])} "
            "files with paired '.json' manifests."
        )
    return entries


def _per_item_point_index(manifest: dict[str, Any], base: str) -> int | None:
    """Row of a per-item file: ``point_index`` (int >= 0), else ``p<digits>``, else None."""
    idx = manifest.get("point_index")
    if isinstance(idx, int) and not isinstance(idx, bool) and idx >= 0:
        return idx
    match = _POINT_NAME.match(base)
    return int(match.group(1)) if match else None


def _claim(claimed_by: dict[int, str], idx: int, fname: str) -> None:
    if idx in claimed_by:
        raise ValueError(
            f"Per-item files {claimed_by[idx]!r} and {fname!r} both claim point_index={idx}; "
            "refusing to overwrite a row. Remove the stale file or separate the exports."
        )
    claimed_by[idx] = fname


def _discover_points(directory: str) -> list[_Point]:
    """Point files of a per-item directory with sidecars (stray pairs skipped)."""
    points: list[_Point] = []
    claimed_by: dict[int, str] = {}
    for arrays_path, json_path, fmt, base in _find_per_item_files(directory):
        manifest = _load_json(json_path)
        idx = _per_item_point_index(manifest, base)
        if idx is None:
            log.debug("%s: no point_index and not a p<digits> name; ignored", arrays_path)
            continue
        _claim(claimed_by, idx, os.path.basename(arrays_path))
        points.append(_Point(idx, base, arrays_path, fmt, manifest))
    if not points:
        raise ValueError(
            f"No per-item point files found in {directory!r}. Point files carry a "
            "'point_index' in their .json manifest (or use the default 'p<index>' naming)."
        )
    points.sort(key=lambda p: p.index)
    return points


def _discover_points_without_manifest(directory: str) -> list[_Point]:
    """Point files of a directory with no sidecars at all (``save_manifest=False``).

    A NetCDF file's embedded manifest is used when present; other files count when named
    ``p<digits>`` and holding per-item array keys (models then inferred from the keys).
    """
    points: list[_Point] = []
    claimed_by: dict[int, str] = {}
    for fname in sorted(os.listdir(directory)):
        base = os.path.splitext(fname)[0]
        fmt = _per_item_format(fname)
        full = os.path.join(directory, fname)
        if fmt is None or not os.path.isfile(full):
            continue
        match = _POINT_NAME.match(base)
        if match is None and not _format(fmt).embeds_manifest:  # nothing else names its row
            continue
        try:
            with _ArrayFile(full, fmt) as arrays:
                manifest = arrays.embedded_manifest()
                key_models = _models_from_keys(list(arrays)) if manifest is None else {}
        except Exception as exc:
            log.warning("%s could not be read (%s); ignored", full, exc)
            continue
        if manifest is not None and _is_point_manifest(manifest):
            idx = _per_item_point_index(manifest, base)
        elif manifest is None and key_models and not _is_combined_style(key_models):
            idx = int(match.group(1)) if match else None
        else:
            idx = None
        if idx is None:
            log.debug("%s is not a per-item point file; ignored", full)
            continue
        _claim(claimed_by, idx, fname)
        points.append(_Point(idx, base, full, fmt, manifest))
    points.sort(key=lambda p: p.index)
    return points


def _entries_from_keys(keys: Sequence[str]) -> list[dict[str, Any]]:
    entries = []
    for name, km in _models_from_keys(keys).items():
        entries.append(
            {
                "model": name,
                "status": "unknown",
                "embedding": {"npz_key": km.embedding} if km.embedding else None,
                "input": {"npz_key": km.input} if km.input else None,
            }
        )
    return entries


def _item_status(statuses: list[str]) -> str:
    """Model status over its per-item entries: no failed → ok, no ok → failed, else partial."""
    if statuses and all(s == "unknown" for s in statuses):
        return "unknown"
    n_ok = sum(1 for s in statuses if s == "ok")
    n_failed = sum(1 for s in statuses if s == "failed")
    if n_failed == 0:
        return "ok"
    if n_ok == 0:
        return "failed"
    return "partial"


def _overall_status(model_statuses: list[str]) -> str:
    """Export status over model statuses (contract §2.17.6; ``unknown`` when all unknown)."""
    if model_statuses and all(s == "unknown" for s in model_statuses):
        return "unknown"
    n_failed = sum(1 for s in model_statuses if s == "failed")
    n_partial = sum(1 for s in model_statuses if s == "partial")
    if n_failed == 0 and n_partial == 0:
        return "ok"
    return "partial" if n_failed < len(model_statuses) else "failed"


def _spatial_of(manifest: dict[str, Any] | None, arrays: _ArrayFile | None) -> dict[str, Any]:
    spatial = manifest.get("spatial") if manifest is not None else None
    if isinstance(spatial, dict):
        return spatial
    if arrays is not None and manifest is None:
        lon, lat = arrays.coords.get("lon"), arrays.coords.get("lat")
        if lon is not None and lat is not None and lon.size == 1 and lat.size == 1:
            return {"lon": float(lon.reshape(-1)[0]), "lat": float(lat.reshape(-1)[0])}
    return {}


def _assemble_per_item(points: list[_Point], *, n_items: int) -> _Loaded:
    """Stack the point files (sorted by index) into one per-item ExportResult."""
    spatials: list[dict[str, Any]] = [{} for _ in range(n_items)]
    names = ["" for _ in range(n_items)]
    embeddings: dict[str, list[np.ndarray | None]] = {}
    inputs: dict[str, list[np.ndarray | None]] = {}
    metas: dict[str, list[dict[str, Any]]] = {}
    statuses: dict[str, list[str]] = {}
    errors: dict[str, str | None] = {}

    for point in points:
        i = point.index
        names[i] = str((point.manifest or {}).get("name") or point.name)
        with _ArrayFile(point.arrays_path, point.fmt) as arrays:
            spatials[i] = _spatial_of(point.manifest, arrays)
            if point.manifest is None:
                entries = _entries_from_keys(list(arrays))
            else:
                entries = point.manifest.get("models") or []
            for entry in entries:
                if not isinstance(entry, dict) or not entry.get("model"):
                    continue
                name = str(entry["model"])
                key = sanitize_key(name)
                status = str(entry.get("status", "failed"))
                emb_key = _ref_key(entry.get("embedding")) or array_key(EMBEDDING, key)
                inp_key = _ref_key(entry.get("input")) or array_key(INPUT_CHW, key)
                if name not in embeddings:
                    embeddings[name] = [None] * n_items
                    inputs[name] = [None] * n_items
                    metas[name] = [{} for _ in range(n_items)]
                    statuses[name] = []
                    errors[name] = None
                if emb_key in arrays:
                    embeddings[name][i] = _as_float32(arrays[emb_key])
                if inp_key in arrays:
                    inputs[name][i] = _as_float32(arrays[inp_key])
                meta = entry.get("meta")
                metas[name][i] = meta if isinstance(meta, dict) else {}
                statuses[name].append(status)
                if status == "failed" and errors[name] is None:
                    errors[name] = entry.get("error") or None

    models: dict[str, ModelResult] = {}
    for name in embeddings:
        status = _item_status(statuses[name])
        error = errors[name]
        models[name] = ModelResult(
            name=name,
            status=status,
            embeddings=None if status == "failed" else _stack_rows(embeddings[name]),
            inputs=_stack_rows(inputs[name]),
            meta=metas[name],
            error=str(error) if status == "failed" and error is not None else None,
        )

    first = points[0].manifest if points else None
    temporal = (first or {}).get("temporal") or None
    own: list[dict[str, Any] | None] = [None] * n_items
    for point in points:
        t = (point.manifest or {}).get("temporal")
        own[point.index] = t if isinstance(t, dict) else None
    present = [own[p.index] for p in points]
    per_point = any(t != present[0] for t in present)
    result = ExportResult(
        layout="per_item",
        spatials=spatials,
        temporal=temporal if isinstance(temporal, dict) else None,
        n_items=n_items,
        status=_overall_status([m.status for m in models.values()]),
        models=models,
        manifest=first or {},
        temporals=own if per_point else None,
    )
    return result, names, {}


def _load_per_item(directory: str) -> _Loaded:
    try:
        points = _discover_points(directory)
    except _NoPairedFiles:
        points = _discover_points_without_manifest(directory)
        if not points:
            raise
        log.info("%s has no manifests; models inferred from array keys", directory)
    n_items = max(p.index for p in points) + 1
    return _assemble_per_item(points, n_items=n_items)


# --------------------------------------------------------------------------------------------
# xarray view
# --------------------------------------------------------------------------------------------


def _window_of_dict(t: dict[str, Any] | None) -> tuple[str, str]:
    """Half-open ``(start, end)`` ISO dates of a manifest temporal dict (None: default)."""
    from rs_embed_ray.specs import temporal_from_dict, window_of

    try:
        return window_of(temporal_from_dict(t))
    except (KeyError, TypeError, ValueError):
        return ("NaT", "NaT")


def _item_dims(ndim: int) -> tuple[str, ...]:
    if ndim <= 1:
        return ("item",)[:ndim]
    if ndim == 2:
        return ("item", "dim")
    if ndim == 4:
        return ("item", "dim", "y", "x")
    return ("item", "dim", *(f"d{k}" for k in range(2, ndim)))


def _convert_to_xarray(
    result: ExportResult, names: list[str] | None, file_coords: dict[str, np.ndarray]
) -> None:
    """Replace every model's embeddings by a labelled ``xarray.DataArray`` (in place)."""
    xr = _import_xarray()
    n = result.n_items
    lonlat = [
        _spatial_lonlat(result.spatials[i] if i < len(result.spatials) else {}) for i in range(n)
    ]
    lon = np.array([p[0] for p in lonlat], dtype=np.float64)
    lat = np.array([p[1] for p in lonlat], dtype=np.float64)
    for coord, values in (("lon", lon), ("lat", lat)):
        from_file = file_coords.get(coord)
        if from_file is not None and from_file.shape == (n,):
            missing = np.isnan(values)
            values[missing] = np.asarray(from_file, dtype=np.float64)[missing]
    if names is None and "name" in file_coords and file_coords["name"].shape == (n,):
        names = [str(v) for v in file_coords["name"].tolist()]
    coords: dict[str, Any] = {"item": np.arange(n), "lon": ("item", lon), "lat": ("item", lat)}
    if names is not None:
        coords["name"] = ("item", np.array(names, dtype=str))
    if result.temporals is not None and len(result.temporals) == n:
        windows = [_window_of_dict(t) for t in result.temporals]
        coords["window_start"] = ("item", np.array([w[0] for w in windows], dtype="datetime64[D]"))
        coords["window_end"] = ("item", np.array([w[1] for w in windows], dtype="datetime64[D]"))

    for model in result.models.values():
        emb = model.embeddings
        attrs = {"model": model.name, "status": model.status}
        if isinstance(emb, np.ndarray):
            if emb.ndim == 0 or emb.shape[0] != n:
                log.warning("%s: shape %s does not match %d items", model.name, emb.shape, n)
                model.embeddings = xr.DataArray(emb, name=model.name, attrs=attrs)
                continue
            model.embeddings = xr.DataArray(
                emb, dims=_item_dims(emb.ndim), coords=coords, name=model.name, attrs=attrs
            )
        elif isinstance(emb, list):
            items: list[Any] = []
            for i, a in enumerate(emb):
                if a is None:
                    items.append(None)
                    continue
                scalar = {"item": i, "lon": lon[i], "lat": lat[i]}
                if names is not None:
                    scalar["name"] = names[i]
                dims = _item_dims(a.ndim + 1)[1:]
                items.append(
                    xr.DataArray(a, dims=dims, coords=scalar, name=model.name, attrs=attrs)
                )
            model.embeddings = items


# --------------------------------------------------------------------------------------------
# Summaries (manifests only)
# --------------------------------------------------------------------------------------------


def _summary(
    path: str,
    layout: str,
    fmt: str,
    has_manifest: bool,
    n_items: int,
    status: str,
    stage: Any,
    models: dict[str, dict[str, Any]],
    missing: list[int],
    unverified: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "path": os.path.abspath(path),
        "layout": layout,
        "format": fmt,
        "has_manifest": has_manifest,
        "n_items": n_items,
        "status": status,
        "stage": stage,
        "models": models,
        "ok": sum(m["ok"] for m in models.values()),
        "failed": sum(m["failed"] for m in models.values()),
        "ok_models": [k for k, m in models.items() if m["status"] == "ok"],
        "partial_models": [k for k, m in models.items() if m["status"] == "partial"],
        "failed_models": [k for k, m in models.items() if m["status"] == "failed"],
        "missing_items": missing,
        "unverified_items": unverified or [],
    }


def _verify_arrays(path: str, fmt: str, keys: list[str]) -> str | None:
    """None when the array file's headers back the manifest (its format says what that
    takes: an npz holds ``keys`` as plain numeric arrays of the declared size, a netCDF /
    Parquet file starts as one); else why not. Headers only, never array data: ``inspect``
    stays cheap, and calls nothing ok that this cannot confirm."""
    return _format(fmt).header_problem(path, keys)


def _ok_keys(entries: list[Any]) -> list[str]:
    keys = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("status") == "ok":
            key = _ref_key(entry.get("embedding"))  # None: no embedding was saved
            if key is not None:
                keys.append(key)
    return keys


def _summarize_combined(path: str) -> dict[str, Any]:
    try:
        arrays_path, json_path, fmt = _resolve_combined_paths(path)
    except FileNotFoundError as exc:
        return _without_manifest(path, _summarize_file_without_manifest, exc)
    return _summarize_manifest(arrays_path, fmt, _load_json(json_path), path)


def _summarize_manifest(
    arrays_path: str, fmt: str, manifest: dict[str, Any], path: str
) -> dict[str, Any]:
    """Summary of a combined (or single point) manifest; no arrays are read."""
    if _is_point_manifest(manifest):
        base = os.path.splitext(os.path.basename(arrays_path))[0]
        return _summarize_points(path, [_Point(0, base, arrays_path, fmt, manifest)], 1, fmt)
    n = _combined_n_items(manifest, None)
    models: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("models") or []:
        if not isinstance(entry, dict):
            continue
        status = str(entry.get("status", "failed"))
        failed_idx = entry.get("failed_indices")
        if status == "failed":
            n_failed = n
        else:
            n_failed = len(failed_idx) if isinstance(failed_idx, list) else 0
        models[str(entry.get("model", ""))] = {
            "status": status,
            "ok": max(n - n_failed, 0),
            "failed": n_failed,
        }
    status = str(manifest.get("status", "ok"))
    unverified: list[dict[str, Any]] = []
    why = _verify_arrays(arrays_path, fmt, [])
    if why is not None:  # the manifest cannot be trusted for a file that does not open
        unverified.append({"index": None, "file": arrays_path, "why": why})
        status = "unverified"
        for m in models.values():
            m.update(status="unverified", ok=0, failed=n)
    return _summary(
        path, "combined", fmt, True, n, status, manifest.get("stage"), models, [], unverified
    )


def _summarize_points(path: str, points: list[_Point], n_items: int, fmt: str) -> dict[str, Any]:
    statuses: dict[str, list[str]] = {}
    unverified: list[dict[str, Any]] = []
    for point in points:
        if point.manifest is None:
            with _ArrayFile(point.arrays_path, point.fmt) as arrays:
                keys = list(arrays)
            why = _verify_arrays(point.arrays_path, point.fmt, keys)
            if why is not None:
                raise ValueError(f"{point.arrays_path!r} cannot be verified: {why}")
            entries = _entries_from_keys(keys)
        else:
            entries = point.manifest.get("models") or []
            if not isinstance(entries, list):
                entries = []
            why = _verify_arrays(point.arrays_path, point.fmt, _ok_keys(entries))
            if why is not None:
                unverified.append({"index": point.index, "file": point.arrays_path, "why": why})
        for entry in entries:
            if isinstance(entry, dict) and entry.get("model"):
                status = str(entry.get("status", "failed"))
                if unverified and unverified[-1]["index"] == point.index:
                    status = "failed"  # never counted ok when the file does not back it
                statuses.setdefault(str(entry["model"]), []).append(status)
    models = {
        name: {
            "status": _item_status(st),
            "ok": sum(1 for s in st if s in ("ok", "unknown")),
            "failed": sum(1 for s in st if s == "failed"),
        }
        for name, st in statuses.items()
    }
    present = {p.index for p in points}
    has_manifest = all(p.manifest is not None for p in points)
    return _summary(
        path,
        "per_item",
        fmt,
        has_manifest,
        n_items,
        _overall_status([m["status"] for m in models.values()]),
        None,
        models,
        [i for i in range(n_items) if i not in present],
        unverified,
    )


def _summarize_per_item(directory: str) -> dict[str, Any]:
    try:
        points = _discover_points(directory)
    except _NoPairedFiles:
        points = _discover_points_without_manifest(directory)
        if not points:
            raise
    fmts = {p.fmt for p in points}
    fmt = fmts.pop() if len(fmts) == 1 else "mixed"
    return _summarize_points(directory, points, max(p.index for p in points) + 1, fmt)


def _summarize_file_without_manifest(path: str, fmt: str) -> dict[str, Any] | None:
    try:
        arrays = _ArrayFile(path, fmt)
    except Exception as exc:
        log.debug("%s: not readable as %s (%s)", path, fmt, exc)
        return None
    with arrays:
        embedded = arrays.embedded_manifest()
        if embedded is not None:
            return _summarize_manifest(path, fmt, embedded, path)
        why = _verify_arrays(path, fmt, list(arrays))
        if why is not None:  # no manifest to go by, and arrays that are not what they say
            raise ValueError(f"{path!r} cannot be verified: {why}")
        key_models = _models_from_keys(list(arrays))
        if not key_models:
            return None
        if not _is_combined_style(key_models):
            base = os.path.splitext(os.path.basename(path))[0]
            point = _Point(0, base, path, fmt, None)
            arrays.close()
            return _summarize_points(path, [point], 1, fmt)
        n = _n_items_from_keys(arrays)
        models: dict[str, dict[str, Any]] = {}
        for name, km in key_models.items():
            if km.dense_embeddings:
                shape = arrays.shape(km.dense_embeddings)
                n_ok = int(shape[0]) if shape else 0
            else:
                n_ok = len(km.embedding_points or {})
            if km.dense_embeddings or km.embedding_points:
                models[name] = {"status": "unknown", "ok": n_ok, "failed": 0}
    return _summary(path, "combined", fmt, False, n, "unknown", None, models, [])
