"""Google Earth Engine provider: composites built server-side, pixels moved with computePixels.

Modules: ``client`` (endpoint, credentials, ee initialisation, the quota-holding transport,
retries), ``failures`` (error classification, redaction), ``job`` (the validated request),
``images`` (collections, composites, S1 fallback, templates via ``template``), ``tiles``
(computePixels within the size limits), ``batching`` (spatial batching), ``patches``
(arrays and meta of the result) and ``provider`` (the thin ``GEEProvider``).

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
  (``providers.gee.template``) and it is sent through the client's own resource, headers and
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

from rs_embed_ray.providers.gee.batching import (
    DEFAULT_BATCH_MAX_AREA_RATIO,
    DEFAULT_BATCH_MAX_GROUP,
    plan_spatial_batches,
)
from rs_embed_ray.providers.gee.client import DEFAULT_URL, HIGH_VOLUME_URL, URL_ENV
from rs_embed_ray.providers.gee.failures import classify_error, redact
from rs_embed_ray.providers.gee.images import N_IMAGES_BAND
from rs_embed_ray.providers.gee.provider import GEEProvider
from rs_embed_ray.providers.gee.tiles import MAX_REQUEST_BYTES, MAX_SIDE
from rs_embed_ray.sensors import GSE_BANDS, GSE_COLLECTION, equal_iso_bins, resolve_band


def split_date_range(start: str, end: str, n: int) -> list[tuple[str, str]]:
    """``n`` equal bins over [start, end) in whole days; the last bin ends at ``end``."""
    return equal_iso_bins(start, end, n)


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
