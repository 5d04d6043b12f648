"""LocalProvider: the thin provider over a local source (``sources`` reads it into scenes,
``files`` keeps rasters open, ``warp`` cuts them onto the grid, ``composite`` combines the
scenes of the window)."""

from __future__ import annotations

import logging
import threading
from datetime import date
from numbers import Integral
from typing import Any

import numpy as np

from rs_embed_ray import geo
from rs_embed_ray.errors import NoImageryError, ProviderError
from rs_embed_ray.providers.base import BaseProvider, Patch
from rs_embed_ray.providers.local import composite as comp
from rs_embed_ray.providers.local.files import DEFAULT_MAX_OPEN, FileCache
from rs_embed_ray.providers.local.index import BandRef, Scene, band_key, find_band, natural_key
from rs_embed_ray.providers.local.rio import Resampling
from rs_embed_ray.providers.local.sources import SourceLoader, SourceState
from rs_embed_ray.providers.local.warp import DEFAULT_RESAMPLING, intersects, resampling, warp
from rs_embed_ray.specs import (
    BBox,
    PointBuffer,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
    parse_frame_bins,
    window_of,
)

log = logging.getLogger(__name__)

KNOWN_OPTIONS = ("bands", "date", "nodata", "resampling", "variable", "max_open_files")


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return f"lon {b[0]:.5f}..{b[2]:.5f}, lat {b[1]:.5f}..{b[3]:.5f}"


def describe_place(spatial: SpatialSpec) -> str:
    if isinstance(spatial, PointBuffer):
        return f"PointBuffer(lon={spatial.lon}, lat={spatial.lat}, buffer_m={spatial.buffer_m})"
    if isinstance(spatial, BBox):
        return (
            f"BBox(minlon={spatial.minlon}, minlat={spatial.minlat}, "
            f"maxlon={spatial.maxlon}, maxlat={spatial.maxlat})"
        )
    return repr(spatial)


def _union(bounds: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )


def _check_request(sensor: SensorSpec, n_frames: int | None, frame_bins: str | None) -> int | None:
    """Validate the request; the explicit bins' length in days, or None."""
    if sensor.composite not in ("median", "mosaic"):
        raise ProviderError(f"unknown composite {sensor.composite!r}; use median or mosaic.")
    if n_frames is not None and (
        isinstance(n_frames, bool) or not isinstance(n_frames, Integral) or n_frames < 1
    ):
        raise ProviderError(f"n_frames must be a positive integer, got {n_frames!r}.")
    try:
        return parse_frame_bins(frame_bins) if frame_bins is not None else None
    except Exception as exc:
        raise ProviderError(str(exc)) from exc


class LocalProvider(BaseProvider):
    """Pixels from local rasters; one instance per fetch actor, ``fetch`` is thread-safe.

    Options (all optional): ``bands`` (names of a single raster's bands in file order, or
    a ``{name: band_number}`` map, when its band descriptions are missing or wrong), ``date``
    (ISO date of a single raster or of undated files), ``nodata`` (a value to treat as missing
    in every file, on top of each file's own nodata/mask), ``resampling`` (a rasterio name or
    a ``{band: name}`` map; default bilinear), ``variable`` (netCDF/Zarr variable of a
    single-file source), ``max_open_files`` (datasets kept open at once, default 256; the
    least recently used are closed and reopened on demand).
    """

    name = "local"

    def __init__(self, source: str, **options: Any) -> None:
        self.source = str(source)
        unknown = sorted(set(options) - set(KNOWN_OPTIONS))
        if unknown:
            log.warning(
                "LocalProvider ignores unknown option(s) %s (known: %s)", unknown, KNOWN_OPTIONS
            )
        self.options = {k: v for k, v in options.items() if k in KNOWN_OPTIONS}
        self._lock = threading.RLock()  # re-entered: parsing a folder opens files
        try:
            max_open = max(1, int(self.options.get("max_open_files", DEFAULT_MAX_OPEN)))
        except (TypeError, ValueError):
            raise ProviderError(
                f"max_open_files must be an integer, got {self.options['max_open_files']!r}."
            ) from None
        self.files = FileCache(max_open, lock=self._lock)
        self._state: SourceState | None = None

    # -- pickling: a provider travels as its source and options, never its open files
    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], **state["options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"LocalProvider(source={self.source!r})"

    def _load(self) -> SourceState:
        """Parse the source once (lazily, so that a bad source fails inside ``fetch``)."""
        st = self._state
        if st is not None:
            return st
        with self._lock:
            if self._state is None:
                self._state = SourceLoader(self.source, self.options, self.files).load()
            return self._state

    def describe(self) -> dict[str, Any]:
        """What the source holds (scenes, dates, bands, lon/lat bounds), for checks and logs."""
        st = self._load()
        bounds = [
            self.files.open(r.path).bounds_lonlat for s in st.scenes for r in s.bands.values()
        ]
        return {
            "source": self.source,
            "kind": st.kind,
            "n_scenes": len(st.scenes),
            "scenes": [
                {"id": s.id, "date": s.date.isoformat() if s.date else None, "bands": list(s.bands)}
                for s in st.scenes
            ],
            "bands": self._all_bands(st),
            "bounds_lonlat": list(_union(bounds)),
        }

    @staticmethod
    def _all_bands(st: SourceState) -> list[str]:
        seen: dict[str, str] = {}
        for s in st.scenes:
            for name in s.bands:
                seen.setdefault(band_key(name), name)
        return sorted(seen.values(), key=natural_key)

    def _resampling_for(self, st: SourceState, band: str) -> Resampling:
        rs = st.resampling
        if isinstance(rs, dict):
            keyed = {band_key(k): v for k, v in rs.items()}
            return resampling(keyed.get(band_key(band), DEFAULT_RESAMPLING))
        return resampling(rs)

    def _select_scenes(
        self, st: SourceState, sensor: SensorSpec, start: date, end: date
    ) -> tuple[list[Scene], list[list[BandRef]]]:
        """Scenes dated in [start, end) that have every band (raises the clear errors)."""
        bands = list(sensor.bands)
        if not bands:
            raise ProviderError("the sensor asks for no bands.")
        missing = [
            b for b in bands if all(find_band(s, b, sensor.collection) is None for s in st.scenes)
        ]
        if missing:
            raise ProviderError(
                f"local source {self.source!r} lacks band(s) {missing} needed for "
                f"{sensor.collection}; available bands: {self._all_bands(st)}. Name them in the "
                "source index (or pass bands=[...] for a single raster)."
            )
        in_window = self._in_window(st, sensor, start, end)
        chosen, refs = [], []
        for s in in_window:
            r = [find_band(s, b, sensor.collection) for b in bands]
            if all(x is not None for x in r):
                chosen.append(s)
                refs.append(r)  # type: ignore[arg-type]
        if not chosen:
            raise ProviderError(
                f"no scene of local source {self.source!r} in [{start}, {end}) has all of the "
                f"bands {bands}; scenes there: {[(s.id, list(s.bands)) for s in in_window]}."
            )
        return chosen, refs  # type: ignore[return-value]

    def _in_window(
        self, st: SourceState, sensor: SensorSpec, start: date, end: date
    ) -> list[Scene]:
        """Scenes of the window (and under ``cloudy_pct``); NoImageryError if none."""
        in_window = [s for s in st.scenes if s.date is None or start <= s.date < end]
        if not in_window:
            dates = sorted({s.date.isoformat() for s in st.scenes if s.date})
            raise NoImageryError(
                f"no scene of local source {self.source!r} in the time window "
                f"[{start}, {end}); scene dates available: {dates}."
            )
        if sensor.cloudy_pct is not None:
            kept = [s for s in in_window if s.cloud_pct is None or s.cloud_pct <= sensor.cloudy_pct]
            if not kept:
                raise NoImageryError(
                    f"all {len(in_window)} scene(s) of local source {self.source!r} in "
                    f"[{start}, {end}) are cloudier than cloudy_pct={sensor.cloudy_pct}."
                )
            in_window = kept
        return in_window

    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        frame_bins: str | None = None,
    ) -> Patch:
        """Cut ``geo.grid_for`` of the place (its fetch square for a BBox) from the scenes.

        Returns (C,H,W) float32 in ``sensor.bands`` order, or (T,C,H,W) with ``n_frames``
        (equal bins) or ``frame_bins`` (explicit bins, an empty one all-NaN; see
        ``providers.base.Provider.fetch``). Missing data becomes ``sensor.fill_value``.
        Every failure is a ProviderError (NoImageryError when no scene serves the place).
        """
        st = self._load()
        days = _check_request(sensor, n_frames, frame_bins)
        square, win = geo.fetch_square(spatial)
        grid = geo.grid_for(square, sensor.scale_m)
        s_iso, e_iso = window_of(temporal)
        start, end = date.fromisoformat(s_iso), date.fromisoformat(e_iso)
        scenes, refs = self._covering(spatial, st, sensor, grid, start, end)
        resamplings = [self._resampling_for(st, b) for b in sensor.bands]
        stack = self._read_stack(st, refs, resamplings, grid)
        meta: dict[str, Any] = {
            "provider": "local",
            "source": self.source,
            "collection": sensor.collection,
            "bands": list(sensor.bands),
            "grid": grid.to_meta(),
            "window": [s_iso, e_iso],
            "composite": sensor.composite,
            "resampling": [rs.name for rs in resamplings],
            "scenes": [s.id for s in scenes],
            "scene_dates": [s.date.isoformat() if s.date else None for s in scenes],
        }
        if win != (0.0, 1.0, 0.0, 1.0):
            meta["roi_window_geo"] = list(win)
        place = describe_place(spatial)
        if days is not None:
            return comp.explicit_bins(
                place, self.source, scenes, stack, sensor, meta, (s_iso, e_iso), days, n_frames
            )
        whole = comp.composite(stack, sensor.composite)
        meta["valid_fraction"] = float(np.isfinite(whole).mean())
        if n_frames is None:
            return Patch(data=comp.fill_missing(whole, sensor), meta=meta)
        return comp.equal_bins(
            place, scenes, stack, whole, sensor, meta, (start, end), int(n_frames)
        )

    def _covering(
        self,
        spatial: SpatialSpec,
        st: SourceState,
        sensor: SensorSpec,
        grid: geo.Grid,
        start: date,
        end: date,
    ) -> tuple[list[Scene], list[list[BandRef]]]:
        """The window's scenes whose files reach the grid, oldest first (a mosaic paints
        later scenes on top)."""
        scenes, refs = self._select_scenes(st, sensor, start, end)
        gb = grid.bounds()
        cover = [
            i
            for i, r in enumerate(refs)
            if any(intersects(gb, self.files.open(x.path).bounds_3857) for x in r)
        ]
        if not cover:
            self._raise_outside(spatial, st, scenes, start, end)
        order = sorted(cover, key=lambda i: (scenes[i].date or date.min, scenes[i].order))
        return [scenes[i] for i in order], [refs[i] for i in order]

    def _read_stack(
        self,
        st: SourceState,
        refs: list[list[BandRef]],
        resamplings: list[Resampling],
        grid: geo.Grid,
    ) -> np.ndarray:
        """(S, C, H, W) float32 of the scenes' bands on the grid, NaN = no data."""
        stack = np.empty((len(refs), len(resamplings), grid.height, grid.width), np.float32)
        for i, r in enumerate(refs):
            groups: dict[tuple[str, Resampling], list[int]] = {}
            for c, (ref, rs) in enumerate(zip(r, resamplings, strict=True)):
                groups.setdefault((ref.path, rs), []).append(c)
            for (path, rs), chans in groups.items():  # one warp per file
                bands = [r[c].band for c in chans]
                stack[i, chans] = warp(self.files, path, bands, grid, rs, st.nodata)
        return stack

    def _raise_outside(
        self, spatial: SpatialSpec, st: SourceState, scenes: list[Scene], start: date, end: date
    ) -> None:
        def bounds_of(scs: list[Scene]) -> tuple[float, float, float, float] | None:
            bs = []
            for s in scs:
                for r in s.bands.values():
                    try:
                        bs.append(self.files.open(r.path).bounds_lonlat)
                    except ProviderError:
                        continue
            return _union(bs) if bs else None

        here = bounds_of(scenes)
        whole = bounds_of(st.scenes)
        msg = (
            f"place {describe_place(spatial)} is outside the footprint of every scene of local "
            f"source {self.source!r}"
        )
        if len(scenes) != len(st.scenes) and here is not None:
            msg += f" dated in [{start}, {end}) ({_fmt_bounds(here)})"
        if whole is not None:
            msg += f"; the source covers {_fmt_bounds(whole)}"
        raise NoImageryError(msg + ".")

    def close(self) -> None:
        """Close every open file; a later ``fetch`` reopens what it needs."""
        self.files.close()
