"""Provider protocol: where pixels come from. Pure Python, no ray.

A provider knows nothing of models. It returns raw-unit float32 arrays in the band order of
the SensorSpec it was given, on the EPSG:3857 grid of ``rs_embed_ray.geo.grid_for``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rs_embed_ray.specs import SensorSpec, SpatialSpec, TemporalSpec


@dataclass
class Patch:
    """Pixels for one place: (C,H,W) or (T,C,H,W) float32 in raw units, plus JSON-able meta."""

    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """One instance per fetch actor; ``fetch`` may be called from several threads."""

    name: str

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
        data. Meta: ``frames=[{start, end, empty}]``, ``n_empty``.
        """
        ...

    def close(self) -> None: ...
