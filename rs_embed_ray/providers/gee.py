"""Google Earth Engine provider: composites built server-side, pixels moved with computePixels.

Why it looks like this:

* **Grid.** Every request carries an explicit EPSG:3857 grid (``crsCode`` + north-up
  ``affineTransform`` from ``rs_embed_ray.geo.grid_for`` of the fetch square), so Earth Engine
  resamples onto exactly the lattice every other provider cuts; nothing is flipped afterwards.
* **Size limits.** A computePixels request may carry at most 48 MB (pixels x bands x 4 bytes,
  every image is cast to float32, the image-count band included) and 32768 px a side, and
  1024 bands. Bigger grids are cut with ``geo.split_grid`` on whole pixels and pasted back,
  so stitching is exact; a 400 "Total request size" answer still splits the tile reactively.
* **Round trips.** A single composite is ONE computePixels per tile: the composite goes
  with ``__n_images``, a per-pixel count of the images whose footprint covers the pixel
  (``collection.select(b0).map(unmask(0, sameFootprint)).count()``), and a place whose count
  is 0 everywhere raises the same "No images found" ProviderError the size query used to
  (``meta["n_images"]`` is the count's maximum over the place). ``ee.Algorithms.If(size,
  composite, constants)`` keeps the request valid for an empty collection (whose
  reductions have no bands); the constants stand in only then, so a band the collection
  lacks still fails as before. A time series still asks one
  ``value:compute`` for the window and per-bin sizes first (they decide the back-filling),
  then stacks its T frames into one multi-band image (bands ``<band>__t<i>``): one request
  per tile, not T. Requests per place (tiles = 1 below 48 MB):

  ================================  ==========================  ==========================
  path                              before                      now
  ================================  ==========================  ==========================
  optical / GSE composite           1 value + tiles             tiles
  S1, IW scenes found               1 value + tiles             tiles
  S1, IW relaxed on empty           1 value + tiles             2 x tiles (strict, relaxed)
  no images (optical / GSE)         1 value                     tiles
  no images (S1)                    1 value + 1 diagnostics     tiles (x2 if relaxing) + 1
  time series (n_frames)            1 value + tiles             1 value + tiles (unchanged)
  explicit bins (frame_bins)        -                           tiles (x2 if S1 relaxing)
  ``fetch_many`` group of n places  n x the above               see below
  ================================  ==========================  ==========================

* **Spatial batching** (``fetch_many``, opt-in). Places are grouped by
  :func:`plan_spatial_batches` (same scale, union within the per-request limits, at most
  ``batch_max_group`` places, union area at most ``batch_max_area_ratio`` x the places'
  areas); a group is fetched over its union grid and every place is cut out by whole-pixel
  offsets, so its pixels are those of ``fetch``. A composite group costs ONE computePixels
  (the count band tells each place's emptiness; an S1 place without IW scenes is then
  fetched alone with the relaxed filter); a time-series group costs one value:compute for
  all its places plus one computePixels per set of places that agree on which bins are
  empty (usually one); an explicit-bin group costs ONE computePixels (per-bin count bands
  tell each place's empty bins). Places that fit no group are fetched alone, exactly as
  ``fetch``.
* **Explicit bins** (``frame_bins="30d"``, olmoearth). Each bin is its own counted composite
  (bands + ``__n_images``; the ``If(size, ...)`` guard keeps an empty bin valid) and the T
  of them are stacked in one image (``<band>__t<i>``, ``__n_images__t<i>``): one
  computePixels per tile and no value:compute. A bin whose count is 0 over the place comes
  back as an all-NaN frame (never back-filled); a place with no image in any bin raises the
  usual "No images found" error. Meta: ``frames=[{start, end, empty, n_images}]``,
  ``n_empty``.
* **Templates** (``request_templates``, default on). The expression of a request shape
  (sensor, bands, composite, variant, bins, empty-bin pattern) is built and serialised once
  per process; each place splices its region corners and dates into that JSON
  (``providers.gee_template``) and it is sent through the client's own resource, headers and
  transport. The bodies are the client's byte for byte (checked on the first place of every
  shape; a shape or value that cannot be spliced safely is built by the client). The
  value:compute size queries and the S1 diagnostics are still built by the client.
* **Retries.** The ee client retries 429/5xx by itself (googleapiclient, ``max_retries=5``,
  random 2**n s sleeps, no Retry-After). The provider sets ``ee.data.setMaxRetries(0)`` and
  owns the policy: 429, 5xx, 408 and connection errors are retried with exponential backoff
  plus jitter, waiting at least the server's Retry-After, up to ``max_retries`` times; then a
  ProviderError. ``max_retries=0`` fails on the first error.
* **Quota.** Every HTTP request the client makes (discovery, algorithms, value:compute,
  computePixels, retries) goes through an httplib2-compatible transport that holds a
  ``Limiter`` slot for the duration of the request (``providers.ratelimit``; the cluster-wide
  Ray actor in ``pipeline.ee_quota`` satisfies the same protocol).
* **Global state.** The ee library keeps one configuration per process. The provider
  initialises it once, under a lock; if another GEEProvider initialised the process since,
  it resets ee (``ee.Reset``, so the algorithm list is fetched again and a wrong endpoint,
  token or project fails at initialisation) and initialises again before its next fetch.
  Two providers with different settings fetching at the same time in one process is not
  supported.
* **Secrets.** Messages and logs never include tokens, key contents or URL query strings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from rs_embed_ray.errors import ProviderError, SpecError
from rs_embed_ray.geo import (
    Grid,
    fetch_square,
    grid_for,
    grid_offset,
    lattice_origin,
    split_grid,
    union_grid,
)
from rs_embed_ray.providers import gee_template
from rs_embed_ray.providers.base import Patch
from rs_embed_ray.providers.ratelimit import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_QPS,
    Limiter,
    LimiterTimeout,
    LocalLimiter,
)
from rs_embed_ray.specs import (
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
    fixed_day_bins,
    parse_frame_bins,
    window_of,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "https://earthengine.googleapis.com"
HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
URL_ENV = "RS_EMBED_RAY_EE_URL"
PROJECT_ENVS = ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT")
EMULATOR_PROJECT = "emulator"

MAX_REQUEST_BYTES = 50331648
MAX_SIDE = 32768
MAX_BANDS = 1024
BYTES_PER_VALUE = 4  # images are cast with toFloat() before transfer
N_IMAGES_BAND = "__n_images"  # per-pixel image count sent with every single composite
DEFAULT_BATCH_MAX_GROUP = 16
DEFAULT_BATCH_MAX_AREA_RATIO = 2.0

S2_PREFIX = "COPERNICUS/S2"
S1_FLOAT = "COPERNICUS/S1_GRD_FLOAT"
S1_DB = "COPERNICUS/S1_GRD"
GSE_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
GSE_BANDS = tuple(f"A{i:02d}" for i in range(64))
GSE_FILL = -9999.0

S2_ALIASES = {
    "BLUE": "B2",
    "GREEN": "B3",
    "RED": "B4",
    "NIR": "B8",
    "NIR_BROAD": "B8",
    "NIR_WIDE": "B8",
    "NIR_NARROW": "B8A",
    "NIRN": "B8A",
    "NIR_N": "B8A",
    "RE4": "B8A",
    "RED_EDGE_4": "B8A",
    "RE1": "B5",
    "RE2": "B6",
    "RE3": "B7",
    "SWIR1": "B11",
    "SWIR_1": "B11",
    "SWIR2": "B12",
    "SWIR_2": "B12",
}
_L89 = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
_L457 = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
_LANDSAT_KEYS = ("BLUE", "GREEN", "RED", "NIR", "SWIR1", "SWIR2")

_RETRYABLE = {408, 429, 500, 502, 503, 504}
_AUTH_HINT = "run `earthengine authenticate` or set GOOGLE_APPLICATION_CREDENTIALS"
_PROJECT_HINT = (
    "set EE_PROJECT (or GOOGLE_CLOUD_PROJECT), pass project=..., or run "
    "`earthengine set_project` / `gcloud auth application-default set-quota-project`"
)

_EE_LOCK = threading.RLock()
_ACTIVE: object | None = None  # the _token of the provider that configured ee last


# ------------------------------------------------------------------------------------------
# helpers


def resolve_band(collection: str, band: str) -> str:
    """Map a friendly band alias (RED, NIR, ...) to the collection's band id."""
    if S2_PREFIX in collection:
        return S2_ALIASES.get(band.upper(), band)
    if collection.startswith("LANDSAT/"):
        table = _L89 if re.search(r"LC0[89]", collection) else _L457
        aliases = dict(zip(_LANDSAT_KEYS, table, strict=True))
        aliases.update({"SWIR_1": aliases["SWIR1"], "SWIR_2": aliases["SWIR2"]})
        return aliases.get(band.upper(), band)
    return band


def split_date_range(start: str, end: str, n: int) -> list[tuple[str, str]]:
    """``n`` equal bins over [start, end) in whole days; the last bin ends at ``end``."""
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    total = (d1 - d0).days
    bounds = [d0.toordinal() + (total * i) // n for i in range(n)] + [d1.toordinal()]
    return [
        (date.fromordinal(bounds[i]).isoformat(), date.fromordinal(bounds[i + 1]).isoformat())
        for i in range(n)
    ]


_PEM = r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
_SECRET_PATTERNS = [
    (re.compile(r"(?i)bearer\s+[^\s,;\"']+"), "Bearer ***"),
    (re.compile(r"ya29\.[0-9A-Za-z_\-\.]+"), "***"),
    (re.compile(_PEM, re.S), "***"),
    (re.compile(r"(?i)(access_token|refresh_token|client_secret|private_key|key)=[^&\s]+"),
     r"\1=***"),
    (re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*"), r"\1"),
]  # fmt: skip


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Strip tokens, private keys and URL query strings from a message before it is shown."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text


def _parse_retry_after(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class _Failure:
    kind: str  # quota | server | transient | auth | permission | too_large | not_found | other
    status: int | None
    retry_after: float | None
    message: str

    @property
    def retryable(self) -> bool:
        return self.kind in ("quota", "server", "transient")


def classify_error(exc: BaseException) -> _Failure:
    """Read the HTTP status and Retry-After behind an ee/googleapiclient/transport error."""
    from googleapiclient.errors import HttpError

    status: int | None = None
    retry_after: float | None = None
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        if isinstance(seen, HttpError):
            with contextlib.suppress(Exception):
                status = int(seen.resp.status)
                retry_after = _parse_retry_after(seen.resp.get("retry-after"))
            break
        seen = seen.__cause__ or seen.__context__
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if status is None:
        try:
            import google.auth.exceptions as gae

            if isinstance(exc, gae.GoogleAuthError):
                return _Failure("auth", None, None, msg)
        except ImportError:  # pragma: no cover - google-auth ships with earthengine-api
            pass
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return _Failure("transient", None, None, msg)
        if "too many requests" in low or "quota exceeded" in low or "resource_exhausted" in low:
            return _Failure("quota", 429, None, msg)
        if "please authorize access" in low:
            return _Failure("auth", None, None, msg)
        if "no project found" in low:
            return _Failure("permission", None, None, msg)
        return _Failure("other", None, None, msg)
    if status == 429:
        kind = "quota"
    elif status in _RETRYABLE:
        kind = "server" if status >= 500 else "transient"
    elif status == 401:
        kind = "auth"
    elif status == 403:
        kind = "permission"
    elif status == 404:
        kind = "not_found"
    elif status == 400 and ("total request size" in low or "must be less than or equal" in low):
        kind = "too_large"
    elif status >= 500:
        kind = "server"
    else:
        kind = "other"
    return _Failure(kind, status, retry_after, msg)


# ------------------------------------------------------------------------------------------
# HTTP transport: every request takes a limiter slot


class _LimitedHttp:
    """An httplib2-like transport (what the ee client accepts as ``http_transport``).

    Holds a limiter slot for the whole request, counts requests per thread for the patch
    meta, and uses one requests.Session per thread.
    """

    def __init__(self, limiter: Limiter, timeout_s: float | None, acquire_timeout_s: float | None):
        self.limiter = limiter
        self.timeout_s = timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()

    def _session(self) -> Any:
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = requests.Session()
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def thread_requests(self) -> int:
        return getattr(self._local, "count", 0)

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: Any = None,
        headers: dict[str, str] | None = None,
        redirections: int | None = None,
        connection_type: Any = None,
        **_: Any,
    ) -> tuple[Any, bytes]:
        import httplib2
        import requests

        session = self._session()
        self._local.count = self.thread_requests() + 1
        with self.limiter.slot(self.acquire_timeout_s):
            try:
                resp = session.request(
                    method, uri, data=body, headers=headers, timeout=self.timeout_s
                )
                content = resp.content
            except requests.exceptions.Timeout as exc:
                raise TimeoutError(
                    f"Earth Engine request timed out after {self.timeout_s} s"
                ) from exc
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                raise ConnectionError(
                    f"Earth Engine connection failed: {type(exc).__name__}"
                ) from exc
        out = dict(resp.headers)
        out["status"] = resp.status_code
        return httplib2.Response(out), content

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            with contextlib.suppress(Exception):
                s.close()


@contextlib.contextmanager
def _no_catalog_fetch(active: bool) -> Iterator[None]:
    """ee.Initialize opens a public STAC catalog URL; against an emulator nothing may leave."""
    if not active:
        yield
        return
    import ee.deprecation

    saved = ee.deprecation._FetchDataCatalogStac
    ee.deprecation._FetchDataCatalogStac = lambda: {}
    try:
        yield
    finally:
        ee.deprecation._FetchDataCatalogStac = saved


# ------------------------------------------------------------------------------------------
# spatial batching: which places share a request


def plan_spatial_batches(
    grids: Sequence[Grid],
    *,
    max_pixels: int,
    max_side: int = MAX_SIDE,
    max_group: int = DEFAULT_BATCH_MAX_GROUP,
    max_area_ratio: float = DEFAULT_BATCH_MAX_AREA_RATIO,
) -> list[list[int]]:
    """Group places (by their pixel grids) so that each group can be fetched in one request.

    Returns a partition of ``range(len(grids))``: lists of indices, each ascending, ordered
    by their first index. A group's union grid (``geo.union_grid``) is at most ``max_pixels``
    pixels and ``max_side`` pixels a side, it holds at most ``max_group`` places, and its area
    is at most ``max_area_ratio`` times the sum of its places' areas (the pixels moved that
    no place needs stay bounded). Only grids of one crs and scale whose corners are on the
    lattice share a group; a grid too big for one request, or one that fits no group, is a
    group of its own (fetched alone, tiled as usual).

    Greedy and deterministic: seeds are taken north-west first; a group then grows by the
    place that enlarges its union least (ties: nearest centre, then lowest index) until no
    place fits. Pure: no Earth Engine, no I/O.
    """
    if max_group < 1:
        raise ValueError(f"max_group must be >= 1, got {max_group}")
    if not max_area_ratio > 0:
        raise ValueError(f"max_area_ratio must be > 0, got {max_area_ratio}")
    groups: list[list[int]] = []
    by_key: dict[tuple[str, float], list[int]] = {}
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for i, g in enumerate(grids):
        origin = lattice_origin(g)
        if (
            origin is None
            or max_group == 1
            or g.width * g.height > max_pixels
            or max(g.width, g.height) > max_side
        ):
            groups.append([i])
            continue
        boxes[i] = (origin[0], origin[1], origin[0] + g.height, origin[1] + g.width)
        by_key.setdefault((g.crs, float(g.scale)), []).append(i)
    for idx in by_key.values():
        ids = np.asarray(idx, dtype=np.int64)
        b = np.asarray([boxes[i] for i in idx], dtype=np.int64).reshape(-1, 4)
        r0, c0, r1, c1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        area = (r1 - r0) * (c1 - c0)
        cy, cx = (r0 + r1) / 2.0, (c0 + c1) / 2.0
        free = np.ones(len(idx), dtype=bool)
        for seed in np.lexsort((ids, c0, r0)):
            if not free[seed]:
                continue
            free[seed] = False
            members = [int(seed)]
            R0, C0, R1, C1 = int(r0[seed]), int(c0[seed]), int(r1[seed]), int(c1[seed])
            total = int(area[seed])
            while len(members) < max_group:
                cand = np.flatnonzero(free)
                if cand.size == 0:
                    break
                h = np.maximum(R1, r1[cand]) - np.minimum(R0, r0[cand])
                w = np.maximum(C1, c1[cand]) - np.minimum(C0, c0[cand])
                a = h * w
                ok = (
                    (h <= max_side)
                    & (w <= max_side)
                    & (a <= max_pixels)
                    & (a <= max_area_ratio * (total + area[cand]))
                )
                if not ok.any():
                    break
                cand, a = cand[ok], a[ok]
                dist = np.hypot(cy[cand] - (R0 + R1) / 2.0, cx[cand] - (C0 + C1) / 2.0)
                j = int(cand[np.lexsort((ids[cand], dist, a))[0]])
                free[j] = False
                members.append(j)
                R0, C0 = min(R0, int(r0[j])), min(C0, int(c0[j]))
                R1, C1 = max(R1, int(r1[j])), max(C1, int(c1[j]))
                total += int(area[j])
            groups.append(sorted(idx[m] for m in members))
    groups.sort(key=lambda g: g[0])
    return groups


def _batched(size: int, union: Grid, offset: tuple[int, int], requests: int) -> dict[str, Any]:
    """The ``meta["batched"]`` of a place fetched through a union request."""
    return {
        "group_size": size,
        "union_grid": union.to_meta(),
        "offset": [int(offset[0]), int(offset[1])],
        "requests": requests,
    }


@dataclass(frozen=True)
class _Job:
    """What a fetch needs besides the place (shared by every place of a ``fetch_many``).

    ``variants`` are the collections to try in turn: ``("main",)``; S1 ``("strict",)`` or,
    when the IW filter may be relaxed on empty, ``("strict", "relaxed")``.
    """

    sensor: SensorSpec
    kind: str
    start: str
    end: str
    resolved: list[str]
    uniq: list[str]
    bins: list[tuple[str, str]]
    n_frames: int | None
    composite: str
    fill: float
    variants: tuple[str, ...]
    # explicit bins (frame_bins): independent per-bin composites, empty bins NaN
    binned: bool = False
    frame_bins: str | None = None
    stretched: bool = False


@dataclass(frozen=True)
class _Place:
    spatial: SpatialSpec
    grid: Grid
    win: tuple[float, float, float, float]


# ------------------------------------------------------------------------------------------
# the provider


class GEEProvider:
    """Fetch composites from Google Earth Engine on the project's EPSG:3857 grid.

    ``project``: argument, then ``EE_PROJECT``, then ``GOOGLE_CLOUD_PROJECT`` (then the
    credentials' quota project). ``url``: argument, then ``RS_EMBED_RAY_EE_URL``, then the
    high-volume endpoint if ``high_volume``, else the standard endpoint. A URL outside
    googleapis.com is treated as an emulator: a dummy bearer token is used unless
    ``credentials`` is given, the project defaults to "emulator", and nothing else is contacted.
    ``credentials``: an ee/google-auth credentials object; else a service-account key named by
    ``GOOGLE_APPLICATION_CREDENTIALS``; else what ``earthengine authenticate``/ADC stored.
    ``limiter``: shared request limiter; default a ``LocalLimiter(ee_max_concurrent,
    ee_max_qps)`` for this instance. ``max_retries``/``backoff_s``/``max_backoff_s``: retry
    policy for 429/5xx/transport errors. ``auto_auth`` is accepted for rs-embed
    compatibility; no interactive flow is ever started. ``request_templates`` (default True):
    serialise each request shape once and splice every place's region and dates into it
    (``providers.gee_template``; the same request bytes, less client CPU); False builds every
    request with the client.
    """

    name = "gee"

    def __init__(
        self,
        project: str | None = None,
        url: str | None = None,
        high_volume: bool = False,
        credentials: Any = None,
        limiter: Limiter | None = None,
        max_retries: int = 5,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 32.0,
        max_retry_after_s: float = 300.0,
        timeout_s: float | None = 330.0,
        acquire_timeout_s: float | None = None,
        ee_max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
        ee_max_qps: float | None = DEFAULT_QPS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_side: int = MAX_SIDE,
        max_bands: int = MAX_BANDS,
        workload_tag: str | None = None,
        auto_auth: bool = True,
        batch_max_group: int = DEFAULT_BATCH_MAX_GROUP,
        batch_max_area_ratio: float = DEFAULT_BATCH_MAX_AREA_RATIO,
        batch_threads: int = 1,
        request_templates: bool = True,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.project_arg = project
        self.url_arg = url
        self.high_volume = bool(high_volume)
        self.credentials_arg = credentials
        self.limiter: Limiter = limiter or LocalLimiter(ee_max_concurrent, ee_max_qps)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.timeout_s = timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self.max_request_bytes = int(max_request_bytes)
        self.max_side = int(max_side)
        self.max_bands = int(max_bands)
        self.workload_tag = workload_tag
        self.auto_auth = auto_auth
        if int(batch_max_group) < 1:
            raise ValueError(f"batch_max_group must be >= 1, got {batch_max_group}")
        if not float(batch_max_area_ratio) > 0:
            raise ValueError(f"batch_max_area_ratio must be > 0, got {batch_max_area_ratio}")
        self.batch_max_group = int(batch_max_group)
        self.batch_max_area_ratio = float(batch_max_area_ratio)
        self.batch_threads = max(1, int(batch_threads))
        if not isinstance(request_templates, bool):
            raise ValueError(f"request_templates must be true or false, got {request_templates!r}")
        self.request_templates = request_templates
        self._setup_runtime()

    def _setup_runtime(self) -> None:
        self._token = object()
        self._init_lock = threading.Lock()
        self._ready = False
        self._transport: _LimitedHttp | None = None
        self._secrets: tuple[str, ...] = ()
        self._local = threading.local()
        self.url: str = self._resolve_url()
        self.emulator = urlsplit(self.url).hostname is not None and not (
            urlsplit(self.url).hostname or ""
        ).endswith("googleapis.com")
        self.project: str | None = None
        self._templates: gee_template.RequestTemplates | None = None
        if self.request_templates:
            if gee_template.supported():
                self._templates = gee_template.RequestTemplates()
            else:
                log.warning("this earthengine-api cannot send templated requests; not using them")

    def template_stats(self) -> dict[str, int]:
        """Requests whose expression came from a template vs built by the client (see
        ``providers.gee_template``); empty when templates are off."""
        return dict(self._templates.stats) if self._templates is not None else {}

    # pickling: ship the configuration, not locks or sessions (Ray actors rebuild them)
    def __getstate__(self) -> dict[str, Any]:
        skip = {"_token", "_init_lock", "_ready", "_transport", "_secrets", "_local", "_templates"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup_runtime()

    # -- initialisation ---------------------------------------------------------------------

    def _resolve_url(self) -> str:
        url = self.url_arg or os.environ.get(URL_ENV) or None
        if url:
            return url.rstrip("/")
        return HIGH_VOLUME_URL if self.high_volume else DEFAULT_URL

    def _resolve_project(self) -> str | None:
        if self.project_arg:
            return str(self.project_arg)
        for env in PROJECT_ENVS:
            if os.environ.get(env):
                return os.environ[env]
        return None

    def _resolve_credentials(self) -> tuple[Any, str | None]:
        """(credentials, project implied by them); never logs or returns key material."""
        import ee

        if self.credentials_arg is not None:
            creds = self.credentials_arg
            return creds, getattr(creds, "quota_project_id", None) or getattr(
                creds, "project_id", None
            )
        if self.emulator:
            from google.oauth2.credentials import Credentials

            return Credentials(token="emulator"), None
        key_path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if key_path:
            if not os.path.isfile(key_path):
                raise ProviderError(
                    "Earth Engine credentials: GOOGLE_APPLICATION_CREDENTIALS names "
                    f"{key_path!r}, which is not a file; {_AUTH_HINT}."
                )
            try:
                with open(key_path, encoding="utf-8") as fh:
                    info = json.load(fh)
            except (OSError, ValueError):
                raise ProviderError(
                    f"Earth Engine credentials: {key_path!r} (GOOGLE_APPLICATION_CREDENTIALS) "
                    f"is not a readable JSON key file; {_AUTH_HINT}."
                ) from None
            if isinstance(info, dict) and info.get("type") == "service_account":
                try:
                    creds = ee.ServiceAccountCredentials(None, key_file=key_path)
                except Exception as exc:
                    raise ProviderError(
                        f"Earth Engine credentials: the service-account key {key_path!r} "
                        f"could not be loaded ({type(exc).__name__}); {_AUTH_HINT}."
                    ) from None
                return creds, info.get("project_id")
            # authorized_user / external_account files: google.auth.default() reads them
        try:
            creds = ee.data.get_persistent_credentials()
        except Exception as exc:
            raise ProviderError(
                "Earth Engine credentials not found or invalid "
                f"({redact(type(exc).__name__)}); {_AUTH_HINT}."
            ) from None
        return creds, getattr(creds, "quota_project_id", None)

    def ensure_ready(self) -> None:
        """Initialise the ee library for this provider (once; again if another one took over)."""
        global _ACTIVE
        if self._ready and _ACTIVE is self._token:
            return
        with _EE_LOCK:
            if self._ready and _ACTIVE is self._token:
                return
            import ee

            creds, implied_project = self._resolve_credentials()
            project = self._resolve_project() or implied_project
            if not project and self.emulator:
                project = EMULATOR_PROJECT
            if not project:
                raise ProviderError(f"No Earth Engine project configured: {_PROJECT_HINT}.")
            self.project = project
            token = getattr(creds, "token", None)
            self._secrets = (token,) if isinstance(token, str) else ()
            if self._transport is None:
                self._transport = _LimitedHttp(self.limiter, self.timeout_s, self.acquire_timeout_s)
            transport = self._transport

            def init() -> None:
                # a re-initialisation must fetch the algorithm list again (ee caches it), so
                # a wrong endpoint, token or project fails here and not at the first fetch
                global _ACTIVE
                _ACTIVE = None  # whoever configured ee before must initialise again
                if ee.data.is_initialized():
                    ee.Reset()
                ee.data.setMaxRetries(0)  # one retry policy: ours (see module docstring)
                with _no_catalog_fetch(self.emulator):
                    ee.Initialize(
                        credentials=creds, project=project, url=self.url, http_transport=transport
                    )

            t0 = time.monotonic()
            self._call("initialise Earth Engine", init)
            _ACTIVE = self._token
            self._ready = True
            log.info(
                "Earth Engine ready: endpoint=%s project=%s%s (%.2f s)",
                urlsplit(self.url).netloc,
                project,
                " [emulator]" if self.emulator else "",
                time.monotonic() - t0,
            )

    # -- retries ----------------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.max_backoff_s, self.backoff_s * (2.0**attempt))
        delay = cap * (0.5 + 0.5 * random.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after_s))
        return delay

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one ee call with our retry policy; raise a clear ProviderError at the end."""
        attempt = 0
        while True:
            try:
                return fn()
            except ProviderError:
                raise
            except LimiterTimeout as exc:
                raise ProviderError(f"Earth Engine {what}: {exc}") from None
            except Exception as exc:
                fail = classify_error(exc)
                if fail.retryable and attempt < self.max_retries:
                    delay = self._backoff(attempt, fail.retry_after)
                    attempt += 1
                    self._local.retries = getattr(self._local, "retries", 0) + 1
                    log.warning(
                        "Earth Engine %s failed (%s%s); retry %d/%d in %.2f s",
                        what,
                        fail.kind,
                        f" HTTP {fail.status}" if fail.status else "",
                        attempt,
                        self.max_retries,
                        delay,
                    )
                    time.sleep(delay)
                    continue
                raise self._error(what, fail, attempt) from None

    def _error(self, what: str, fail: _Failure, attempts: int) -> ProviderError:
        msg = redact(fail.message, self._secrets)
        status = f"HTTP {fail.status}: " if fail.status else ""
        tries = f" after {attempts} retries" if attempts else ""
        if fail.kind == "quota":
            return ProviderError(
                f"Earth Engine quota exceeded during {what}{tries} ({status}{msg}). Lower "
                "ee_max_concurrent/ee_max_qps, share one limiter across workers, or ask for "
                "more quota."
            )
        if fail.kind in ("server", "transient"):
            return ProviderError(f"Earth Engine {what} failed{tries} ({status}{msg}).")
        if fail.kind == "auth":
            return ProviderError(
                f"Earth Engine authentication failed during {what} ({status}{msg}); {_AUTH_HINT}."
            )
        if fail.kind == "permission":
            return ProviderError(
                f"Earth Engine refused project {self.project!r} during {what} ({status}{msg}); "
                f"check the project is registered for Earth Engine and {_PROJECT_HINT}."
            )
        if fail.kind == "not_found":
            return ProviderError(f"Earth Engine {what}: not found ({status}{msg}).")
        return ProviderError(f"Earth Engine {what} failed ({status}{msg}).")

    # -- image building ---------------------------------------------------------------------

    @staticmethod
    def _kind(sensor: SensorSpec) -> str:
        c = sensor.collection
        if c == GSE_COLLECTION or (sensor.modality or "").lower() == "gse":
            return "gse"
        if c.startswith(S1_DB):
            return "s1"
        return "optical"

    def _counts(self, values: list[Any], what: str) -> list[int]:
        import ee

        out = self._call(what, lambda: ee.List(values).getInfo())
        if not isinstance(out, list) or len(out) != len(values):
            raise ProviderError(f"Earth Engine {what}: unexpected answer {out!r}.")
        return [int(v or 0) for v in out]

    @staticmethod
    def _composite(col: Any, how: str) -> Any:
        if how == "mosaic":
            return col.sort("system:time_start").mosaic()
        if how == "median":
            return col.median()
        raise SpecError(f"Unknown composite {how!r} (use 'median' or 'mosaic').")

    def _s1_collections(self, sensor: SensorSpec, region: Any, start: str, end: str):
        import ee

        cid = S1_FLOAT if sensor.use_float_linear else S1_DB
        base = ee.ImageCollection(cid).filterBounds(region).filterDate(start, end)
        orbit = (sensor.orbit or "").upper() or None
        if orbit is not None and orbit not in ("ASCENDING", "DESCENDING"):
            raise SpecError(f"SensorSpec.orbit must be ASCENDING or DESCENDING, got {orbit!r}.")

        def pol(col: Any) -> Any:
            col = col.filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
            col = col.filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
            if orbit:
                col = col.filter(ee.Filter.eq("orbitProperties_pass", orbit))
            return col

        iw = base.filter(ee.Filter.eq("instrumentMode", "IW"))
        strict = pol(iw) if sensor.s1_require_iw else pol(base)
        relaxed = pol(base)
        return cid, base, iw, strict, relaxed

    def _s1_empty_error(self, base: Any, iw: Any, cid: str, start: str, end: str) -> ProviderError:
        import ee

        vv = iw.filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
        vh = vv.filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
        vh_no_iw = base.filter(
            ee.Filter.listContains("transmitterReceiverPolarisation", "VV")
        ).filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
        names = ["base", "iw", "vv", "vh", "vh_no_iw"]
        try:
            counts = self._counts(
                [c.size() for c in (base, iw, vv, vh, vh_no_iw)], "S1 filter-stage counts"
            )
            detail = ", ".join(f"{n}={c}" for n, c in zip(names, counts, strict=True))
        except ProviderError:
            detail = "counts unavailable"
        return ProviderError(
            "No images found for the selected region/time window. "
            f"collection={cid} window={start}..{end} ({detail})."
        )

    # -- what a fetch needs -----------------------------------------------------------------

    def _job(
        self,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        n_frames: int | None,
        frame_bins: str | None = None,
    ) -> _Job:
        """Everything about a fetch except the place; raises for an invalid request."""
        if temporal is not None:
            temporal.validate()
        if n_frames is not None and int(n_frames) < 1:
            raise SpecError(f"n_frames must be >= 1, got {n_frames}.")
        days = parse_frame_bins(frame_bins) if frame_bins is not None else None
        kind = self._kind(sensor)
        if kind == "gse":
            if temporal is None:
                raise ProviderError("gse needs a TemporalSpec (TemporalSpec.year(YYYY)).")
            year = temporal.year if temporal.mode == "year" else int(str(temporal.start)[:4])
            if temporal.mode != "year":
                log.warning("gse is annual: using the start year %s of the range", year)
            start, end = f"{year:04d}-01-01", f"{year + 1:04d}-01-01"
        else:
            start, end = window_of(temporal)
        bands_out = tuple(sensor.bands) or (GSE_BANDS if kind == "gse" else ())
        if not bands_out:
            raise SpecError(f"SensorSpec.bands is empty for {sensor.collection!r}.")
        composite = "mosaic" if kind == "gse" else sensor.composite
        if composite not in ("median", "mosaic"):
            raise SpecError(f"Unknown composite {composite!r} (use 'median' or 'mosaic').")
        if kind == "s1":
            orbit = (sensor.orbit or "").upper() or None
            if orbit is not None and orbit not in ("ASCENDING", "DESCENDING"):
                raise SpecError(f"SensorSpec.orbit must be ASCENDING or DESCENDING, got {orbit!r}.")
            relax = sensor.s1_require_iw and sensor.s1_relax_iw_on_empty
            variants = ("strict", "relaxed") if relax else ("strict",)
        else:
            variants = ("main",)
        resolved = [resolve_band(sensor.collection, b) for b in bands_out]
        uniq = list(dict.fromkeys(resolved))
        stretched = False
        if days is not None:
            bins, stretched = fixed_day_bins(start, end, days, int(n_frames) if n_frames else None)
        else:
            bins = split_date_range(start, end, int(n_frames)) if n_frames else []
        return _Job(
            sensor=sensor,
            kind=kind,
            start=start,
            end=end,
            resolved=resolved,
            uniq=uniq,
            bins=bins,
            n_frames=int(n_frames) if n_frames else None,
            composite=composite,
            fill=GSE_FILL if kind == "gse" else float(sensor.fill_value),
            variants=variants,
            binned=days is not None,
            frame_bins=frame_bins if days is not None else None,
            stretched=stretched,
        )

    @staticmethod
    def _place(spatial: SpatialSpec, scale_m: float) -> _Place:
        spatial.validate()
        square, win = fetch_square(spatial)
        return _Place(spatial=spatial, grid=grid_for(square, scale_m), win=win)

    def _collection(self, job: _Job, region: Any, variant: str) -> Any:
        """The filtered collection a composite is made of (``variant``: see ``_Job``)."""
        import ee

        if job.kind == "s1":
            _, _, _, strict, relaxed = self._s1_collections(job.sensor, region, job.start, job.end)
            return strict if variant == "strict" else relaxed
        collection = job.sensor.collection
        col = ee.ImageCollection(collection).filterBounds(region).filterDate(job.start, job.end)
        if job.sensor.cloudy_pct is not None and job.kind == "optical":
            if S2_PREFIX in collection:
                col = col.filter(
                    ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", int(job.sensor.cloudy_pct))
                )
            elif collection.startswith("LANDSAT/"):
                col = col.filter(ee.Filter.lte("CLOUD_COVER", int(job.sensor.cloudy_pct)))
        return col

    @staticmethod
    def _region(grid: Grid) -> Any:
        return GEEProvider._rect(grid.bounds())

    @staticmethod
    def _rect(bounds: Sequence[float]) -> Any:
        import ee

        return ee.Geometry.Rectangle(list(bounds), proj="EPSG:3857", geodesic=False)

    def _image(self, shape: str, job: _Job, grid: Grid, make: Callable[[_Job, Any], Any]) -> Any:
        """The expression of a request over ``grid``: ``make(job, region)`` built by the
        client, or (templates on) that expression serialised once per request shape with
        this place's region corners and dates spliced in (``providers.gee_template``).

        ``make`` must take the window and bins from its job argument, never from ``job``.
        """
        if self._templates is None:
            return make(job, self._region(grid))
        n_bins = len(job.bins)

        def build(values: Sequence[Any]) -> Any:
            flat = list(values[6:])
            bins = list(zip(flat[0::2], flat[1::2], strict=True))
            j = dataclasses.replace(job, start=values[4], end=values[5], bins=bins)
            return make(j, self._rect(values[:4]))

        values = [*grid.bounds(), job.start, job.end, *(d for b in job.bins for d in b)]
        key = (shape, n_bins, repr(dataclasses.replace(job, start="", end="", bins=[])))
        return self._templates.expression(key, values, build)

    def _empty_error(self, job: _Job, grid: Grid) -> ProviderError:
        """The clear "no images" error (S1 asks Earth Engine for its filter-stage counts)."""
        if job.kind == "s1":
            cid, base, iw, _, _ = self._s1_collections(
                job.sensor, self._region(grid), job.start, job.end
            )
            return self._s1_empty_error(base, iw, cid, job.start, job.end)
        return ProviderError(
            "No images found for the selected region/time window. "
            f"collection={job.sensor.collection} window={job.start}..{job.end}."
        )

    def _counted_composite(self, job: _Job, col: Any) -> Any:
        """The composite's bands plus ``__n_images``, the number of images per pixel.

        A reduction of an empty collection has no bands at all, so for an empty collection
        (and only then: a band the collection lacks still fails loudly) constant placeholders
        stand in, with a count of 0. The count is taken over each image's footprint
        (``unmask(0, sameFootprint=True)``), so masked pixels still count: like the
        collection size it replaces, it says whether images exist, not whether they are clear.
        """
        import ee

        uniq, b0 = job.uniq, job.uniq[0]
        size = col.size()
        composite = ee.Image(
            ee.Algorithms.If(
                size,
                self._composite(col, job.composite),
                ee.Image.constant([job.fill] * len(uniq)).rename(uniq),
            )
        )
        per_image = col.map(lambda img: ee.Image(img).select([b0]).unmask(0, True))
        count = ee.Image(
            ee.Algorithms.If(size, per_image.count(), ee.Image.constant(0).rename([b0]))
        )
        return (
            composite.select(uniq)
            .toFloat()
            .unmask(job.fill, False)
            .addBands(count.select([b0], [N_IMAGES_BAND]).unmask(0, False).toFloat())
        )

    def _fetch_counted(self, job: _Job, grid: Grid, variant: str) -> tuple[np.ndarray, int]:
        """One composite on ``grid`` with its image count: ((Cu + 1), H, W), pixel requests."""

        def make(j: _Job, region: Any) -> Any:
            return self._counted_composite(j, self._collection(j, region, variant))

        image = self._image(f"counted:{variant}", job, grid, make)
        return self._pull(image, [*job.uniq, N_IMAGES_BAND], grid)

    def _fetch_binned(self, job: _Job, grid: Grid, variant: str) -> tuple[np.ndarray, int]:
        """Explicit bins on ``grid``: one counted composite per bin, stacked into one image.

        Returns (T, Cu + 1, H, W) (the last channel is each bin's image count) and the
        number of pixel requests (one per tile unless T x (Cu + 1) exceeds the band limit).
        """

        def frames(j: _Job, region: Any) -> list[Any]:
            col = self._collection(j, region, variant)
            return [self._counted_composite(j, col.filterDate(s, e)) for s, e in j.bins]

        names = [*job.uniq, N_IMAGES_BAND]
        return self._fetch_frames(frames, names, job, grid, f"binned:{variant}")

    def _frame_images(self, job: _Job, col: Any, bin_empty: list[bool]) -> list[Any]:
        """One image per time bin; an empty bin is back-filled with the window composite."""
        whole = self._composite(col, job.composite)

        def prep(img: Any) -> Any:
            return img.select(job.uniq).toFloat().unmask(job.fill, False)

        return [
            prep(whole if empty else self._composite(col.filterDate(s, e), job.composite))
            for (s, e), empty in zip(job.bins, bin_empty, strict=True)
        ]

    def _size_values(self, job: _Job, region: Any) -> list[Any]:
        """Sizes a time series needs: per variant, the window and then every bin."""
        out: list[Any] = []
        for v in job.variants:
            col = self._collection(job, region, v)
            out.append(col.size())
            out.extend(col.filterDate(s, e).size() for s, e in job.bins)
        return out

    def _decide(self, job: _Job, counts: list[int]) -> tuple[int | None, int, list[int]]:
        """From ``_size_values`` answers: (variant index or None if empty, total, per-bin)."""
        per = 1 + len(job.bins)
        for k in range(len(job.variants)):
            if counts[k * per] > 0:
                return k, counts[k * per], counts[k * per + 1 : (k + 1) * per]
        return None, 0, []

    # -- fetch ------------------------------------------------------------------------------

    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        frame_bins: str | None = None,
    ) -> Patch:
        """One place: (C,H,W) float32, or (T,C,H,W) when ``n_frames`` asks for equal bins
        or ``frame_bins`` for explicit bins (see ``providers.base.Provider.fetch``)."""
        place = self._place(spatial, sensor.scale_m)
        job = self._job(temporal, sensor, n_frames, frame_bins)
        self.ensure_ready()
        return self._fetch_place(job, place)

    def fetch_many(
        self,
        spatials: Sequence[SpatialSpec],
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        frame_bins: str | None = None,
        max_group: int | None = None,
        max_area_ratio: float | None = None,
        threads: int | None = None,
    ) -> list[Patch | Exception]:
        """Many places, one request for each group of nearby places (spatial batching).

        Places whose grids lie close together are fetched with one request over their union
        grid (see :func:`plan_spatial_batches`; ``max_group``/``max_area_ratio`` default to
        the provider's ``batch_max_group``/``batch_max_area_ratio``) and cut out locally by
        whole-pixel offsets, so each place's pixels equal those of ``fetch`` for it; its meta
        is ``fetch``'s plus ``"batched"``. Places that fit no group are fetched alone, exactly
        as ``fetch`` does. Returns one entry per place, in input order: a Patch, or the
        Exception that place's fetch raised (a group whose request fails gives every place of
        the group that exception). Nothing is raised for a place; an invalid temporal/sensor
        spec or a failed Earth Engine initialisation is returned for every place. ``threads``
        (default ``batch_threads``) fetches that many groups at once.
        """
        spatials = list(spatials)
        n = len(spatials)
        out: list[Patch | Exception | None] = [None] * n
        places: dict[int, _Place] = {}
        for i, sp in enumerate(spatials):
            try:
                places[i] = self._place(sp, sensor.scale_m)
            except Exception as exc:
                out[i] = exc
        if places:
            try:
                job = self._job(temporal, sensor, n_frames, frame_bins)
                self.ensure_ready()
            except Exception as exc:
                for i in places:
                    out[i] = exc
                places = {}
        if places:
            order = list(places)
            groups = plan_spatial_batches(
                [places[i].grid for i in order],
                max_pixels=self._max_pixels(job),
                max_side=self.max_side,
                max_group=self.batch_max_group if max_group is None else int(max_group),
                max_area_ratio=(
                    self.batch_max_area_ratio if max_area_ratio is None else float(max_area_ratio)
                ),
            )
            units = [[order[k] for k in g] for g in groups]

            def run(unit: list[int]) -> list[tuple[int, Patch | Exception]]:
                try:
                    if len(unit) == 1:
                        res: list[Patch | Exception] = [self._fetch_place(job, places[unit[0]])]
                    else:
                        res = self._fetch_group(job, [places[i] for i in unit])
                except Exception as exc:
                    res = [exc] * len(unit)
                return list(zip(unit, res, strict=True))

            n_threads = max(1, int(self.batch_threads if threads is None else threads))
            if n_threads > 1 and len(units) > 1:
                with ThreadPoolExecutor(min(n_threads, len(units))) as pool:
                    done = list(pool.map(run, units))
            else:
                done = [run(u) for u in units]
            for pairs in done:
                for i, res in pairs:
                    out[i] = res
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    def _max_pixels(self, job: _Job) -> int:
        """Pixels one request may carry for this job's bands (what one group may cover)."""
        c = len(job.uniq)
        if job.binned:
            c1 = c + 1  # each bin carries its count band
            bands = min(len(job.bins), max(1, self.max_bands // c1)) * c1
        elif job.bins:
            bands = min(len(job.bins), max(1, self.max_bands // c)) * c
        else:
            bands = c + 1
        return max(1, self.max_request_bytes // (bands * BYTES_PER_VALUE))

    def _start(self) -> int:
        assert self._transport is not None
        self._local.retries = 0
        return self._transport.thread_requests()

    def _spent(self, req0: int) -> tuple[int, int]:
        assert self._transport is not None
        return self._transport.thread_requests() - req0, getattr(self._local, "retries", 0)

    def _fetch_place(self, job: _Job, place: _Place) -> Patch:
        """``fetch`` for one prepared place."""
        req0 = self._start()
        if not job.bins or job.binned:
            return self._fetch_composite_alone(job, place, job.variants, req0)
        region = self._region(place.grid)
        counts = self._counts(self._size_values(job, region), "collection size")
        k, total, bin_counts = self._decide(job, counts)
        if k is None:
            raise self._empty_error(job, place.grid)
        data, n_px = self._fetch_series(job, k, [b == 0 for b in bin_counts], place.grid)
        requests, retries = self._spent(req0)
        return self._finish(
            job, place, data, k, total, bin_counts,
            requests=requests, pixel_requests=n_px, retries=retries,
        )  # fmt: skip

    def _fetch_counted_frames(self, job: _Job, grid: Grid, variant: str) -> tuple[np.ndarray, int]:
        """A single composite as (1, Cu + 1, H, W), or explicit bins as (T, Cu + 1, H, W)."""
        if job.binned:
            return self._fetch_binned(job, grid, variant)
        block, n = self._fetch_counted(job, grid, variant)
        return block[None], n

    @staticmethod
    def _bin_counts(block: np.ndarray) -> list[int]:
        """Per frame of a (T, Cu + 1, h, w) block: the most images covering any pixel."""
        counts = block[:, -1]
        if not counts.size:
            return [0] * int(block.shape[0])
        return [int(c) for c in counts.reshape(counts.shape[0], -1).max(axis=1)]

    def _fetch_composite_alone(
        self, job: _Job, place: _Place, variants: tuple[str, ...], req0: int
    ) -> Patch:
        """Try each variant in turn (S1: strict, then relaxed); 1 request each (per tile).

        Also serves explicit bins (all bins in one request per variant)."""
        n_px = 0
        for v in variants:
            block, n = self._fetch_counted_frames(job, place.grid, v)
            n_px += n
            counts = self._bin_counts(block)
            if sum(counts) > 0:
                requests, retries = self._spent(req0)
                return self._finish(
                    job, place, block[:, :-1], job.variants.index(v), sum(counts),
                    counts if job.binned else [],
                    requests=requests, pixel_requests=n_px, retries=retries,
                )  # fmt: skip
        raise self._empty_error(job, place.grid)

    def _fetch_group(self, job: _Job, places: list[_Place]) -> list[Patch | Exception]:
        """Several places through requests over their union grid (see ``fetch_many``)."""
        if job.bins and not job.binned:
            return self._fetch_group_frames(job, places)
        union = union_grid([p.grid for p in places])
        req0 = self._start()
        try:
            block, n_px = self._fetch_counted_frames(job, union, job.variants[0])
        except Exception as exc:
            return [exc] * len(places)
        requests, retries = self._spent(req0)
        out: list[Patch | Exception] = []
        for p in places:
            r, c = grid_offset(union, p.grid)
            cut = block[..., r : r + p.grid.height, c : c + p.grid.width]
            counts = self._bin_counts(cut)
            if sum(counts) > 0:
                patch = self._finish(
                    job, p, cut[:, :-1], 0, sum(counts), counts if job.binned else [],
                    requests=requests, pixel_requests=n_px, retries=retries,
                )  # fmt: skip
                patch.meta["batched"] = _batched(len(places), union, (r, c), requests)
                out.append(patch)
                continue
            # no image of the first variant here: go on alone as fetch would (S1: the relaxed
            # filter), or fail with fetch's clear "no images" error
            try:
                patch = self._fetch_composite_alone(job, p, job.variants[1:], self._start())
            except Exception as exc:
                out.append(exc)
                continue
            patch.meta["requests"] += requests
            patch.meta["pixel_requests"] += n_px
            patch.meta["retries"] += retries
            patch.meta["batched"] = _batched(len(places), union, (r, c), requests)
            patch.meta["batched"]["refetched_alone"] = True
            out.append(patch)
        return out

    def _fetch_group_frames(self, job: _Job, places: list[_Place]) -> list[Patch | Exception]:
        """Time series: one value:compute for every place's sizes, then one union request
        per set of places that agree on the variant and on which bins are empty."""
        req0 = self._start()
        values_per = [self._size_values(job, self._region(p.grid)) for p in places]
        try:
            counts = self._counts([v for vs in values_per for v in vs], "collection size")
        except Exception as exc:
            return [exc] * len(places)
        shared, shared_retries = self._spent(req0)
        per = len(values_per[0])
        out: list[Patch | Exception | None] = [None] * len(places)
        decided: dict[tuple[int, tuple[bool, ...]], list[int]] = {}
        info: dict[int, tuple[int, int, list[int]]] = {}
        for i, p in enumerate(places):
            k, total, bin_counts = self._decide(job, counts[i * per : (i + 1) * per])
            if k is None:
                try:
                    out[i] = self._empty_error(job, p.grid)
                except Exception as exc:
                    out[i] = exc
                continue
            info[i] = (k, total, bin_counts)
            decided.setdefault((k, tuple(b == 0 for b in bin_counts)), []).append(i)
        for (k, empty), members in decided.items():
            sub = union_grid([places[i].grid for i in members])
            req1 = self._start()
            try:
                data, n_px = self._fetch_series(job, k, list(empty), sub)
            except Exception as exc:
                for i in members:
                    out[i] = exc
                continue
            spent, retries = self._spent(req1)
            for i in members:
                g = places[i].grid
                r, c = grid_offset(sub, g)
                _, total, bin_counts = info[i]
                patch = self._finish(
                    job, places[i], data[:, :, r : r + g.height, c : c + g.width], k, total,
                    bin_counts, requests=shared + spent, pixel_requests=n_px,
                    retries=shared_retries + retries,
                )  # fmt: skip
                patch.meta["batched"] = _batched(len(members), sub, (r, c), shared + spent)
                patch.meta["batched"]["value_group_size"] = len(places)
                out[i] = patch
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    def _finish(
        self,
        job: _Job,
        place: _Place,
        data: np.ndarray,
        k: int,
        total: int,
        bin_counts: list[int],
        *,
        requests: int,
        pixel_requests: int,
        retries: int,
    ) -> Patch:
        """(T, Cu, H, W) on the place's grid -> the Patch ``fetch`` returns."""
        sensor = job.sensor
        meta: dict[str, Any] = {"provider": "gee", "grid": place.grid.to_meta()}
        if place.win != (0.0, 1.0, 0.0, 1.0):
            meta["roi_window_geo"] = list(place.win)
        collection = sensor.collection
        if job.kind == "s1":
            cid = S1_FLOAT if sensor.use_float_linear else S1_DB
            relaxed = job.variants[k] == "relaxed"
            meta.update(
                {
                    "s1_iw_requested": sensor.s1_require_iw,
                    "s1_iw_applied": sensor.s1_require_iw and not relaxed,
                    "s1_iw_relaxed_on_empty": relaxed,
                    "s1_relax_iw_on_empty": sensor.s1_relax_iw_on_empty,
                    "s1_orbit_requested": sensor.orbit,
                    "s1_orbit_applied": (sensor.orbit or "").upper() or None,
                    "s1_collection_used": cid,
                }
            )
            if relaxed:
                log.info("S1: no IW scenes in the window, relaxed the IW filter")
            collection = cid
        meta.update(
            {
                "collection": collection,
                "window": [job.start, job.end],
                "n_images": total,
                "bands": list(job.uniq),
            }
        )
        # (T, Cu, H, W) -> sensor band order (fancy indexing copies: never a view of a union)
        data = data[:, [job.uniq.index(b) for b in job.resolved]]
        if job.binned:
            return self._finish_binned(
                job, data, bin_counts, meta, collection,
                requests=requests, pixel_requests=pixel_requests, retries=retries,
            )  # fmt: skip
        if job.kind == "gse":
            data[data == GSE_FILL] = np.nan
            meta["nodata_fraction"] = float(np.isnan(data).mean()) if data.size else 0.0
        else:
            bad = ~np.isfinite(data)
            if bad.any():
                data[bad] = np.float32(sensor.fill_value)
            if job.bins and S2_PREFIX in collection:
                np.clip(data, 0.0, 10000.0, out=data)
        if job.bins:
            n_back = sum(1 for n in bin_counts if n == 0)
            meta.update(
                {
                    "n_frames_requested": int(job.n_frames or 0),
                    "n_backfilled_frames": n_back,
                    "n_distinct_frames": len(job.bins) - n_back + (1 if n_back else 0),
                    "frames": [
                        {"start": s, "end": e, "empty": n == 0}
                        for (s, e), n in zip(job.bins, bin_counts, strict=True)
                    ],
                }
            )
            if n_back:
                log.info(
                    "%d of %d frames back-filled with the window composite", n_back, len(job.bins)
                )
        else:
            data = data[0]
        meta["requests"] = requests
        meta["pixel_requests"] = pixel_requests
        meta["retries"] = retries
        return Patch(data=np.ascontiguousarray(data, dtype=np.float32), meta=meta)

    @staticmethod
    def _finish_binned(
        job: _Job,
        data: np.ndarray,
        bin_counts: list[int],
        meta: dict[str, Any],
        collection: str,
        *,
        requests: int,
        pixel_requests: int,
        retries: int,
    ) -> Patch:
        """Explicit bins: empty bins become all-NaN frames, the rest are cleaned like a series."""
        sensor = job.sensor
        empty = [n == 0 for n in bin_counts]
        for t, is_empty in enumerate(empty):
            frame = data[t]
            if is_empty:
                frame[...] = np.nan
                continue
            if job.kind == "gse":
                frame[frame == GSE_FILL] = np.nan
                continue
            bad = ~np.isfinite(frame)
            if bad.any():
                frame[bad] = np.float32(sensor.fill_value)
            if S2_PREFIX in collection:
                np.clip(frame, 0.0, 10000.0, out=frame)
        n_empty = sum(empty)
        meta.update(
            {
                "frame_bins": job.frame_bins,
                "n_frames_max": job.n_frames,
                "n_frames": len(job.bins),
                "n_empty": n_empty,
                "temporal_sampling": "equal_divided" if job.stretched else "fixed_stride",
                "frames": [
                    {"start": s, "end": e, "empty": n == 0, "n_images": int(n)}
                    for (s, e), n in zip(job.bins, bin_counts, strict=True)
                ],
                "requests": requests,
                "pixel_requests": pixel_requests,
                "retries": retries,
            }
        )
        if n_empty:
            log.info("%d of %d bins have no image: NaN frames", n_empty, len(job.bins))
        return Patch(data=np.ascontiguousarray(data, dtype=np.float32), meta=meta)

    def _pull(self, image: Any, names: list[str], grid: Grid) -> tuple[np.ndarray, int]:
        """One image's ``names`` bands on ``grid``, tiled within the request limits."""
        out = np.empty((len(names), grid.height, grid.width), dtype=np.float32)
        max_pixels = max(1, self.max_request_bytes // (len(names) * BYTES_PER_VALUE))
        side = max(1, min(self.max_side, max_pixels))
        n_req = 0
        for r0, c0, sub in split_grid(grid, max_pixels, side):
            block, n = self._fetch_tile(image, names, sub)
            n_req += n
            out[:, r0 : r0 + sub.height, c0 : c0 + sub.width] = block
        return out, n_req

    def _fetch_series(
        self, job: _Job, k: int, empty: list[bool], grid: Grid
    ) -> tuple[np.ndarray, int]:
        """Equal-bin time series of variant ``k`` on ``grid`` (empty bins back-filled)."""
        variant = job.variants[k]

        def frames(j: _Job, region: Any) -> list[Any]:
            return self._frame_images(j, self._collection(j, region, variant), empty)

        shape = f"series:{variant}:" + "".join("e" if e else "f" for e in empty)
        return self._fetch_frames(frames, job.uniq, job, grid, shape)

    def _fetch_frames(
        self,
        frames: Callable[[_Job, Any], list[Any]],
        bands: list[str],
        job: _Job,
        grid: Grid,
        shape: str,
    ) -> tuple[np.ndarray, int]:
        """Move the T = len(job.bins) frames ``frames(job, region)`` of len(bands) bands
        onto ``grid``, stacked into as few images as the band limit allows: (T, C, H, W)."""
        import ee

        t, c = len(job.bins), len(bands)
        out = np.empty((t, c, grid.height, grid.width), dtype=np.float32)
        per_req = max(1, self.max_bands // c)
        if c > self.max_bands:
            raise ProviderError(f"{c} bands exceed Earth Engine's {self.max_bands}-band limit.")
        n_req = 0
        for g0 in range(0, t, per_req):
            group = list(range(g0, min(t, g0 + per_req)))
            names = [f"{b}__t{i}" for i in group for b in bands]

            def make(j: _Job, region: Any, group: list[int] = group) -> Any:
                built = frames(j, region)
                return ee.Image.cat([built[i].rename([f"{b}__t{i}" for b in bands]) for i in group])

            image = self._image(f"{shape}:{g0}:{len(group)}", job, grid, make)
            block, n = self._pull(image, names, grid)
            n_req += n
            out[g0 : g0 + len(group)] = block.reshape(len(group), c, grid.height, grid.width)
        return out, n_req

    def _fetch_tile(self, image: Any, names: list[str], sub: Grid, depth: int = 0):
        """computePixels for one tile; splits in two if the server still says it is too big."""
        import ee

        # a templated expression is already serialised: send it without the encode step
        encoded = isinstance(image, gee_template.Encoded)
        send = gee_template.compute_pixels if encoded else ee.data.computePixels
        params: dict[str, Any] = {
            "expression": image.expression if encoded else image,
            "fileFormat": "NUMPY_NDARRAY",
            "grid": {
                "dimensions": {"width": sub.width, "height": sub.height},
                "affineTransform": dict(
                    zip(
                        ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY"),
                        sub.affine,
                        strict=True,
                    )
                ),
                "crsCode": sub.crs,
            },
        }
        if self.workload_tag:
            params["workloadTag"] = self.workload_tag
        try:
            arr = self._call("computePixels", lambda: send(params))
        except ProviderError as exc:
            too_big = "Total request size" in str(exc) or "less than or equal" in str(exc)
            if not too_big or depth >= 8 or (sub.width == 1 and sub.height == 1):
                raise
            halves = split_grid(
                sub,
                max(1, math.ceil(sub.width * sub.height / 2)),
                max(1, math.ceil(sub.width / 2)) if sub.width >= sub.height else sub.width,
            )
            log.info("computePixels tile %dx%d too large; splitting", sub.width, sub.height)
            block = np.empty((len(names), sub.height, sub.width), dtype=np.float32)
            total = 0
            for r0, c0, half in halves:
                part, n = self._fetch_tile(image, names, half, depth + 1)
                block[:, r0 : r0 + half.height, c0 : c0 + half.width] = part
                total += n
            return block, total
        if getattr(arr, "shape", None) != (sub.height, sub.width) or arr.dtype.names is None:
            raise ProviderError(
                f"Earth Engine computePixels returned shape {getattr(arr, 'shape', None)} "
                f"for a {sub.height}x{sub.width} grid."
            )
        missing = [n for n in names if n not in arr.dtype.names]
        if missing:
            raise ProviderError(
                f"Earth Engine computePixels did not return bands {missing}; "
                f"got {list(arr.dtype.names)}."
            )
        block = np.stack([np.asarray(arr[n], dtype=np.float32) for n in names])
        return block, 1

    def close(self) -> None:
        """Close this provider's HTTP sessions (the ee configuration itself is process-wide)."""
        if self._transport is not None:
            self._transport.close()


__all__ = [
    "GEEProvider",
    "DEFAULT_URL",
    "HIGH_VOLUME_URL",
    "URL_ENV",
    "GSE_COLLECTION",
    "GSE_BANDS",
    "MAX_REQUEST_BYTES",
    "MAX_SIDE",
    "N_IMAGES_BAND",
    "DEFAULT_BATCH_MAX_GROUP",
    "DEFAULT_BATCH_MAX_AREA_RATIO",
    "classify_error",
    "plan_spatial_batches",
    "redact",
    "resolve_band",
    "split_date_range",
]
