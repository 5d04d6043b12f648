"""A local Earth Engine REST emulator, so the real earthengine-api client can be tested offline.

The emulator answers what ``ee.Initialize`` needs (the discovery document and the algorithm
list that ship with the earthengine-api wheel), ``image:computePixels`` (NPY and GEO_TIFF),
``assets/*:getPixels`` and ``value:compute``. It does not evaluate images: it reads the band
names from the request (``bandIds`` or the ``Image.select``/``rename`` calls in the expression)
and the pixel grid, and returns deterministic pixels that encode each pixel's position on the
EPSG:3857 lattice and the band it came from, so tests can check geometry, orientation, band
order and stitching exactly. A band that is a per-pixel image count (``reduce.count`` of a
collection) answers the collection's size instead (see ``EEEmulator``).

Pixel encoding (see :func:`encode_pixels`). For a request grid with pixel size ``s`` the pixel
whose centre is ``(x, y)`` has lattice indices ``col = floor(x / s)`` and ``row = floor(-y / s)``
(rows grow southwards, as in ``rs_embed_ray.geo.Grid``). Its value in band ``name`` is::

    value = ((row % 4096) * 4096 + (col % 4096) + band_code(name) * BAND_STEP) % 2**24

an integer below 2**24, hence exact in float32. :func:`decode_position` inverts it for a known
band; a wrong band shows up as a far-off position.

It also injects latency, jitter and HTTP 429/500 errors, enforces a concurrency limit and a
token-bucket QPS limit by answering 429 like the real service, rejects requests over the
published per-request limits with the real 400 message, and can make regions or collections
"empty" (no images) for error tests.

Library use::

    with EEEmulator(latency_ms=20) as emu:
        ee.Initialize(credentials=..., project="p", opt_url=emu.url)

CLI: ``python -m rs_embed_ray.testing.ee_emulator --port 0`` prints
``listening on http://HOST:PORT`` and serves until killed. Only loopback hosts are accepted.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import logging
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 50331648  # 48 MiB, the published computePixels/getPixels limit
MAX_SIDE = 32768
MAX_BANDS = 1024
POS_MOD = 4096
CODE_MOD = 1 << 24
BAND_STEP = 0x9E3779  # odd, so band offsets differ modulo 2**24 for every band pair
DEFAULT_PUBLIC_PROJECT = "earthengine-public"
# GET here answers {"peak_in_flight": N, "request_log": [...]}: how a test or benchmark in
# another process reads what the CLI-started emulator saw
STATS_PATH = "/_emulator/stats"

# band name -> code; GSE A00..A63 are 0..63, the rest follow (unknown names use crc32)
_KNOWN_BANDS = [
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
    "QA10", "QA20", "QA60", "SCL",
    "VV", "VH", "HH", "HV", "angle",
    "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7",
    "sur_refl_b01", "sur_refl_b02", "sur_refl_b03", "sur_refl_b04", "sur_refl_b05",
    "sur_refl_b06", "sur_refl_b07", "LST_1KM",
]  # fmt: skip
_BAND_CODES = {name: 64 + i for i, name in enumerate(_KNOWN_BANDS)}
_GSE_BAND = re.compile(r"^A(\d\d)$")


def band_code(name: str) -> int:
    """The integer a band contributes to the pixel encoding (stable across runs)."""
    m = _GSE_BAND.match(name)
    if m:
        return int(m.group(1))
    if name in _BAND_CODES:
        return _BAND_CODES[name]
    return 1000 + zlib.crc32(name.encode()) % 100000


def lattice_indices(
    affine: Iterable[float], width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 arrays of shape (H, W): the EPSG:3857 lattice cell of each pixel centre.

    ``affine`` is Earth Engine's (scaleX, shearX, translateX, shearY, scaleY, translateY).
    """
    sx, shx, tx, shy, sy, ty = (float(v) for v in affine)
    s = abs(sx) if sx else math.hypot(shx, sy)
    c = np.arange(width, dtype=np.float64) + 0.5
    r = np.arange(height, dtype=np.float64) + 0.5
    cc, rr = np.meshgrid(c, r)
    x = tx + cc * sx + rr * shx
    y = ty + cc * shy + rr * sy
    return np.floor(-y / s).astype(np.int64), np.floor(x / s).astype(np.int64)


def encode_pixels(affine: Iterable[float], width: int, height: int, band: str) -> np.ndarray:
    """The float64 (H, W) values the emulator returns for ``band`` on this grid."""
    rows, cols = lattice_indices(affine, width, height)
    v = (
        np.mod(rows, POS_MOD) * POS_MOD + np.mod(cols, POS_MOD) + band_code(band) * BAND_STEP
    ) % CODE_MOD
    return v.astype(np.float64)


def expected_pixels(affine: Iterable[float], width: int, height: int, bands: Iterable[str]):
    """(C, H, W) float64: what a correct client should get for these bands on this grid."""
    aff = tuple(affine)
    return np.stack([encode_pixels(aff, width, height, b) for b in bands])


def decode_position(values: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray]:
    """(row % 4096, col % 4096) for pixels known to come from ``band``."""
    v = np.asarray(values, dtype=np.float64).astype(np.int64)
    pos = np.mod(v - band_code(band) * BAND_STEP, CODE_MOD)
    return pos // POS_MOD, pos % POS_MOD


# ------------------------------------------------------------------------------------------
# fixtures from the earthengine-api wheel

_FIXTURES: dict[str, bytes] = {}
_FIXTURE_LOCK = threading.Lock()


def _fixture(name: str) -> bytes:
    with _FIXTURE_LOCK:
        if name not in _FIXTURES:
            raw = resources.files("ee").joinpath("tests", name).read_text(encoding="utf-8")
            if name == "cloud_api_discovery_document.json":
                doc = json.loads(raw)
                doc["version"] = "v1"
                doc["id"] = "earthengine:v1"
                raw = json.dumps(doc).replace("v1alpha/", "v1/")
            _FIXTURES[name] = raw.encode("utf-8")
        return _FIXTURES[name]


# ------------------------------------------------------------------------------------------
# expression reading (no evaluation, only what the emulator needs)


def _resolve(expr: dict, node: Any, depth: int = 0) -> Any:
    """Inline value references so a sub-expression can be inspected on its own."""
    if depth > 200:
        return node
    if isinstance(node, dict):
        if set(node) == {"valueReference"}:
            return _resolve(expr, expr.get("values", {}).get(node["valueReference"]), depth + 1)
        return {k: _resolve(expr, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(expr, v, depth + 1) for v in node]
    return node


def _const(node: Any) -> Any:
    if isinstance(node, dict):
        if "constantValue" in node:
            return node["constantValue"]
        if "arrayValue" in node:
            return [_const(v) for v in node["arrayValue"].get("values", [])]
    return None


def _walk(node: Any) -> Iterable[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _invocations(node: Any) -> Iterable[tuple[str, dict]]:
    for d in _walk(node):
        fiv = d.get("functionInvocationValue")
        if isinstance(fiv, dict):
            yield str(fiv.get("functionName", "")), fiv.get("arguments", {}) or {}


def _numbers(node: Any) -> list[float]:
    """Every number under ``node``, in document order (coordinate pairs stay pairs)."""
    out: list[float] = []
    if isinstance(node, bool):
        return out
    if isinstance(node, (int, float)):
        out.append(float(node))
    elif isinstance(node, dict):
        for v in node.values():
            out.extend(_numbers(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_numbers(v))
    return out


def _lonlat_to_3857(lon: float, lat: float) -> tuple[float, float]:
    lat = max(-85.05112878, min(85.05112878, lat))
    return (
        6378137.0 * math.radians(lon),
        6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)),
    )


def _geometry_bounds(resolved: Any) -> list[tuple[float, float, float, float]]:
    """3857 bounds of every geometry constructor in a resolved expression."""
    out = []
    for name, args in _invocations(resolved):
        if not name.startswith("GeometryConstructors.") or "coordinates" not in args:
            continue
        nums = _numbers(args["coordinates"])
        if len(nums) < 2:
            continue
        xs, ys = nums[0::2], nums[1::2]
        crs = json.dumps(args.get("crs", ""))
        if "3857" not in crs:
            pts = [_lonlat_to_3857(x, y) for x, y in zip(xs, ys, strict=False)]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        out.append((min(xs), min(ys), max(xs), max(ys)))
    return out


def _collection_ids(resolved: Any) -> list[str]:
    ids = []
    for name, args in _invocations(resolved):
        if name in ("ImageCollection.load", "Image.load") and "id" in args:
            v = _const(args["id"])
            if isinstance(v, str):
                ids.append(v)
    return ids


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(a: tuple[float, ...], b: tuple[float, ...], tol: float = 1e-3) -> bool:
    """Box ``a`` lies within box ``b`` (metres, with a millimetre of slack)."""
    return a[0] >= b[0] - tol and a[1] >= b[1] - tol and a[2] <= b[2] + tol and a[3] <= b[3] + tol


class _ImageInfo:
    """What the emulator knows about an image expression: output and source band names."""

    def __init__(self) -> None:
        self.bands: list[tuple[str, str]] | None = None  # (output name, source name)
        self.dtype: str | None = None  # first cast seen from the top
        self.unmask: float | None = None
        self.sources: list[Any] = []  # resolved sub-expressions that load data
        # bands that are not collection data, by output name: ("count", resolved collection)
        # for a per-pixel image count, ("constant", value) for an ``Image.constant`` band
        self.derived: dict[str, tuple[str, Any]] = {}
        # a per-pixel count of this resolved collection whose band names are not known yet
        self.count_of: Any = None


def _image_info(
    expr: dict,
    node: Any,
    info: _ImageInfo | None = None,
    depth: int = 0,
    evaluate: Callable[[Any], Any] | None = None,
) -> _ImageInfo:
    """Follow an image expression from the top to find its bands, cast and fill value.

    ``evaluate`` answers a value node (an ``If`` condition); without it, or when it cannot
    tell (None), ``If`` takes its true case.
    """
    info = info or _ImageInfo()
    if depth > 100 or not isinstance(node, dict):
        return info
    if "valueReference" in node:
        return _image_info(expr, expr["values"][node["valueReference"]], info, depth + 1, evaluate)
    fiv = node.get("functionInvocationValue")
    if not isinstance(fiv, dict):
        return info
    fn = fiv.get("functionName", "")
    args = fiv.get("arguments", {}) or {}

    def sub(arg: str) -> _ImageInfo:
        return _image_info(expr, args.get(arg), _ImageInfo(), depth + 1, evaluate)

    if fn == "Image.select":
        inner = sub("input")
        selectors = [str(s) for s in (_const(args.get("bandSelectors")) or [])]
        names = _const(args.get("newNames"))
        if inner.bands is None:
            picked = [(s, s) for s in selectors]
        else:
            picked = []
            for s in selectors:
                for out_name, src in inner.bands:
                    if out_name == s or re.fullmatch(s, out_name):
                        picked.append((out_name, src))
        derived = [_derived(inner, old) for old, _ in picked]
        if names:
            picked = [(str(n), src) for n, (_, src) in zip(names, picked, strict=False)]
        info.bands = picked
        info.derived = {
            out: d for (out, _), d in zip(picked, derived, strict=False) if d is not None
        }
        _merge(info, inner)
    elif fn == "Image.rename":
        inner = sub("input")
        names = [str(n) for n in (_const(args.get("names")) or [])]
        srcs = [src for _, src in inner.bands] if inner.bands is not None else names
        olds = [o for o, _ in inner.bands] if inner.bands is not None else names
        info.bands = list(zip(names, srcs, strict=False))
        info.derived = {
            n: d
            for n, old in zip(names, olds, strict=False)
            if (d := _derived(inner, old)) is not None
        }
        _merge(info, inner)
    elif fn in ("Image.addBands", "Image.cat"):
        first = sub("dstImg" if "dstImg" in args else "image1")
        second = sub("srcImg" if "srcImg" in args else "image2")
        if first.bands is not None and second.bands is not None:
            if _const(args.get("overwrite")) is True:  # same-named bands are replaced
                theirs = {n for n, _ in second.bands}
                info.bands = [b for b in first.bands if b[0] not in theirs] + second.bands
                info.derived = {k: v for k, v in first.derived.items() if k not in theirs}
            else:
                info.bands = first.bands + second.bands
                info.derived = dict(first.derived)
            info.derived.update(second.derived)
        _merge(info, first)
        _merge(info, second)
    elif fn == "If":
        cond = evaluate(args.get("condition")) if evaluate is not None else None
        inner = sub("falseCase" if cond is not None and not _truthy(cond) else "trueCase")
        info.bands, info.derived, info.count_of = inner.bands, inner.derived, inner.count_of
        _merge(info, inner)
    elif fn == "Image.constant":
        v = _const(args.get("value"))
        values = v if isinstance(v, list) else [v]
        if values and all(isinstance(x, (int, float)) for x in values):
            names = (
                ["constant"] if len(values) == 1 else [f"constant_{i}" for i in range(len(values))]
            )
            info.bands = [(n, n) for n in names]
            info.derived = {n: ("constant", float(x)) for n, x in zip(names, values, strict=True)}
        return info
    elif fn == "reduce.count":
        # a per-pixel image count of a collection: answered from the collection's size
        info.count_of = _resolve(expr, args.get("collection"))
        return info
    else:
        if fn in ("Image.toFloat", "Image.toDouble") and info.dtype is None:
            info.dtype = "<f4" if fn == "Image.toFloat" else "<f8"
        if fn == "Image.unmask" and info.unmask is None:
            v = args.get("value")
            while isinstance(v, dict) and "functionInvocationValue" in v:  # Image.constant(x)
                v = (v["functionInvocationValue"].get("arguments") or {}).get("value")
            c = _const(v)
            info.unmask = float(c) if isinstance(c, (int, float)) else 0.0
        if fn in ("ImageCollection.load", "Image.load"):
            info.sources.append(_resolve(expr, node))
            return info
        if fn.startswith(("ImageCollection.", "reduce.")) or fn == "Collection.filter":
            # a reduction of a collection: its bands are whatever was selected above
            info.sources.append(_resolve(expr, node))
            return info
        for key in ("input", "image", "value", "collection"):
            if key in args:
                inner = _image_info(expr, args[key], _ImageInfo(), depth + 1, evaluate)
                if inner.bands is not None:
                    info.bands = inner.bands
                info.derived, info.count_of = dict(inner.derived), inner.count_of
                _merge(info, inner)
                break
    return info


def _derived(inner: _ImageInfo, band: str) -> tuple[str, Any] | None:
    """What ``inner``'s band ``band`` is if it is not collection data (see ``_ImageInfo``)."""
    if band in inner.derived:
        return inner.derived[band]
    if inner.bands is None and inner.count_of is not None:
        return ("count", inner.count_of)
    return None


def _truthy(value: Any) -> bool:
    """Earth Engine's ``If`` rules: 0, NaN, "", [], {} and null are false."""
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def _merge(info: _ImageInfo, inner: _ImageInfo) -> None:
    if info.dtype is None:
        info.dtype = inner.dtype
    if info.unmask is None:
        info.unmask = inner.unmask
    info.sources.extend(inner.sources)


# ------------------------------------------------------------------------------------------
# minimal GeoTIFF writer (uncompressed, pixel-interleaved, one strip)


def _geotiff(arr: np.ndarray, affine: tuple[float, ...], epsg: int) -> bytes:
    """(C, H, W) float array -> a GeoTIFF that GDAL/rasterio/tifffile can read."""
    c, h, w = arr.shape
    dt = np.dtype(arr.dtype).newbyteorder("<")
    bits = dt.itemsize * 8
    data = np.ascontiguousarray(np.moveaxis(arr.astype(dt), 0, -1)).tobytes()
    sx, _, tx, _, sy, ty = affine
    entries: list[tuple[int, int, list]] = []  # tag, type, values
    SHORT, LONG, DOUBLE = 3, 4, 12
    entries.append((256, LONG, [w]))
    entries.append((257, LONG, [h]))
    entries.append((258, SHORT, [bits] * c))
    entries.append((259, SHORT, [1]))
    entries.append((262, SHORT, [1]))
    entries.append((273, LONG, [0]))  # strip offset, patched below
    entries.append((277, SHORT, [c]))
    entries.append((278, LONG, [h]))
    entries.append((279, LONG, [len(data)]))
    entries.append((284, SHORT, [1]))
    if c > 1:
        entries.append((338, SHORT, [0] * (c - 1)))
    entries.append((339, SHORT, [3] * c))
    entries.append((33550, DOUBLE, [abs(sx), abs(sy), 0.0]))
    entries.append((33922, DOUBLE, [0.0, 0.0, 0.0, tx, ty, 0.0]))
    geokeys = [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg]
    entries.append((34735, SHORT, geokeys))
    entries.sort()
    fmt = {SHORT: "H", LONG: "I", DOUBLE: "d"}
    ifd_size = 2 + 12 * len(entries) + 4
    extra = io.BytesIO()
    extra_base = 8 + ifd_size
    strip_offset_pos = None
    packed_entries = []
    for tag, typ, vals in entries:
        payload = struct.pack("<" + fmt[typ] * len(vals), *vals)
        if len(payload) <= 4:
            field = payload.ljust(4, b"\0")
            if tag == 273:
                strip_offset_pos = len(packed_entries)
        else:
            if extra.tell() % 2:
                extra.write(b"\0")
            field = struct.pack("<I", extra_base + extra.tell())
            extra.write(payload)
        packed_entries.append([tag, typ, len(vals), field])
    extra_bytes = extra.getvalue()
    if len(extra_bytes) % 2:
        extra_bytes += b"\0"
    strip_at = extra_base + len(extra_bytes)
    assert strip_offset_pos is not None
    packed_entries[strip_offset_pos][3] = struct.pack("<I", strip_at)
    out = io.BytesIO()
    out.write(b"II*\0" + struct.pack("<I", 8))
    out.write(struct.pack("<H", len(entries)))
    for tag, typ, count, field in packed_entries:
        out.write(struct.pack("<HHI", tag, typ, count) + field)
    out.write(struct.pack("<I", 0))
    out.write(extra_bytes)
    out.write(data)
    return out.getvalue()


# ------------------------------------------------------------------------------------------
# the server


class _HTTPError(Exception):
    def __init__(self, code: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def check_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` names a loopback address (the emulator has no auth)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from None
    addrs = {info[4][0] for info in infos}
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise ValueError(
            f"refusing to serve on {host!r}: the Earth Engine emulator only binds loopback "
            "addresses (127.0.0.1, ::1, localhost)"
        )


class EEEmulator:
    """A loopback HTTP server speaking enough Earth Engine REST for the real client.

    Knobs (all may be changed while running):

    * ``latency_ms``/``jitter_ms``: each compute request waits latency + U(0, jitter).
    * ``error_rate``: that fraction of API requests is answered with one of ``error_codes``
      (default 429 with ``Retry-After: retry_after_s``, or 500, evenly).
    * ``max_concurrent``/``qps``: 429 when more requests are in flight, or when a token
      bucket of ``qps`` tokens/s (burst ``qps``) is empty, like the real per-project quota.
    * ``auth_token``: if set, the bearer token every API call must carry (else 401).
    * ``projects``: if set, the projects that may call (else 403).
    * ``empty_collections`` / ``empty_regions`` (EPSG:3857 boxes where no image exists): a
      collection is empty if its id is listed or its ``filterBounds`` region lies inside an
      empty region; then ``size()`` answers 0 and every pixel is the unmask value. Otherwise
      pixels whose centre falls in an empty region that the request's region touches come
      back as the unmask value (so one request over several places leaves only the places
      inside the region empty). ``size_hook(resolved_expression) -> int | None`` overrides
      any size; ``default_count`` is the size of every other collection.
    * Per-pixel image counts (``collection.count()`` bands, found through ``select``/
      ``rename``/``addBands``): each pixel is the counted collection's size as above
      (``size_hook`` included), 0 in empty regions; nodata/NaN regions do not touch them.
      ``Image.constant`` bands are their constant; ``ee.Algorithms.If`` takes the branch its
      condition (a size, or anything ``value:compute`` answers) selects.
    * ``nodata_regions``: masked pixels (the expression's ``unmask`` value, else 0);
      ``nan_regions``: NaN pixels.
    * ``pixel_fn(lon, lat, bands, height, width) -> (bands, height, width)``: when set, the
      image bands' values instead of the position encoding, from the grid centre's lon/lat
      (the side-by-side benchmark serves the reference's ``fake_pixels`` this way, so both
      tools compress and embed the same values).
    * ``pixels_gate(k)``: called before the ``k``-th pixel request (0-based, counted since
      start) is served, in that request's thread; it may block, to hold a request until
      the client has shown some behaviour (``testing.faults.hold_from``: tests of streaming
      hold the later places' pixels until a first file exists, so the outcome does not
      depend on the machine's load).

    ``request_log`` holds one dict per request (time, end, path, method, kind, bands, grid,
    status, project, bytes; with ``record_bodies`` also ``body``, the request body exactly as
    it arrived, decoded as UTF-8); for pixel requests ``bands`` lists the image bands and
    ``count_bands`` the per-pixel count bands; ``peak_in_flight`` the most requests handled
    at once; a process that started the emulator with the CLI reads both with ``GET
    /_emulator/stats`` (``fetch_stats(url)``).
    """

    def __init__(
        self,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        error_rate: float = 0.0,
        max_concurrent: int | None = None,
        qps: float | None = None,
        seed: int = 0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after_s: float = 1.0,
        auth_token: str | None = None,
        projects: Iterable[str] | None = None,
        default_count: int = 7,
        error_codes: Iterable[int] = (429, 500),
    ) -> None:
        check_loopback(host)
        self.host = host
        self.port = port
        self.latency_ms = float(latency_ms)
        self.jitter_ms = float(jitter_ms)
        self.error_rate = float(error_rate)
        self.max_concurrent = max_concurrent
        self.qps = qps
        self.retry_after_s = retry_after_s
        self.auth_token = auth_token
        self.projects = set(projects) if projects is not None else None
        self.default_count = int(default_count)
        self.error_codes = tuple(error_codes)
        self.empty_collections: set[str] = set()
        self.empty_regions: list[tuple[float, float, float, float]] = []
        self.nodata_regions: list[tuple[float, float, float, float]] = []
        self.nan_regions: list[tuple[float, float, float, float]] = []
        self.size_hook: Callable[[Any], int | None] | None = None
        self.pixel_fn: Callable[..., np.ndarray] | None = None
        self.pixels_gate: Callable[[int], None] | None = None
        self._pixel_requests = 0
        self.request_log: list[dict[str, Any]] = []
        self.record_bodies = False
        self.peak_in_flight = 0
        self.in_flight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._tokens = float(qps) if qps else 0.0
        self._token_time = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator not started")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._server.server_address[1]}"

    def start(self) -> str:
        """Bind and serve in a daemon thread; return the base URL for ``ee.Initialize``."""
        if self._server is not None:
            return self.url
        self._server = _make_server(self.host, self.port, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits for one poll; keep tests fast
            name="ee-emulator",
            daemon=True,
        )
        self._thread.start()
        log.debug("EE emulator listening on %s", self.url)
        return self.url

    def serve_forever(self) -> None:
        """Bind and serve in the calling thread (the CLI)."""
        if self._server is None:
            self._server = _make_server(self.host, self.port, self)
        self._server.serve_forever()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> EEEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        """Clear the request log and the in-flight peak (between test phases)."""
        with self._lock:
            self.request_log.clear()
            self.peak_in_flight = self.in_flight

    def _stats(self) -> bytes:
        with self._lock:
            doc = {"peak_in_flight": self.peak_in_flight, "request_log": list(self.request_log)}
        return json.dumps(doc).encode()

    def requests_of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.request_log if r["kind"] == kind]

    # -- request handling -------------------------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _admit(self) -> None:
        """Concurrency and QPS checks, then injected errors (429/500)."""
        with self._lock:
            if self.max_concurrent is not None and self.in_flight > self.max_concurrent:
                raise _HTTPError(
                    429,
                    "Too many concurrent requests: the project exceeded its limit of "
                    f"{self.max_concurrent} concurrent requests.",
                    retry_after=self.retry_after_s,
                )
            if self.qps:
                now = time.monotonic()
                cap = float(self.qps)
                self._tokens = min(cap, self._tokens + (now - self._token_time) * cap)
                self._token_time = now
                if self._tokens < 1.0:
                    raise _HTTPError(
                        429,
                        "Quota exceeded: too many requests per second "
                        f"(limit {self.qps} requests/s).",
                        retry_after=max(self.retry_after_s, (1.0 - self._tokens) / cap),
                    )
                self._tokens -= 1.0
            roll = self._rng.random()
            pick = self._rng.random()
        if roll < self.error_rate and self.error_codes:
            code = self.error_codes[
                min(len(self.error_codes) - 1, int(pick * len(self.error_codes)))
            ]
            if code == 429:
                raise _HTTPError(
                    429,
                    "Too Many Requests: request rate or concurrency limit exceeded (injected).",
                    retry_after=self.retry_after_s,
                )
            raise _HTTPError(code, "An internal error has occurred (injected).")

    def _gate_pixels(self) -> None:
        with self._lock:
            k = self._pixel_requests
            self._pixel_requests += 1
            gate = self.pixels_gate
        if gate is not None:
            gate(k)

    def _delay(self) -> None:
        if self.latency_ms <= 0 and self.jitter_ms <= 0:
            return
        with self._lock:
            jitter = self._rng.uniform(0.0, self.jitter_ms) if self.jitter_ms > 0 else 0.0
        time.sleep(max(0.0, self.latency_ms + jitter) / 1000.0)

    def _check_auth(self, headers: Any, project: str | None) -> None:
        if self.auth_token is not None:
            got = headers.get("Authorization", "")
            if got != f"Bearer {self.auth_token}":
                raise _HTTPError(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                )
        if self.projects is not None and project is not None:
            if project not in self.projects and project != DEFAULT_PUBLIC_PROJECT:
                raise _HTTPError(
                    403,
                    f"Earth Engine API has not been used in project {project} before or it is "
                    "disabled, or the caller does not have permission to use project "
                    f"{project}.",
                )

    def _is_empty(self, resolved: Any) -> bool:
        """No images at all: an empty collection, or a region lying inside an empty region."""
        if any(cid in self.empty_collections for cid in _collection_ids(resolved)):
            return True
        if self.empty_regions:
            for b in _geometry_bounds(resolved):
                if any(_inside(b, e) for e in self.empty_regions):
                    return True
        return False

    def _empty_pixels(self, sources: list[Any], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Pixels (by centre) inside an empty region that the sources' geometries touch."""
        out = np.zeros(xx.shape, dtype=bool)
        if not self.empty_regions:
            return out
        bounds = [b for src in sources for b in _geometry_bounds(src)]
        for e in self.empty_regions:
            if any(_intersects(b, e) for b in bounds):
                out |= (xx >= e[0]) & (xx < e[2]) & (yy >= e[1]) & (yy < e[3])
        return out

    def _count(self, resolved: Any) -> int:
        if self.size_hook is not None:
            v = self.size_hook(resolved)
            if v is not None:
                return int(v)
        return 0 if self._is_empty(resolved) else self.default_count

    def _evaluate(self, expr: dict, node: Any, depth: int = 0) -> Any:
        """Evaluate the tiny subset of values a provider asks for (sizes, lists, dicts)."""
        if depth > 100 or not isinstance(node, dict):
            return None
        if "constantValue" in node:
            return node["constantValue"]
        if "valueReference" in node:
            return self._evaluate(expr, expr["values"][node["valueReference"]], depth + 1)
        if "arrayValue" in node:
            return [self._evaluate(expr, v, depth + 1) for v in node["arrayValue"]["values"]]
        if "dictionaryValue" in node:
            return {
                k: self._evaluate(expr, v, depth + 1)
                for k, v in node["dictionaryValue"]["values"].items()
            }
        fiv = node.get("functionInvocationValue")
        if not isinstance(fiv, dict):
            return None
        fn = fiv.get("functionName", "")
        args = fiv.get("arguments", {}) or {}
        if fn in ("Collection.size", "Collection.count"):
            return self._count(_resolve(expr, args.get("collection")))
        if fn == "List.size":
            v = self._evaluate(expr, args.get("list"), depth + 1)
            return len(v) if isinstance(v, list) else 0
        if fn in ("Dictionary", "Dictionary.fromLists"):
            if "input" in args:
                return self._evaluate(expr, args["input"], depth + 1)
            keys = self._evaluate(expr, args.get("keys"), depth + 1) or []
            vals = self._evaluate(expr, args.get("values"), depth + 1) or []
            return dict(zip(keys, vals, strict=False))
        if fn == "Image.bandNames":
            info = _image_info(
                expr, args.get("image"), evaluate=lambda n: self._evaluate(expr, n, depth + 1)
            )
            return [name for name, _ in info.bands or []]
        return None

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict, bytes]:
        """Route one request; returns (status, headers, body)."""
        parts = urlsplit(path)
        route = unquote(parts.path)
        if route == STATS_PATH and method == "GET":
            # not an Earth Engine call: never logged, delayed, limited or counted in flight
            return 200, {"Content-Type": "application/json; charset=UTF-8"}, self._stats()
        entry: dict[str, Any] = {
            "time": time.time(),
            "path": route,
            "method": method,
            "kind": "other",
            "bands": None,
            "grid": None,
            "status": 200,
            "project": None,
        }
        if self.record_bodies:
            entry["body"] = body.decode("utf-8", "replace")
        self._enter()
        try:
            status, hdrs, payload = self._route(method, route, headers, body, entry)
        except _HTTPError as exc:
            status = exc.code
            err = {
                "error": {
                    "code": exc.code,
                    "message": exc.message,
                    "status": _STATUS_NAMES.get(exc.code, "UNKNOWN"),
                }
            }
            hdrs = {"Content-Type": "application/json; charset=UTF-8"}
            if exc.retry_after is not None:
                hdrs["Retry-After"] = str(max(0, math.ceil(exc.retry_after)))
            payload = json.dumps(err).encode()
        except Exception as exc:  # an emulator bug must reach the client as a 500, not hang
            log.exception("EE emulator failed on %s %s", method, route)
            status = 500
            hdrs = {"Content-Type": "application/json; charset=UTF-8"}
            payload = json.dumps(
                {"error": {"code": 500, "message": f"emulator error: {exc}", "status": "INTERNAL"}}
            ).encode()
        finally:
            # leave before the reply is written: a client that has its answer may start the
            # next request at once, and must never find this one still counted
            self._leave()
        entry["status"] = status
        entry["end"] = time.time()
        entry["bytes"] = len(payload)
        with self._lock:
            self.request_log.append(entry)
        return status, hdrs, payload

    def _route(
        self, method: str, route: str, headers: Any, body: bytes, entry: dict
    ) -> tuple[int, dict, bytes]:
        js = {"Content-Type": "application/json; charset=UTF-8"}
        if route.endswith("/$discovery/rest"):
            entry["kind"] = "discovery"
            return 200, js, _fixture("cloud_api_discovery_document.json")
        m = re.fullmatch(r"/v1(?:alpha|beta)?/projects/([^/]+)/(.+)", route)
        if not m:
            raise _HTTPError(404, f"Not found: {route}")
        project, rest = m.group(1), m.group(2)
        entry["project"] = project
        self._check_auth(headers, project)
        if rest == "algorithms" and method == "GET":
            entry["kind"] = "algorithms"
            self._admit()
            return 200, js, _fixture("algorithms.json")
        if method != "POST":
            raise _HTTPError(404, f"Not found: {method} {route}")
        try:
            req = json.loads(body.decode("utf-8") or "{}")
        except ValueError:
            raise _HTTPError(400, "Invalid JSON payload received.") from None
        if rest == "value:compute":
            entry["kind"] = "value"
            self._admit()
            self._delay()
            expr = req.get("expression") or {}
            result = self._evaluate(expr, {"valueReference": expr.get("result")})
            return 200, js, json.dumps({"result": result}).encode()
        if rest == "image:computePixels":
            entry["kind"] = "computePixels"
            self._admit()
            self._gate_pixels()
            self._delay()
            return self._pixels(req, req.get("expression") or {}, entry)
        if rest.startswith("assets/") and rest.endswith(":getPixels"):
            entry["kind"] = "getPixels"
            self._admit()
            self._gate_pixels()
            self._delay()
            asset = rest[len("assets/") : -len(":getPixels")]
            expr = {
                "result": "0",
                "values": {
                    "0": {
                        "functionInvocationValue": {
                            "functionName": "Image.load",
                            "arguments": {"id": {"constantValue": asset}},
                        }
                    }
                },
            }
            return self._pixels(req, expr, entry, default_dtype="<f4")
        raise _HTTPError(404, f"Not found: {method} {route}")

    def _pixels(
        self, req: dict, expr: dict, entry: dict, default_dtype: str = "<f8"
    ) -> tuple[int, dict, bytes]:
        top = _resolve(expr, {"valueReference": expr.get("result")}) if expr else None
        info = (
            _image_info(expr, top, evaluate=lambda n: self._evaluate(expr, n))
            if expr
            else _ImageInfo()
        )
        band_ids = req.get("bandIds")
        if band_ids:
            known = dict(info.bands or [])
            bands = [(str(b), known.get(str(b), str(b))) for b in band_ids]
        elif info.bands:
            bands = list(info.bands)
        else:
            raise _HTTPError(
                400,
                "Emulator: cannot tell the band names; select bands in the expression or "
                "pass bandIds.",
            )
        derived = {b: info.derived[b] for b, _ in bands if b in info.derived}
        counts = {b: d[1] for b, d in derived.items() if d[0] == "count"}
        entry["bands"] = [b for b, _ in bands if b not in counts]
        entry["count_bands"] = [b for b, _ in bands if b in counts]
        grid = req.get("grid") or {}
        dims = grid.get("dimensions") or {}
        aff = grid.get("affineTransform") or {}
        crs = grid.get("crsCode", "")
        width, height = int(dims.get("width", 0)), int(dims.get("height", 0))
        affine = tuple(
            float(aff.get(k, 0.0))
            for k in ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY")
        )
        entry["grid"] = {"width": width, "height": height, "affine": list(affine), "crs": crs}
        if width <= 0 or height <= 0:
            raise _HTTPError(400, "Emulator: grid.dimensions width and height are required.")
        if crs != "EPSG:3857":
            raise _HTTPError(400, f"Emulator: only EPSG:3857 grids are supported, got {crs!r}.")
        if affine[0] == 0 or affine[4] == 0:
            raise _HTTPError(400, "Emulator: grid.affineTransform needs scaleX and scaleY.")
        dtype = np.dtype(info.dtype or default_dtype)
        if width > MAX_SIDE or height > MAX_SIDE:
            raise _HTTPError(
                400,
                f"Grid dimensions ({width}x{height}) must be less than or equal to {MAX_SIDE} "
                "pixels in each dimension.",
            )
        if len(bands) > MAX_BANDS:
            raise _HTTPError(
                400, f"Number of bands ({len(bands)}) must be less than or equal to {MAX_BANDS}."
            )
        total = width * height * len(bands) * dtype.itemsize
        if total > MAX_REQUEST_BYTES:
            raise _HTTPError(
                400,
                f"Total request size ({total} bytes) must be less than or equal to "
                f"{MAX_REQUEST_BYTES} bytes.",
            )
        fill = info.unmask if info.unmask is not None else 0.0
        empty = any(self._is_empty(src) for src in info.sources)
        sx, _, tx, _, sy, ty = affine
        xx, yy = np.meshgrid(
            tx + (np.arange(width) + 0.5) * sx, ty + (np.arange(height) + 0.5) * sy
        )
        data_idx = [i for i, (b, _) in enumerate(bands) if b not in derived]
        srcs = [src for b, src in bands if b not in derived]
        served = self._served_pixels(srcs, affine, height, width)
        planes = []
        for name, src in bands:
            if name in counts:  # per-pixel image count: the collection's size, 0 where empty
                n = self._count(counts[name])
                plane = np.full((height, width), float(n), dtype=np.float64)
                plane[self._empty_pixels([counts[name]], xx, yy)] = 0.0
                planes.append(plane)
            elif name in derived:  # Image.constant: the same everywhere, never masked
                planes.append(np.full((height, width), derived[name][1], dtype=np.float64))
            elif empty:
                planes.append(np.full((height, width), fill, dtype=np.float64))
            elif served is not None:
                planes.append(served.pop(0))
            else:
                planes.append(encode_pixels(affine, width, height, src))
        arr = np.stack(planes)
        if not empty and data_idx:
            # pixels no image covers are masked (the unmask value); nodata: masked; nan: NaN
            masks = [(self._empty_pixels(info.sources, xx, yy), fill)]
            for regions, value in ((self.nodata_regions, fill), (self.nan_regions, np.nan)):
                for x0, y0, x1, y1 in regions:
                    masks.append(((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1), value))
            for mask, value in masks:
                if mask.any():
                    for i in data_idx:
                        arr[i][mask] = value
        fmt = str(req.get("fileFormat", "AUTO_JPEG_PNG")).upper()
        if fmt in ("NPY", "NUMPY_NDARRAY"):
            names = [b for b, _ in bands]
            if len(set(names)) != len(names):
                raise _HTTPError(400, f"Duplicate band names in output: {names}.")
            out = np.zeros((height, width), dtype=[(n, dtype) for n in names])
            for i, n in enumerate(names):
                out[n] = arr[i]
            buf = io.BytesIO()
            np.save(buf, out, allow_pickle=False)
            return 200, {"Content-Type": "application/octet-stream"}, buf.getvalue()
        if fmt in ("GEO_TIFF", "GEOTIFF"):
            payload = _geotiff(arr.astype(dtype), affine, 3857)
            return 200, {"Content-Type": "image/tiff"}, payload
        raise _HTTPError(400, f"Emulator: fileFormat {fmt!r} is not supported (use NPY/GEO_TIFF).")

    def _served_pixels(
        self, srcs: list[str], affine: tuple[float, ...], height: int, width: int
    ) -> list | None:
        """``pixel_fn``'s planes for the grid's centre, one per image band, or None."""
        if self.pixel_fn is None or not srcs:
            return None
        lon, lat = _grid_centre_lonlat(affine, (height, width))
        return list(self.pixel_fn(lon, lat, srcs, height, width))


def _grid_centre_lonlat(affine: tuple[float, ...], hw: tuple[int, int]) -> tuple[float, float]:
    """lon/lat of an EPSG:3857 grid's centre."""
    sx, _, tx, _, sy, ty = affine
    x, y = tx + sx * hw[1] / 2.0, ty + sy * hw[0] / 2.0
    lon = math.degrees(x / 6378137.0)
    lat = math.degrees(2.0 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2.0)
    return lon, lat


def date_range_starts(resolved: Any) -> set[str]:
    """Start dates of every ``DateRange`` in a resolved expression: what a ``size_hook``
    looks at to make the collection of one time bin empty."""
    out: set[str] = set()
    stack = [resolved]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            fiv = node.get("functionInvocationValue")
            if isinstance(fiv, dict) and fiv.get("functionName") == "DateRange":
                out.add(fiv["arguments"]["start"].get("constantValue"))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def fetch_stats(url: str) -> dict[str, Any]:
    """The request log and in-flight peak of an emulator running in another process."""
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + STATS_PATH, timeout=30) as resp:
        return json.loads(resp.read().decode("utf-8"))


def _make_server(host: str, port: int, emulator: EEEmulator) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "EEEmulator/1.0"
        # headers and body go out as two writes: with Nagle on, the body waits for the
        # client's delayed ACK of the headers (~40 ms a request), a stall no real server adds
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, hdrs, payload = emulator.handle(self.command, self.path, self.headers, body)
            self.send_response(status, HTTPStatus(status).phrase)
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ee-emulator: " + format, *args)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server((host, port), Handler)


def load_pixel_fn(spec: str) -> Callable[..., np.ndarray]:
    """``FILE.py:FUNC`` -> the function, loaded from the file (a script, not a package)."""
    import importlib.util

    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise ValueError(f"--pixels-from wants FILE.py:FUNC, got {spec!r}")
    mod_spec = importlib.util.spec_from_file_location("emulator_pixels", path)
    if mod_spec is None or mod_spec.loader is None:
        raise ImportError(f"cannot load {path!r}")
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return getattr(module, name)


def main(argv: list[str] | None = None) -> int:
    """CLI: serve until killed; the first stdout line is ``listening on http://HOST:PORT``."""
    p = argparse.ArgumentParser(
        prog="python -m rs_embed_ray.testing.ee_emulator",
        description="Local Earth Engine REST emulator (loopback only).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--qps", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument(
        "--pixels-from",
        metavar="FILE.py:FUNC",
        help="serve FUNC(lon, lat, bands, height, width)'s values instead of the position "
        "encoding (e.g. the reference benchmark's fake_provider.py:fake_pixels)",
    )
    a = p.parse_args(argv)
    try:
        emu = EEEmulator(
            latency_ms=a.latency_ms,
            jitter_ms=a.jitter_ms,
            error_rate=a.error_rate,
            max_concurrent=a.max_concurrent,
            qps=a.qps,
            seed=a.seed,
            host=a.host,
            port=a.port,
            retry_after_s=a.retry_after_s,
        )
        if a.pixels_from:
            emu.pixel_fn = load_pixel_fn(a.pixels_from)
        emu._server = _make_server(a.host, a.port, emu)
    except (ValueError, OSError, ImportError, AttributeError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"listening on {emu.url}", flush=True)
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if emu._server is not None:
            emu._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
