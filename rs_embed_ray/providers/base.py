"""Provider protocol: where pixels come from. Pure Python, no ray.

A provider knows nothing of models. It returns raw-unit float32 arrays in the band order of
the SensorSpec it was given, on the EPSG:3857 grid of ``rs_embed_ray.geo.grid_for``.

The protocol is everything the pipeline calls, so the pipeline never asks which backend it
has: capabilities are class attributes (``uses_request_quota``, ``batches_places``,
``checks_before_run``) and every method has a default in :class:`BaseProvider`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from rs_embed_ray.specs import SensorSpec, SpatialSpec, TemporalSpec


@dataclass
class Patch:
    """Pixels for one place: (C,H,W) or (T,C,H,W) float32 in raw units, plus JSON-able meta."""

    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """One instance per fetch actor; ``fetch`` may be called from several threads.

    Capabilities (class attributes, readable without an instance through
    ``providers.provider_class``):

    * ``uses_request_quota``: requests count against a service's quota; the pipeline then
      caps fetches in flight and passes a ``limiter`` provider option (``ratelimit.Limiter``).
    * ``batches_places``: ``fetch_many`` shares requests between nearby places (the
      pipeline uses it when spatial batching is asked for; else it calls ``fetch`` per place).
    * ``checks_before_run``: ``ensure_ready`` checks something outside the process
      (credentials, a project), worth doing once in the driver before any work starts.
    """

    name: str
    uses_request_quota: bool
    batches_places: bool
    checks_before_run: bool

    def ensure_ready(self) -> None:
        """Authenticate / check the source once before work; raise ProviderError if not."""
        ...

    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        frame_bins: str | None = None,
    ) -> Patch:
        """Fetch one place. ``n_frames`` asks for an equal-bin time series (T,C,H,W).

        ``frame_bins`` (e.g. ``"30d"``) asks instead for explicit bins of that many days
        anchored at the window start (``specs.fixed_day_bins``; ``n_frames`` caps their
        count, a longer window being divided equally). Each bin is an independent
        composite; a bin without imagery is an all-NaN frame; at least one bin must have
        data (else ``errors.NoImageryError``). Meta: ``frames=[{start, end, empty}]``,
        ``n_empty``.
        """
        ...

    def fetch_many(
        self,
        spatials: Sequence[SpatialSpec],
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        frame_bins: str | None = None,
        threads: int | None = None,
    ) -> list[Patch | Exception]:
        """Many places of one window: one entry per place, in order, a Patch or the
        Exception its fetch raised (nothing is raised for a single place)."""
        ...

    def close(self) -> None: ...


class BaseProvider:
    """Defaults of the protocol: no check before work, ``fetch_many`` one place at a time,
    nothing to close. Providers inherit it and override what they do better."""

    name: ClassVar[str] = "base"
    uses_request_quota: ClassVar[bool] = False
    batches_places: ClassVar[bool] = False
    checks_before_run: ClassVar[bool] = False

    def ensure_ready(self) -> None:
        """Nothing to check by default (a bad source fails inside ``fetch``)."""

    def fetch(self, spatial: SpatialSpec, *args: Any, **kw: Any) -> Patch:
        """See ``Provider.fetch``; every provider implements it."""
        raise NotImplementedError

    def fetch_many(
        self, spatials: Sequence[SpatialSpec], *args: Any, threads: int | None = None, **kw: Any
    ) -> list[Patch | Exception]:
        """Each place through ``fetch(spatial, *args, **kw)``, in order; a failing place gives
        its exception (``threads`` is a hint providers that batch may use)."""
        out: list[Patch | Exception] = []
        for spatial in spatials:
            try:
                out.append(self.fetch(spatial, *args, **kw))
            except Exception as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        """Nothing held by default."""


class ProviderAdapter(BaseProvider):
    """Completes a provider-like object that implements only part of the protocol (a
    wrapper, a third-party class): missing methods and capabilities take the defaults."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)  # type: ignore[misc]
        for cap in ("uses_request_quota", "batches_places", "checks_before_run"):
            setattr(self, cap, bool(getattr(inner, cap, False)))

    def ensure_ready(self) -> None:
        check = getattr(self.inner, "ensure_ready", None)
        if check is not None:
            check()

    def fetch(self, spatial: SpatialSpec, *args: Any, **kw: Any) -> Patch:
        return self.inner.fetch(spatial, *args, **kw)

    def fetch_many(self, spatials: Sequence[SpatialSpec], *args: Any, **kw: Any) -> Any:
        many = getattr(self.inner, "fetch_many", None)
        if many is not None:
            return many(spatials, *args, **kw)
        return super().fetch_many(spatials, *args, **kw)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def complete(provider: Any) -> BaseProvider:
    """``provider`` itself if it inherits the defaults, else wrapped in ``ProviderAdapter``."""
    return provider if isinstance(provider, BaseProvider) else ProviderAdapter(provider)
