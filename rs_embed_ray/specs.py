"""Frozen request specs (places, time windows, sensors, outputs, input prep).

Names, fields, defaults and validation messages follow rs-embed's export contract so that
code written for rs-embed runs unchanged; the known defects of the anchor (a range
TemporalSpec carrying a function object, misleading year errors) are fixed here.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, Literal

from rs_embed_ray.errors import ModelError, SpecError

DEFAULT_WINDOW = ("2022-06-01", "2022-09-01")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _finite(value: Any, what: str) -> float:
    if isinstance(value, (str, bytes, bool)):  # float("15") would pass, and fail far later
        raise SpecError(f"{what} must be a number, got {type(value).__name__} {value!r:.40}.")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(out):
        raise SpecError(f"{what} must be a finite number, got {value!r}.")
    return out


@dataclass(frozen=True)
class BBox:
    """A lon/lat box in EPSG:4326."""

    minlon: float
    minlat: float
    maxlon: float
    maxlat: float
    crs: str = "EPSG:4326"

    def validate(self) -> None:
        if self.crs != "EPSG:4326":
            raise SpecError("BBox currently must be EPSG:4326 (v0.1).")
        vals = [
            _finite(getattr(self, k), f"BBox.{k}") for k in ("minlon", "minlat", "maxlon", "maxlat")
        ]
        minlon, minlat, maxlon, maxlat = vals
        if not (-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90):
            raise SpecError(
                f"Invalid bbox bounds: ({minlon}, {minlat}, {maxlon}, {maxlat}); need "
                "-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90."
            )

    def center(self) -> tuple[float, float]:
        return ((self.minlon + self.maxlon) / 2.0, (self.minlat + self.maxlat) / 2.0)


@dataclass(frozen=True)
class PointBuffer:
    """A square around a point; half-side ``buffer_m`` in EPSG:3857 metres."""

    lon: float
    lat: float
    buffer_m: float
    crs: str = "EPSG:4326"

    def validate(self) -> None:
        if self.crs != "EPSG:4326":
            raise SpecError("PointBuffer currently must be EPSG:4326 (v0.1).")
        lon = _finite(self.lon, "PointBuffer.lon")
        lat = _finite(self.lat, "PointBuffer.lat")
        buf = _finite(self.buffer_m, "PointBuffer.buffer_m")
        # The anchor does not check ranges; an out-of-range point can only fail later and
        # far from the user's input, so it is rejected here.
        if not -180 <= lon <= 180:
            raise SpecError(f"PointBuffer.lon must be within [-180, 180], got {lon}.")
        if not -90 <= lat <= 90:
            raise SpecError(f"PointBuffer.lat must be within [-90, 90], got {lat}.")
        if buf <= 0:
            raise SpecError("buffer_m must be positive.")

    def center(self) -> tuple[float, float]:
        return (float(self.lon), float(self.lat))


SpatialSpec = BBox | PointBuffer


def _parse_iso(value: str, what: str) -> date:
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise SpecError(
            f"TemporalSpec.range requires ISO dates (YYYY-MM-DD); got {what}={value!r}."
        )
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SpecError(
            f"TemporalSpec.range requires ISO dates (YYYY-MM-DD); got {what}={value!r}."
        ) from None


@dataclass(frozen=True)
class TemporalSpec:
    """A time window: ``year`` mode (a calendar year) or ``range`` mode ([start, end))."""

    mode: Literal["year", "range"]
    year: int | None = None
    start: str | None = None
    end: str | None = None

    @staticmethod
    def range(start: str, end: str) -> TemporalSpec:
        return TemporalSpec(mode="range", start=start, end=end)

    def validate(self) -> None:
        if self.mode == "year":
            if self.year is None:
                raise SpecError("TemporalSpec.year requires year.")
            if isinstance(self.year, bool) or not isinstance(self.year, int):
                raise SpecError("TemporalSpec.year requires an integer year.")
            if not 1 <= self.year <= 9999:
                raise SpecError(f"TemporalSpec.year must be within [1, 9999], got {self.year}.")
        elif self.mode == "range":
            if self.start is None or self.end is None:
                raise SpecError("TemporalSpec.range requires start and end.")
            s = _parse_iso(self.start, "start")
            e = _parse_iso(self.end, "end")
            if not s < e:
                raise SpecError(
                    f"TemporalSpec.range requires start < end; got {self.start} .. {self.end}."
                )
        else:
            raise SpecError(f"Unknown TemporalSpec mode: {self.mode}")

    def window(self) -> tuple[str, str]:
        """Half-open [start, end) as ISO dates."""
        if self.mode == "year":
            return (f"{self.year:04d}-01-01", f"{self.year + 1:04d}-01-01")
        return (str(self.start), str(self.end))


class _YearAccessor:
    """``TemporalSpec.year(2022)`` builds a spec; ``spec.year`` is the field.

    The anchor defined a static method named ``year`` that became the field's default, so
    every range spec carried a function object. A non-data descriptor set after the
    dataclass is built gives both spellings without touching the field's default.
    """

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:

            def year(y: int) -> TemporalSpec:
                return TemporalSpec(mode="year", year=y)

            return year
        return obj.__dict__.get("year")


TemporalSpec.year = _YearAccessor()  # type: ignore[assignment,method-assign]


def window_of(temporal: TemporalSpec | None) -> tuple[str, str]:
    """The fetch window; ``None`` means the package default window."""
    return temporal.window() if temporal is not None else DEFAULT_WINDOW


_FRAME_BINS = re.compile(r"^\s*(\d+)\s*d\s*$", re.IGNORECASE)


def parse_frame_bins(frame_bins: str) -> int:
    """Days per bin of a ``frame_bins`` spec (``"30d"`` -> 30); anything else is a SpecError."""
    m = _FRAME_BINS.match(str(frame_bins))
    if m is None or int(m.group(1)) < 1:
        raise SpecError(
            f"frame_bins must look like '30d' (whole days per bin), got {frame_bins!r}."
        )
    return int(m.group(1))


def fixed_day_bins(
    start: str, end: str, days: int, max_bins: int | None = None
) -> tuple[list[tuple[str, str]], bool]:
    """Bins of ``days`` days anchored at ``start`` over [start, end); the last ends at ``end``.

    Why: explicit-bin models (olmoearth) were pretrained on fixed ~monthly steps counted from
    the window start. A window that needs more than ``max_bins`` such bins is instead split
    into ``max_bins`` equal whole-day bins (bounds ``start + (days_total * i) // n``, as the
    equal-division series), so the whole window is still covered. Returns ``(bins,
    stretched)`` with ISO-date pairs; ``stretched`` says the equal division was used.
    """
    d0, d1 = date.fromisoformat(str(start)), date.fromisoformat(str(end))
    total = (d1 - d0).days
    if total < 1:
        raise SpecError(f"the window {start} .. {end} holds no whole day.")
    if days < 1:
        raise SpecError(f"days per bin must be >= 1, got {days}.")
    n = -(-total // days)
    stretched = max_bins is not None and n > int(max_bins)
    if stretched:
        n = int(max_bins)  # type: ignore[arg-type]
        bounds = [d0.toordinal() + (total * i) // n for i in range(n)] + [d1.toordinal()]
    else:
        bounds = [d0.toordinal() + days * i for i in range(n)] + [d1.toordinal()]
    bins = [
        (date.fromordinal(bounds[i]).isoformat(), date.fromordinal(bounds[i + 1]).isoformat())
        for i in range(n)
    ]
    return bins, bool(stretched)


@dataclass(frozen=True)
class SensorSpec:
    """What a provider must fetch: collection, bands and compositing rules."""

    collection: str
    bands: tuple[str, ...]
    scale_m: int = 10
    cloudy_pct: int | None = 30
    fill_value: float = 0.0
    composite: Literal["median", "mosaic"] = "median"
    modality: str | None = None
    orbit: str | None = None
    use_float_linear: bool = True
    s1_require_iw: bool = True
    s1_relax_iw_on_empty: bool = True
    check_input: bool = False
    check_raise: bool = True
    check_save_dir: str | None = None

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so specs stay hashable.
        if not isinstance(self.bands, tuple):
            object.__setattr__(self, "bands", tuple(self.bands))

    def identity(self) -> dict[str, Any]:
        """Fields that decide which pixels come back (the cache identity)."""
        return {
            "collection": self.collection,
            "bands": list(self.bands),
            "scale_m": int(self.scale_m),
            "cloudy_pct": None if self.cloudy_pct is None else int(self.cloudy_pct),
            "fill_value": float(self.fill_value),
            "composite": str(self.composite),
            "modality": self.modality,
            "orbit": self.orbit,
            "use_float_linear": bool(self.use_float_linear),
            "s1_require_iw": bool(self.s1_require_iw),
            "s1_relax_iw_on_empty": bool(self.s1_relax_iw_on_empty),
        }


@dataclass(frozen=True)
class FetchSpec:
    """Light override of a model's default sensor."""

    scale_m: int | None = None
    cloudy_pct: int | None = None
    fill_value: float | None = None
    composite: Literal["median", "mosaic"] | None = None

    def apply(self, sensor: SensorSpec) -> SensorSpec:
        kw: dict[str, Any] = {}
        if self.scale_m is not None:
            kw["scale_m"] = int(self.scale_m)
        if self.cloudy_pct is not None:
            kw["cloudy_pct"] = int(self.cloudy_pct)
        if self.fill_value is not None:
            kw["fill_value"] = float(self.fill_value)
        if self.composite is not None:
            kw["composite"] = str(self.composite)
        return replace(sensor, **kw)


_OUTPUT_MODES = ("grid", "pooled")
_POOLINGS = ("mean", "max")
_ORIENTATIONS = ("north_up", "native")


def _reject_ctor_kwargs(ctor: str, kw: dict[str, Any]) -> None:
    if "scale_m" in kw:
        raise SpecError(
            "OutputSpec.scale_m is no longer supported. Use fetch=FetchSpec(scale_m=...) "
            "or sensor=SensorSpec(scale_m=...) instead."
        )
    if kw:
        raise SpecError(f"Unexpected OutputSpec.{ctor}() keyword(s): {sorted(kw)}")


@dataclass(frozen=True)
class OutputSpec:
    """Pooled vector (D,) per place, or a grid (D, H, W)."""

    mode: Literal["grid", "pooled"]
    pooling: Literal["mean", "max"] = "mean"
    grid_orientation: Literal["north_up", "native"] = "north_up"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.mode not in _OUTPUT_MODES:
            raise SpecError(f"Unknown output mode: {self.mode!r} (use 'pooled' or 'grid').")
        if self.pooling not in _POOLINGS:
            raise SpecError(f"Unknown pooling: {self.pooling!r} (use 'mean' or 'max').")
        if self.grid_orientation not in _ORIENTATIONS:
            raise SpecError(
                f"Unknown grid_orientation: {self.grid_orientation!r} (use 'north_up' or 'native')."
            )

    @staticmethod
    def pooled(pooling: str = "mean", **kw: Any) -> OutputSpec:
        _reject_ctor_kwargs("pooled", kw)
        return OutputSpec(mode="pooled", pooling=pooling)  # type: ignore[arg-type]

    @staticmethod
    def grid(*, grid_orientation: str = "north_up", **kw: Any) -> OutputSpec:
        _reject_ctor_kwargs("grid", kw)
        return OutputSpec(mode="grid", grid_orientation=grid_orientation)  # type: ignore[arg-type]


@dataclass(frozen=True)
class InputPrepSpec:
    """How inputs larger than the model's input size are handled (tile / resize / auto)."""

    mode: Literal["tile", "resize", "auto"] = "tile"
    tile_size: int | None = None
    tile_stride: int | None = None
    max_tiles: int = 64
    max_tiles_hard: int = 1024
    pad_edges: bool = True
    tile_snap_frac: float = 0.1

    @staticmethod
    def tile(**kw: Any) -> InputPrepSpec:
        return InputPrepSpec(mode="tile", **kw)

    @staticmethod
    def auto(**kw: Any) -> InputPrepSpec:
        return InputPrepSpec(mode="auto", **kw)

    @staticmethod
    def resize() -> InputPrepSpec:
        return InputPrepSpec(mode="resize")


def resolve_input_prep(value: InputPrepSpec | str | None) -> InputPrepSpec:
    """Normalise the ``input_prep`` argument (strings, None, spec) with clamped fields."""
    if value is None:
        return InputPrepSpec()
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in ("auto", "resize", "tile"):
            raise ModelError(f"input_prep string must be 'auto'/'resize'/'tile', got {value!r}")
        value = InputPrepSpec(mode=key)  # type: ignore[arg-type]
    if not isinstance(value, InputPrepSpec):
        raise ModelError(
            f"input_prep must be a string or InputPrepSpec, got {type(value).__name__}."
        )
    mode = str(value.mode).strip().lower()
    if mode not in ("auto", "resize", "tile"):
        raise ModelError(f"input_prep.mode must be one of auto/resize/tile, got {value.mode!r}")
    if value.tile_size is not None and int(value.tile_size) <= 0:
        raise ModelError(f"input_prep.tile_size must be > 0, got {value.tile_size}")
    if value.tile_stride is not None and int(value.tile_stride) <= 0:
        raise ModelError(f"input_prep.tile_stride must be > 0, got {value.tile_stride}")
    if (
        value.tile_stride is not None
        and value.tile_size is not None
        and int(value.tile_stride) != int(value.tile_size)
    ):
        raise ModelError(
            "Current tiled input preprocessing supports tile_stride == tile_size only; "
            f"got tile_size={value.tile_size}, tile_stride={value.tile_stride}."
        )
    snap = float(value.tile_snap_frac)
    env = os.environ.get("RS_EMBED_TILE_SNAP_FRAC")
    if env is not None:
        try:
            snap = float(env)
        except ValueError:
            raise ModelError(f"RS_EMBED_TILE_SNAP_FRAC must be a float, got {env!r}") from None
        if not 0 <= snap <= 0.5:
            raise ModelError(f"RS_EMBED_TILE_SNAP_FRAC must be within [0, 0.5], got {snap}")
    max_tiles = max(1, int(value.max_tiles))
    return replace(
        value,
        mode=mode,  # type: ignore[arg-type]
        max_tiles=max_tiles,
        max_tiles_hard=max(max_tiles, int(value.max_tiles_hard)),
        tile_snap_frac=min(0.5, max(0.0, snap)),
    )


def validate_spatials(spatials: Any) -> list[SpatialSpec]:
    """A real, non-empty list of BBox / PointBuffer, each valid (index in the message)."""
    if not isinstance(spatials, list) or not spatials:
        raise ModelError("spatials must be a non-empty list[SpatialSpec].")
    for i, s in enumerate(spatials):
        if not isinstance(s, (BBox, PointBuffer)):
            raise ModelError(f"Invalid spatial spec type at index {i}: {type(s).__name__}")
        try:
            s.validate()
        except SpecError as exc:
            raise SpecError(f"spatials[{i}]: {exc}") from None
    return spatials


def spatial_to_dict(spatial: SpatialSpec) -> dict[str, Any]:
    """A tagged dict (the manifest form plus ``type``) for passing places between processes."""
    kind = "PointBuffer" if isinstance(spatial, PointBuffer) else "BBox"
    return {"type": kind, **{k: getattr(spatial, k) for k in spatial.__dataclass_fields__}}


def spatial_from_dict(d: dict[str, Any]) -> SpatialSpec:
    d = dict(d)
    kind = d.pop("type", None) or ("PointBuffer" if "lon" in d else "BBox")
    return PointBuffer(**d) if kind == "PointBuffer" else BBox(**d)


def temporal_from_dict(d: dict[str, Any] | None) -> TemporalSpec | None:
    if d is None:
        return None
    return TemporalSpec(mode=d["mode"], year=d.get("year"), start=d.get("start"), end=d.get("end"))


__all__ = [
    "BBox",
    "PointBuffer",
    "SpatialSpec",
    "TemporalSpec",
    "SensorSpec",
    "FetchSpec",
    "OutputSpec",
    "InputPrepSpec",
    "resolve_input_prep",
    "validate_spatials",
    "spatial_to_dict",
    "spatial_from_dict",
    "temporal_from_dict",
    "window_of",
    "fixed_day_bins",
    "parse_frame_bins",
    "DEFAULT_WINDOW",
]
