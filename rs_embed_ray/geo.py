"""EPSG:3857 geometry shared by every provider: the fetch square and the pixel grid.

All providers cut the same north-up grid for a place, so an export gives the same pixels
whichever backend serves them. The lattice is anchored at the projection origin (pixel
edges at multiples of ``scale_m``), as in rs-embed's ``common_grid``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rs_embed_ray.specs import BBox, PointBuffer, SpatialSpec

R = 6378137.0
MAX_LAT = 85.05112878
_EPS = 1e-6  # pixels: a bound within this of a lattice line counts as on it


def lonlat_to_3857(lon: float, lat: float) -> tuple[float, float]:
    lat = max(-MAX_LAT, min(MAX_LAT, lat))
    x = R * math.radians(lon)
    y = R * math.log(math.tan(math.pi / 4.0 + math.radians(lat) / 2.0))
    return x, y


def xy3857_to_lonlat(x: float, y: float) -> tuple[float, float]:
    lon = math.degrees(x / R)
    lat = math.degrees(2.0 * math.atan(math.exp(y / R)) - math.pi / 2.0)
    return lon, lat


def bounds_3857(spatial: SpatialSpec) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) in EPSG:3857 metres."""
    if isinstance(spatial, PointBuffer):
        cx, cy = lonlat_to_3857(spatial.lon, spatial.lat)
        b = float(spatial.buffer_m)
        return (cx - b, cy - b, cx + b, cy + b)
    x0, y0 = lonlat_to_3857(spatial.minlon, spatial.minlat)
    x1, y1 = lonlat_to_3857(spatial.maxlon, spatial.maxlat)
    return (x0, y0, x1, y1)


def fetch_square(spatial: SpatialSpec) -> tuple[SpatialSpec, tuple[float, float, float, float]]:
    """Enlarge a rectangular BBox to a centred 3857 square; return it and the ROI window.

    The window is (y0, y1, x0, x1) in [0, 1] of the square, rounded to 6 decimals; it is
    (0, 1, 0, 1) for points, near-square boxes and enlargements that leave valid lon/lat.
    """
    full = (0.0, 1.0, 0.0, 1.0)
    if isinstance(spatial, PointBuffer):
        return spatial, full
    minx, miny, maxx, maxy = bounds_3857(spatial)
    w, h = maxx - minx, maxy - miny
    side = max(w, h)
    if abs(w - h) <= 1e-4 * side:
        return spatial, full
    cx, cy = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    sx0, sy0, sx1, sy1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    lon0, lat0 = xy3857_to_lonlat(sx0, sy0)
    lon1, lat1 = xy3857_to_lonlat(sx1, sy1)
    square = BBox(lon0, lat0, lon1, lat1)
    try:
        square.validate()
        if max(abs(lat0), abs(lat1)) >= MAX_LAT:
            raise ValueError("square leaves the mercator range")
    except Exception:
        return spatial, full
    # rows run north -> south, so y0 is measured from the top edge
    win = (
        round((sy1 - maxy) / side, 6),
        round((sy1 - miny) / side, 6),
        round((minx - sx0) / side, 6),
        round((maxx - sx0) / side, 6),
    )
    return square, win


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid in EPSG:3857: pixel (r, c) covers
    x in [x0 + c*s, x0 + (c+1)*s), y in (y0 - (r+1)*s, y0 - r*s]."""

    x0: float
    y0: float
    scale: float
    width: int
    height: int
    crs: str = "EPSG:3857"

    @property
    def affine(self) -> tuple[float, float, float, float, float, float]:
        """(scaleX, shearX, translateX, shearY, scaleY, translateY) as Earth Engine wants."""
        return (self.scale, 0.0, self.x0, 0.0, -self.scale, self.y0)

    def bounds(self) -> tuple[float, float, float, float]:
        return (
            self.x0,
            self.y0 - self.height * self.scale,
            self.x0 + self.width * self.scale,
            self.y0,
        )

    def pixel_centers(self) -> tuple[list[float], list[float]]:
        xs = [self.x0 + (c + 0.5) * self.scale for c in range(self.width)]
        ys = [self.y0 - (r + 0.5) * self.scale for r in range(self.height)]
        return xs, ys

    def to_meta(self) -> dict:
        return {
            "crs": self.crs,
            "scale_m": self.scale,
            "transform": list(self.affine),
            "grid_hw": [self.height, self.width],
        }


def grid_for(spatial: SpatialSpec, scale_m: float) -> Grid:
    """The pixel grid a provider returns for a place at ``scale_m``.

    A PointBuffer always gets ``round(2*buffer_m/scale_m)`` pixels a side centred on the
    nearest lattice line, so every place of a run stacks into one array; a BBox is snapped
    outward to the lattice.
    """
    s = float(scale_m)
    if isinstance(spatial, PointBuffer):
        n = max(1, round(2.0 * float(spatial.buffer_m) / s))
        cx, cy = lonlat_to_3857(spatial.lon, spatial.lat)
        c0 = round(cx / s - n / 2.0)
        r0 = round(-cy / s - n / 2.0)
        return Grid(x0=c0 * s, y0=-r0 * s, scale=s, width=n, height=n)
    minx, miny, maxx, maxy = bounds_3857(spatial)
    c0 = math.floor(minx / s + _EPS)
    c1 = math.ceil(maxx / s - _EPS)
    r0 = math.floor(-maxy / s + _EPS)
    r1 = math.ceil(-miny / s - _EPS)
    return Grid(x0=c0 * s, y0=-r0 * s, scale=s, width=max(1, c1 - c0), height=max(1, r1 - r0))


def split_grid(grid: Grid, max_pixels: int, max_side: int) -> list[tuple[int, int, Grid]]:
    """Cut a grid into row/column blocks within per-request limits.

    Returns (row_offset, col_offset, sub_grid) triples that tile the grid exactly, so the
    pieces stitch back without resampling.
    """
    side_w = min(max_side, grid.width)
    rows_per = max(1, min(max_side, max_pixels // max(1, side_w)))
    out = []
    for r in range(0, grid.height, rows_per):
        for c in range(0, grid.width, side_w):
            h = min(rows_per, grid.height - r)
            w = min(side_w, grid.width - c)
            sub = Grid(
                x0=grid.x0 + c * grid.scale,
                y0=grid.y0 - r * grid.scale,
                scale=grid.scale,
                width=w,
                height=h,
            )
            out.append((r, c, sub))
    return out


def lattice_origin(grid: Grid) -> tuple[int, int] | None:
    """(row, col) of a grid's top-left pixel on its scale's origin-anchored lattice.

    ``None`` if the grid's corner is not on a lattice line (then it cannot share pixels
    exactly with another grid). Grids from :func:`grid_for` are always on the lattice.
    """
    s = float(grid.scale)
    if not (s > 0 and math.isfinite(s)):
        return None
    c = grid.x0 / s
    r = -grid.y0 / s
    ci, ri = round(c), round(r)
    if abs(c - ci) > _EPS or abs(r - ri) > _EPS:
        return None
    return int(ri), int(ci)


def union_grid(grids: list[Grid] | tuple[Grid, ...]) -> Grid:
    """The smallest lattice grid covering every grid (same crs and scale, all on the lattice).

    Its corner is computed like :func:`grid_for` does (``index * scale``), so a grid's pixels
    sit at integer offsets inside it (:func:`grid_offset`).
    """
    if not grids:
        raise ValueError("union_grid needs at least one grid")
    g0 = grids[0]
    boxes = []
    for g in grids:
        if g.crs != g0.crs or g.scale != g0.scale:
            raise ValueError("union_grid: grids differ in crs or scale")
        o = lattice_origin(g)
        if o is None:
            raise ValueError("union_grid: a grid is not on the lattice")
        boxes.append((o[0], o[1], o[0] + g.height, o[1] + g.width))
    r0 = min(b[0] for b in boxes)
    c0 = min(b[1] for b in boxes)
    r1 = max(b[2] for b in boxes)
    c1 = max(b[3] for b in boxes)
    s = g0.scale
    return Grid(x0=c0 * s, y0=-r0 * s, scale=s, width=c1 - c0, height=r1 - r0, crs=g0.crs)


def grid_offset(outer: Grid, inner: Grid) -> tuple[int, int]:
    """(row, col) of ``inner``'s top-left pixel inside ``outer``; ValueError unless ``inner``
    lies wholly inside ``outer`` on the same lattice (so slicing is exact)."""
    if outer.crs != inner.crs or outer.scale != inner.scale:
        raise ValueError("grid_offset: grids differ in crs or scale")
    oo, io = lattice_origin(outer), lattice_origin(inner)
    if oo is None or io is None:
        raise ValueError("grid_offset: a grid is not on the lattice")
    r, c = io[0] - oo[0], io[1] - oo[1]
    if r < 0 or c < 0 or r + inner.height > outer.height or c + inner.width > outer.width:
        raise ValueError("grid_offset: inner grid is not inside outer grid")
    return r, c
