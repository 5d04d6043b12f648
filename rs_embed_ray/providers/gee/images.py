"""Earth Engine expressions of a request: the filtered collection (cloud filter, S1 IW /
polarisation / orbit filters and the relaxed S1 fallback), composites with their per-pixel
image count, time-series frames, collection sizes, the clear "no images" error, and the
request templates (``template``) that splice a place into an expression built once."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from rs_embed_ray.errors import NoImageryError, ProviderError, SpecError
from rs_embed_ray.geo import Grid
from rs_embed_ray.providers.gee import template as gee_template
from rs_embed_ray.providers.gee.client import EEClient
from rs_embed_ray.providers.gee.job import Job, check_orbit
from rs_embed_ray.sensors import S1_DB, S1_FLOAT, companion_collection, is_landsat, is_s2
from rs_embed_ray.specs import SensorSpec

log = logging.getLogger(__name__)

N_IMAGES_BAND = "__n_images"  # per-pixel image count sent with every single composite
_POL = "transmitterReceiverPolarisation"


def composite(col: Any, how: str) -> Any:
    if how == "mosaic":
        return col.sort("system:time_start").mosaic()
    if how == "median":
        return col.median()
    raise SpecError(f"Unknown composite {how!r} (use 'median' or 'mosaic').")


def rect(bounds: Sequence[float]) -> Any:
    import ee

    return ee.Geometry.Rectangle(list(bounds), proj="EPSG:3857", geodesic=False)


def region(grid: Grid) -> Any:
    return rect(grid.bounds())


def s1_collections(sensor: SensorSpec, where: Any, start: str, end: str) -> tuple[Any, ...]:
    """(collection id, base, IW, strict, relaxed) S1 collections of the window."""
    import ee

    cid = S1_FLOAT if sensor.use_float_linear else S1_DB
    base = ee.ImageCollection(cid).filterBounds(where).filterDate(start, end)
    orbit = check_orbit(sensor)

    def pol(col: Any) -> Any:
        col = col.filter(ee.Filter.listContains(_POL, "VV"))
        col = col.filter(ee.Filter.listContains(_POL, "VH"))
        if orbit:
            col = col.filter(ee.Filter.eq("orbitProperties_pass", orbit))
        return col

    iw = base.filter(ee.Filter.eq("instrumentMode", "IW"))
    strict = pol(iw) if sensor.s1_require_iw else pol(base)
    relaxed = pol(base)
    return cid, base, iw, strict, relaxed


def collection(job: Job, where: Any, variant: str) -> Any:
    """The filtered collection a composite is made of (``variant``: see ``Job``)."""
    import ee

    if job.kind == "s1":
        _, _, _, strict, relaxed = s1_collections(job.sensor, where, job.start, job.end)
        return strict if variant == "strict" else relaxed
    cid = job.sensor.collection
    col = ee.ImageCollection(cid).filterBounds(where).filterDate(job.start, job.end)
    if job.sensor.cloudy_pct is not None and job.kind == "optical":
        if is_s2(cid):
            col = col.filter(ee.Filter.lte("CLOUDY_PIXEL_PERCENTAGE", int(job.sensor.cloudy_pct)))
        elif is_landsat(cid):
            col = col.filter(ee.Filter.lte("CLOUD_COVER", int(job.sensor.cloudy_pct)))
    return col


def companions(job: Job, where: Any) -> list[tuple[list[str], Any]]:
    """(bands, filtered collection) per companion collection of the job's bands (the
    SatVision MODIS proxy's MOD21A1D ``LST_1KM``: ``sensors.COMPANION_BANDS``); [] for
    every other sensor."""
    import ee

    groups: dict[str, list[str]] = {}
    for b in job.uniq:
        cid = companion_collection(job.sensor.collection, b)
        if cid is not None:
            groups.setdefault(cid, []).append(b)
    return [
        (bands, ee.ImageCollection(cid).filterBounds(where).filterDate(job.start, job.end))
        for cid, bands in groups.items()
    ]


def _filled(col: Any, how: str, bands: list[str], fill: float) -> Any:
    """The composite's ``bands``, or constant ``fill`` bands when the collection is empty."""
    import ee

    image = ee.Algorithms.If(
        col.size(), composite(col, how), ee.Image.constant([fill] * len(bands)).rename(bands)
    )
    return ee.Image(image).select(bands)


def stacked(job: Job, col: Any, extra: list[tuple[list[str], Any]]) -> Any:
    """The main collection's composite with each companion's composite bands added, in the
    job's band order (a companion with no image that day gives ``fill``)."""
    own = [b for b in job.uniq if not any(b in bands for bands, _ in extra)]
    image = _filled(col, job.composite, own, job.fill)
    for bands, other in extra:
        image = image.addBands(_filled(other, job.composite, bands, job.fill))
    return image.select(job.uniq)


def counted_composite(job: Job, col: Any, extra: list[tuple[list[str], Any]] | None = None) -> Any:
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
    if extra:  # the count stays the main collection's
        image = stacked(job, col, extra)
    else:
        image = ee.Image(
            ee.Algorithms.If(
                size,
                composite(col, job.composite),
                ee.Image.constant([job.fill] * len(uniq)).rename(uniq),
            )
        )
    per_image = col.map(lambda img: ee.Image(img).select([b0]).unmask(0, True))
    count = ee.Image(ee.Algorithms.If(size, per_image.count(), ee.Image.constant(0).rename([b0])))
    return (
        image.select(uniq)
        .toFloat()
        .unmask(job.fill, False)
        .addBands(count.select([b0], [N_IMAGES_BAND]).unmask(0, False).toFloat())
    )


def frame_images(
    job: Job, col: Any, bin_empty: list[bool], extra: list[tuple[list[str], Any]] | None = None
) -> list[Any]:
    """One image per time bin; an empty bin is back-filled with the window composite."""

    def comp(c: Any, ex: list[tuple[list[str], Any]]) -> Any:
        return stacked(job, c, ex) if ex else composite(c, job.composite)

    whole = comp(col, extra or [])

    def prep(img: Any) -> Any:
        return img.select(job.uniq).toFloat().unmask(job.fill, False)

    def at(s: str, e: str) -> Any:
        return comp(col.filterDate(s, e), [(b, c.filterDate(s, e)) for b, c in extra or []])

    return [
        prep(whole if empty else at(s, e))
        for (s, e), empty in zip(job.bins, bin_empty, strict=True)
    ]


def size_values(job: Job, where: Any) -> list[Any]:
    """Sizes a time series needs: per variant, the window and then every bin."""
    out: list[Any] = []
    for v in job.variants:
        col = collection(job, where, v)
        out.append(col.size())
        out.extend(col.filterDate(s, e).size() for s, e in job.bins)
    return out


def decide(job: Job, counts: list[int]) -> tuple[int | None, int, list[int]]:
    """From ``size_values`` answers: (variant index or None if empty, total, per-bin)."""
    per = 1 + len(job.bins)
    for k in range(len(job.variants)):
        if counts[k * per] > 0:
            return k, counts[k * per], counts[k * per + 1 : (k + 1) * per]
    return None, 0, []


class ImageBuilder:
    """Builds request expressions, through templates when they are on (see
    ``providers.gee.template``), and the "no images" errors (which may ask Earth Engine for
    S1 filter-stage counts)."""

    def __init__(self, client: EEClient, request_templates: bool) -> None:
        self.client = client
        self.templates: gee_template.RequestTemplates | None = None
        if request_templates:
            if gee_template.supported():
                self.templates = gee_template.RequestTemplates()
            else:
                log.warning("this earthengine-api cannot send templated requests; not using them")

    def image(self, shape: str, job: Job, grid: Grid, make: Callable[[Job, Any], Any]) -> Any:
        """The expression of a request over ``grid``: ``make(job, region)`` built by the
        client, or (templates on) that expression serialised once per request shape with
        this place's region corners and dates spliced in (``providers.gee.template``).

        ``make`` must take the window and bins from its job argument, never from ``job``.
        """
        if self.templates is None:
            return make(job, region(grid))
        n_bins = len(job.bins)

        def build(values: Sequence[Any]) -> Any:
            flat = list(values[6:])
            bins = list(zip(flat[0::2], flat[1::2], strict=True))
            j = dataclasses.replace(job, start=values[4], end=values[5], bins=bins)
            return make(j, rect(values[:4]))

        values = [*grid.bounds(), job.start, job.end, *(d for b in job.bins for d in b)]
        key = (shape, n_bins, repr(dataclasses.replace(job, start="", end="", bins=[])))
        return self.templates.expression(key, values, build)

    def empty_error(self, job: Job, grid: Grid) -> NoImageryError:
        """The clear "no images" error (S1 asks Earth Engine for its filter-stage counts)."""
        if job.kind == "s1":
            cid, base, iw, _, _ = s1_collections(job.sensor, region(grid), job.start, job.end)
            return self._s1_empty_error(base, iw, cid, job.start, job.end)
        return NoImageryError(
            "No images found for the selected region/time window. "
            f"collection={job.sensor.collection} window={job.start}..{job.end}."
        )

    def _s1_empty_error(self, base: Any, iw: Any, cid: str, start: str, end: str) -> NoImageryError:
        import ee

        vv = iw.filter(ee.Filter.listContains(_POL, "VV"))
        vh = vv.filter(ee.Filter.listContains(_POL, "VH"))
        vh_no_iw = base.filter(ee.Filter.listContains(_POL, "VV")).filter(
            ee.Filter.listContains(_POL, "VH")
        )
        names = ["base", "iw", "vv", "vh", "vh_no_iw"]
        try:
            counts = self.client.counts(
                [c.size() for c in (base, iw, vv, vh, vh_no_iw)], "S1 filter-stage counts"
            )
            detail = ", ".join(f"{n}={c}" for n, c in zip(names, counts, strict=True))
        except ProviderError:
            detail = "counts unavailable"
        return NoImageryError(
            "No images found for the selected region/time window. "
            f"collection={cid} window={start}..{end} ({detail})."
        )
