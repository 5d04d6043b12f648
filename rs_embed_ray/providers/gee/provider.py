"""GEEProvider: the thin provider that glues the Earth Engine pieces together (session and
retries in ``client``, expressions in ``images``, requests in ``tiles``, spatial batching in
``batching``, patches in ``patches``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rs_embed_ray.providers.base import BaseProvider, Patch
from rs_embed_ray.providers.gee.batching import (
    DEFAULT_BATCH_MAX_AREA_RATIO,
    DEFAULT_BATCH_MAX_GROUP,
    fetch_groups,
)
from rs_embed_ray.providers.gee.client import EEClient
from rs_embed_ray.providers.gee.images import ImageBuilder, decide, region, size_values
from rs_embed_ray.providers.gee.job import Job, Place, build_job, make_place
from rs_embed_ray.providers.gee.patches import finish
from rs_embed_ray.providers.gee.tiles import (
    MAX_BANDS,
    MAX_REQUEST_BYTES,
    MAX_SIDE,
    TileFetcher,
    bin_counts,
)
from rs_embed_ray.providers.ratelimit import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_QPS,
    Limiter,
    LocalLimiter,
)
from rs_embed_ray.specs import SensorSpec, SpatialSpec, TemporalSpec


class GEEProvider(BaseProvider):
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
    (``providers.gee.template``; the same request bytes, less client CPU); False builds every
    request with the client.
    """

    name = "gee"
    uses_request_quota = True
    batches_places = True
    checks_before_run = True

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
        self.client = EEClient(
            project=project,
            url=url,
            high_volume=high_volume,
            credentials=credentials,
            limiter=limiter or LocalLimiter(ee_max_concurrent, ee_max_qps),
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            max_retry_after_s=max_retry_after_s,
            timeout_s=timeout_s,
            acquire_timeout_s=acquire_timeout_s,
        )
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
        self._limits = {
            "max_request_bytes": int(max_request_bytes),
            "max_side": int(max_side),
            "max_bands": int(max_bands),
            "workload_tag": workload_tag,
        }
        self._setup_runtime()

    def _setup_runtime(self) -> None:
        self.images = ImageBuilder(self.client, self.request_templates)
        self.tiles = TileFetcher(self.client, self.images, **self._limits)  # type: ignore[arg-type]

    # pickling: ship the configuration, not locks or sessions (Ray actors rebuild them)
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("images", "tiles")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup_runtime()

    # what callers and tests read of the session
    @property
    def url(self) -> str:
        return self.client.url

    @property
    def emulator(self) -> bool:
        return self.client.emulator

    @property
    def project(self) -> str | None:
        return self.client.project

    @property
    def limiter(self) -> Limiter:
        return self.client.limiter

    def template_stats(self) -> dict[str, int]:
        """Requests whose expression came from a template vs built by the client (see
        ``providers.gee.template``); empty when templates are off."""
        templates = self.images.templates
        return dict(templates.stats) if templates is not None else {}

    def ensure_ready(self) -> None:
        """Initialise the ee library for this provider (once; again if another one took over)."""
        self.client.ensure_ready()

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
        place = make_place(spatial, sensor.scale_m)
        job = build_job(temporal, sensor, n_frames, frame_bins)
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
        out: dict[int, Patch | Exception] = {}
        places: dict[int, Place] = {}
        for i, sp in enumerate(spatials):
            try:
                places[i] = make_place(sp, sensor.scale_m)
            except Exception as exc:
                out[i] = exc
        if places:
            try:
                job = build_job(temporal, sensor, n_frames, frame_bins)
                self.ensure_ready()
            except Exception as exc:
                out.update(dict.fromkeys(places, exc))
                places = {}
        if places:
            out.update(
                fetch_groups(
                    self,
                    job,
                    places,
                    max_group=self.batch_max_group if max_group is None else int(max_group),
                    max_area_ratio=(
                        self.batch_max_area_ratio
                        if max_area_ratio is None
                        else float(max_area_ratio)
                    ),
                    threads=max(1, int(self.batch_threads if threads is None else threads)),
                )
            )
        return [out[i] for i in range(len(spatials))]

    def _fetch_place(self, job: Job, place: Place) -> Patch:
        """``fetch`` for one prepared place."""
        req0 = self.client.start()
        if not job.bins or job.binned:
            return self._fetch_composite_alone(job, place, job.variants, req0)
        counts = self.client.counts(size_values(job, region(place.grid)), "collection size")
        k, total, bins = decide(job, counts)
        if k is None:
            raise self.images.empty_error(job, place.grid)
        data, n_px = self.tiles.fetch_series(job, k, [b == 0 for b in bins], place.grid)
        requests, retries = self.client.spent(req0)
        return finish(
            job, place, data, k, total, bins,
            requests=requests, pixel_requests=n_px, retries=retries,
        )  # fmt: skip

    def _fetch_composite_alone(
        self, job: Job, place: Place, variants: tuple[str, ...], req0: int
    ) -> Patch:
        """Try each variant in turn (S1: strict, then relaxed); 1 request each (per tile).

        Also serves explicit bins (all bins in one request per variant)."""
        n_px = 0
        for v in variants:
            block, n = self.tiles.fetch_counted_frames(job, place.grid, v)
            n_px += n
            counts = bin_counts(block)
            if sum(counts) > 0:
                requests, retries = self.client.spent(req0)
                return finish(
                    job, place, block[:, :-1], job.variants.index(v), sum(counts),
                    counts if job.binned else [],
                    requests=requests, pixel_requests=n_px, retries=retries,
                )  # fmt: skip
        raise self.images.empty_error(job, place.grid)

    def close(self) -> None:
        """Close this provider's HTTP sessions (the ee configuration itself is process-wide)."""
        self.client.close()
