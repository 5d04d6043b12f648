"""What one Earth Engine fetch asks for, validated once: the window, bands, bins and
collection variants shared by every place of a request (``Job``), and one place's grid
(``Place``). Pure: no Earth Engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rs_embed_ray.errors import ProviderError, SpecError
from rs_embed_ray.geo import Grid, fetch_square, grid_for
from rs_embed_ray.sensors import (
    GSE_BANDS,
    GSE_COLLECTION,
    GSE_FILL,
    S1_DB,
    equal_iso_bins,
    resolve_band,
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

COMPOSITES = ("median", "mosaic")


@dataclass(frozen=True)
class Job:
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
class Place:
    spatial: SpatialSpec
    grid: Grid
    win: tuple[float, float, float, float]


def sensor_kind(sensor: SensorSpec) -> str:
    """``gse`` (annual embeddings), ``s1`` (radar, IW/polarisation filters) or ``optical``."""
    c = sensor.collection
    if c == GSE_COLLECTION or (sensor.modality or "").lower() == "gse":
        return "gse"
    if c.startswith(S1_DB):
        return "s1"
    return "optical"


def check_orbit(sensor: SensorSpec) -> str | None:
    """The S1 orbit filter (upper case), or None; raises for anything else."""
    orbit = (sensor.orbit or "").upper() or None
    if orbit is not None and orbit not in ("ASCENDING", "DESCENDING"):
        raise SpecError(f"SensorSpec.orbit must be ASCENDING or DESCENDING, got {orbit!r}.")
    return orbit


def _window(kind: str, temporal: TemporalSpec | None) -> tuple[str, str]:
    if kind != "gse":
        return window_of(temporal)
    if temporal is None:
        raise ProviderError("gse needs a TemporalSpec (TemporalSpec.year(YYYY)).")
    year = temporal.year if temporal.mode == "year" else int(str(temporal.start)[:4])
    if temporal.mode != "year":
        log.warning("gse is annual: using the start year %s of the range", year)
    return f"{year:04d}-01-01", f"{year + 1:04d}-01-01"


def build_job(
    temporal: TemporalSpec | None,
    sensor: SensorSpec,
    n_frames: int | None,
    frame_bins: str | None = None,
) -> Job:
    """Everything about a fetch except the place; raises for an invalid request."""
    if temporal is not None:
        temporal.validate()
    if n_frames is not None and int(n_frames) < 1:
        raise SpecError(f"n_frames must be >= 1, got {n_frames}.")
    days = parse_frame_bins(frame_bins) if frame_bins is not None else None
    kind = sensor_kind(sensor)
    start, end = _window(kind, temporal)
    bands_out = tuple(sensor.bands) or (GSE_BANDS if kind == "gse" else ())
    if not bands_out:
        raise SpecError(f"SensorSpec.bands is empty for {sensor.collection!r}.")
    composite = "mosaic" if kind == "gse" else sensor.composite
    if composite not in COMPOSITES:
        raise SpecError(f"Unknown composite {composite!r} (use 'median' or 'mosaic').")
    if kind == "s1":
        check_orbit(sensor)
        relax = sensor.s1_require_iw and sensor.s1_relax_iw_on_empty
        variants = ("strict", "relaxed") if relax else ("strict",)
    else:
        variants = ("main",)
    resolved = [resolve_band(sensor.collection, b) for b in bands_out]
    stretched = False
    if days is not None:
        bins, stretched = fixed_day_bins(start, end, days, int(n_frames) if n_frames else None)
    else:
        bins = equal_iso_bins(start, end, int(n_frames)) if n_frames else []
    return Job(
        sensor=sensor,
        kind=kind,
        start=start,
        end=end,
        resolved=resolved,
        uniq=list(dict.fromkeys(resolved)),
        bins=bins,
        n_frames=int(n_frames) if n_frames else None,
        composite=composite,
        fill=GSE_FILL if kind == "gse" else float(sensor.fill_value),
        variants=variants,
        binned=days is not None,
        frame_bins=frame_bins if days is not None else None,
        stretched=stretched,
    )


def make_place(spatial: SpatialSpec, scale_m: float) -> Place:
    spatial.validate()
    square, win = fetch_square(spatial)
    return Place(spatial=spatial, grid=grid_for(square, scale_m), win=win)
