"""Reading a source into scenes: an index file (``index``), a folder of dated rasters, a
single raster (GeoTIFF-like, or a netCDF/Zarr cube with one scene per time step), plus the
source-wide settings (nodata, resampling, a date for undated files). Runs once per provider."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.local.files import FileCache, rio_open
from rs_embed_ray.providers.local.index import (
    DATE_IN_NAME,
    INDEX_NAMES,
    NAME_RE,
    RASTER_SUFFIXES,
    BandRef,
    Scene,
    band_key,
    gdal_name,
    layer_dates,
    parse_csv_index,
    parse_date,
    parse_json_index,
)
from rs_embed_ray.providers.local.warp import DEFAULT_RESAMPLING, resampling

log = logging.getLogger(__name__)


@dataclass
class SourceState:
    scenes: list[Scene] = field(default_factory=list)
    nodata: float | None = None
    resampling: Any = DEFAULT_RESAMPLING
    kind: str = ""


class SourceLoader:
    """Parses ``source`` with the provider's options, opening rasters through ``files``."""

    def __init__(self, source: str, options: dict[str, Any], files: FileCache) -> None:
        self.source = source
        self.options = options
        self.files = files

    def load(self) -> SourceState:
        src = Path(self.source).expanduser()
        opts = self.options
        st = SourceState(nodata=opts.get("nodata"), resampling=opts.get("resampling"))
        gdal = re.match(r"^[A-Z0-9_]+:", self.source) is not None
        if not src.exists() and not gdal:
            raise ProviderError(f"local source {self.source!r} does not exist.")
        settings = self._read_scenes(st, src)
        self._settle(st, settings)
        log.info(
            "local source %s: %d scene(s) (%s), dates %s",
            self.source,
            len(st.scenes),
            st.kind,
            sorted({s.date.isoformat() for s in st.scenes if s.date}) or "none",
        )
        return st

    def _read_scenes(self, st: SourceState, src: Path) -> dict[str, Any]:
        """Fill ``st.scenes`` / ``st.kind``; return an index file's source-wide settings."""
        settings: dict[str, Any] = {}
        if src.is_dir() and src.suffix.lower() != ".zarr":
            for name in INDEX_NAMES:
                if (src / name).is_file():
                    src = src / name
                    break
        if src.is_file() and src.suffix.lower() == ".json":
            st.scenes, settings = parse_json_index(src)
            st.kind = "index:json"
        elif src.is_file() and src.suffix.lower() == ".csv":
            st.scenes = parse_csv_index(src)
            st.kind = "index:csv"
        elif src.is_dir() and src.suffix.lower() != ".zarr":
            st.scenes = self._scan_folder(src)
            st.kind = "folder"
        else:
            st.scenes = self._raster_scenes(src)
            st.kind = "raster"
        return settings

    def _settle(self, st: SourceState, settings: dict[str, Any]) -> None:
        """nodata / resampling from the options, else the index; a date for undated scenes."""
        opts = self.options
        if st.nodata is None:
            st.nodata = settings.get("nodata")
        if st.nodata is not None:
            try:
                st.nodata = float(st.nodata)
            except (TypeError, ValueError):
                raise ProviderError(f"nodata must be a number, got {st.nodata!r}.") from None
        if st.resampling is None:
            st.resampling = settings.get("resampling", DEFAULT_RESAMPLING)
        # validate resampling names now, not per place
        rs = st.resampling
        for name in rs.values() if isinstance(rs, dict) else [rs]:
            resampling(name)
        if opts.get("date") is not None:
            d = parse_date(opts["date"], "option date")
            for sc in st.scenes:
                if sc.date is None:
                    sc.date = d

    def _raster_scenes(self, path: Path) -> list[Scene]:
        """Scenes of one raster: a GeoTIFF-like file (one scene, bands named by ``bands=`` or
        the band descriptions) or a netCDF/Zarr cube (one band per variable, one scene per
        time step)."""
        opts = self.options
        name = str(path) if path.exists() else self.source
        if opts.get("variable"):
            var = str(opts["variable"])
            return self._cube_scenes({var: gdal_name(Path.cwd(), name, var)})
        with rio_open(name) as ds:
            driver, count, subs = ds.driver, ds.count, list(ds.subdatasets)
            varname = ds.tags(1).get("NETCDF_VARNAME") if count else None
        cube = driver in ("netCDF", "Zarr", "HDF5")
        if subs and (count == 0 or cube):  # a container of variables
            variables = {}
            for sub in subs:
                var = re.split(r"[:/]", sub)[-1]
                variables[var] = sub
            return self._cube_scenes(variables)
        if cube:
            return self._cube_scenes({varname or path.stem: name})
        return [self._single_raster(path, name)]

    def _single_raster(self, path: Path, name: str) -> Scene:
        opts = self.options
        h = self.files.open(name)
        count = h.count
        names = opts.get("bands")
        bands: dict[str, BandRef] = {}
        if isinstance(names, dict):
            for k, v in names.items():
                bands[str(k)] = BandRef(name, int(v))
        elif names is not None:
            names = [names] if isinstance(names, str) else list(names)
            if len(names) != count:
                raise ProviderError(
                    f"{name} has {count} band(s) but bands= gives {len(names)} name(s): {names}."
                )
            bands = {str(n): BandRef(name, i) for i, n in enumerate(names, start=1)}
        else:
            desc = list(h.descriptions)
            m = NAME_RE.match(path.stem)
            if count == 1 and not desc[0] and m and m.group("band"):
                desc = [m.group("band")]
            if not all(desc) or len({band_key(d) for d in desc}) != count:
                raise ProviderError(
                    f"band names of {name} are unknown (band descriptions: {desc}); pass "
                    "bands=[...] in file order, set the descriptions, or write a source.json."
                )
            bands = {str(d): BandRef(name, i) for i, d in enumerate(desc, start=1)}
        m = DATE_IN_NAME.search(path.name)
        d = parse_date(m.group(1), name) if m else None
        return Scene(id=(d.isoformat() if d else path.stem) or "scene", date=d, bands=bands)

    def _cube_scenes(self, variables: dict[str, str]) -> list[Scene]:
        """One scene per time step of netCDF/Zarr variables (each variable is a band)."""
        scenes: dict[str, Scene] = {}
        for var, gname in variables.items():
            try:
                h = self.files.open(gname)
            except ProviderError:
                if len(variables) > 1:  # e.g. a non-spatial variable beside the bands
                    log.debug("local source %s: skipping variable %s", self.source, var)
                    continue
                raise
            with self.files.use(h) as ds:
                dates = layer_dates(ds)
            if h.count > 1 and any(d is None for d in dates):
                raise ProviderError(
                    f"{gname} has {h.count} layers but no CF time coordinate for each; "
                    "list its layers in a source.json (file, variable, band)."
                )
            for i, d in enumerate(dates, start=1):
                key = d.isoformat() if d else "undated"
                sc = scenes.setdefault(key, Scene(key, d, {}, order=len(scenes)))
                sc.bands[var] = BandRef(gname, i)
        if not scenes:
            raise ProviderError(f"local source {self.source!r} has no georeferenced variable.")
        return list(scenes.values())

    def _scan_folder(self, folder: Path) -> list[Scene]:
        """Files named ``<date>_<band>.<ext>`` (one band each) or ``<date>.<ext>`` (described)."""
        by_date: dict[date, Scene] = {}
        skipped = []
        for p in sorted(folder.iterdir()):
            if not p.is_file() or p.suffix.lower() not in RASTER_SUFFIXES:
                continue
            m = NAME_RE.match(p.stem)
            if not m:
                skipped.append(p.name)
                continue
            d = parse_date(m.group("date"), str(p))
            assert d is not None
            sc = by_date.setdefault(d, Scene(d.isoformat(), d, {}, order=len(by_date)))
            if m.group("band"):
                sc.bands[m.group("band")] = BandRef(str(p.resolve()), 1)
            else:
                sub = self._raster_scenes(p)
                if len(sub) != 1:
                    raise ProviderError(f"{p} holds {len(sub)} time steps; name it without a date.")
                sc.bands.update(sub[0].bands)
        if skipped:
            log.debug("local source %s: ignored files %s", folder, skipped)
        if not by_date:
            raise ProviderError(
                f"local source folder {folder} has no index ({' or '.join(INDEX_NAMES)}) and no "
                "rasters named <date>_<band>.tif or <date>.tif (date YYYY-MM-DD or YYYYMMDD)."
            )
        return list(by_date.values())
