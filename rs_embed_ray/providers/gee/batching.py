"""Spatial batching: which nearby places share one request (pure planning), and fetching a
group over its union grid, each place cut out by whole-pixel offsets (so its pixels are
those of a fetch of it alone)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rs_embed_ray.geo import Grid, grid_offset, lattice_origin, union_grid
from rs_embed_ray.providers.base import Patch
from rs_embed_ray.providers.gee import images as img
from rs_embed_ray.providers.gee.job import Job, Place
from rs_embed_ray.providers.gee.patches import finish
from rs_embed_ray.providers.gee.tiles import MAX_SIDE, bin_counts

if TYPE_CHECKING:
    from rs_embed_ray.providers.gee.provider import GEEProvider

DEFAULT_BATCH_MAX_GROUP = 16
DEFAULT_BATCH_MAX_AREA_RATIO = 2.0


def plan_spatial_batches(
    grids: Sequence[Grid],
    *,
    max_pixels: int,
    max_side: int = MAX_SIDE,
    max_group: int = DEFAULT_BATCH_MAX_GROUP,
    max_area_ratio: float = DEFAULT_BATCH_MAX_AREA_RATIO,
) -> list[list[int]]:
    """Group places (by their pixel grids) so that each group can be fetched in one request.

    Returns a partition of ``range(len(grids))``: lists of indices, each ascending, ordered
    by their first index. A group's union grid (``geo.union_grid``) is at most ``max_pixels``
    pixels and ``max_side`` pixels a side, it holds at most ``max_group`` places, and its area
    is at most ``max_area_ratio`` times the sum of its places' areas (the pixels moved that
    no place needs stay bounded). Only grids of one crs and scale whose corners are on the
    lattice share a group; a grid too big for one request, or one that fits no group, is a
    group of its own (fetched alone, tiled as usual).

    Greedy and deterministic: seeds are taken north-west first; a group then grows by the
    place that enlarges its union least (ties: nearest centre, then lowest index) until no
    place fits. Pure: no Earth Engine, no I/O.
    """
    if max_group < 1:
        raise ValueError(f"max_group must be >= 1, got {max_group}")
    if not max_area_ratio > 0:
        raise ValueError(f"max_area_ratio must be > 0, got {max_area_ratio}")
    groups: list[list[int]] = []
    by_key: dict[tuple[str, float], list[int]] = {}
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for i, g in enumerate(grids):
        origin = lattice_origin(g)
        if (
            origin is None
            or max_group == 1
            or g.width * g.height > max_pixels
            or max(g.width, g.height) > max_side
        ):
            groups.append([i])
            continue
        boxes[i] = (origin[0], origin[1], origin[0] + g.height, origin[1] + g.width)
        by_key.setdefault((g.crs, float(g.scale)), []).append(i)
    for idx in by_key.values():
        groups.extend(_grow_groups(idx, boxes, max_pixels, max_side, max_group, max_area_ratio))
    groups.sort(key=lambda g: g[0])
    return groups


def _grow_groups(
    idx: list[int],
    boxes: dict[int, tuple[int, int, int, int]],
    max_pixels: int,
    max_side: int,
    max_group: int,
    max_area_ratio: float,
) -> list[list[int]]:
    """The greedy grouping of one (crs, scale) class of places (see plan_spatial_batches)."""
    groups: list[list[int]] = []
    ids = np.asarray(idx, dtype=np.int64)
    b = np.asarray([boxes[i] for i in idx], dtype=np.int64).reshape(-1, 4)
    r0, c0, r1, c1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (r1 - r0) * (c1 - c0)
    cy, cx = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    free = np.ones(len(idx), dtype=bool)
    for seed in np.lexsort((ids, c0, r0)):
        if not free[seed]:
            continue
        free[seed] = False
        members = [int(seed)]
        R0, C0, R1, C1 = int(r0[seed]), int(c0[seed]), int(r1[seed]), int(c1[seed])
        total = int(area[seed])
        while len(members) < max_group:
            cand = np.flatnonzero(free)
            if cand.size == 0:
                break
            h = np.maximum(R1, r1[cand]) - np.minimum(R0, r0[cand])
            w = np.maximum(C1, c1[cand]) - np.minimum(C0, c0[cand])
            a = h * w
            ok = (
                (h <= max_side)
                & (w <= max_side)
                & (a <= max_pixels)
                & (a <= max_area_ratio * (total + area[cand]))
            )
            if not ok.any():
                break
            cand, a = cand[ok], a[ok]
            dist = np.hypot(cy[cand] - (R0 + R1) / 2.0, cx[cand] - (C0 + C1) / 2.0)
            j = int(cand[np.lexsort((ids[cand], dist, a))[0]])
            free[j] = False
            members.append(j)
            R0, C0 = min(R0, int(r0[j])), min(C0, int(c0[j]))
            R1, C1 = max(R1, int(r1[j])), max(C1, int(c1[j]))
            total += int(area[j])
        groups.append(sorted(idx[m] for m in members))
    return groups


def _batched(size: int, union: Grid, offset: tuple[int, int], requests: int) -> dict[str, Any]:
    """The ``meta["batched"]`` of a place fetched through a union request."""
    return {
        "group_size": size,
        "union_grid": union.to_meta(),
        "offset": [int(offset[0]), int(offset[1])],
        "requests": requests,
    }


def fetch_groups(
    provider: GEEProvider,
    job: Job,
    places: dict[int, Place],
    *,
    max_group: int,
    max_area_ratio: float,
    threads: int,
) -> dict[int, Patch | Exception]:
    """Plan the groups of ``places`` (index -> place) and fetch them, ``threads`` at once."""
    from concurrent.futures import ThreadPoolExecutor

    order = list(places)
    groups = plan_spatial_batches(
        [places[i].grid for i in order],
        max_pixels=provider.tiles.max_pixels(job),
        max_side=provider.tiles.max_side,
        max_group=max_group,
        max_area_ratio=max_area_ratio,
    )
    units = [[order[k] for k in g] for g in groups]

    def run(unit: list[int]) -> list[tuple[int, Patch | Exception]]:
        try:
            if len(unit) == 1:
                res: list[Patch | Exception] = [provider._fetch_place(job, places[unit[0]])]
            else:
                res = fetch_group(provider, job, [places[i] for i in unit])
        except Exception as exc:
            res = [exc] * len(unit)
        return list(zip(unit, res, strict=True))

    if threads > 1 and len(units) > 1:
        with ThreadPoolExecutor(min(threads, len(units))) as pool:
            done = list(pool.map(run, units))
    else:
        done = [run(u) for u in units]
    return {i: res for pairs in done for i, res in pairs}


def fetch_group(provider: GEEProvider, job: Job, places: list[Place]) -> list[Patch | Exception]:
    """Several places through requests over their union grid (see ``fetch_many``)."""
    if job.bins and not job.binned:
        return _fetch_group_frames(provider, job, places)
    client = provider.client
    union = union_grid([p.grid for p in places])
    req0 = client.start()
    try:
        block, n_px = provider.tiles.fetch_counted_frames(job, union, job.variants[0])
    except Exception as exc:
        return [exc] * len(places)
    requests, retries = client.spent(req0)
    out: list[Patch | Exception] = []
    for p in places:
        r, c = grid_offset(union, p.grid)
        cut = block[..., r : r + p.grid.height, c : c + p.grid.width]
        counts = bin_counts(cut)
        if sum(counts) > 0:
            patch = finish(
                job, p, cut[:, :-1], 0, sum(counts), counts if job.binned else [],
                requests=requests, pixel_requests=n_px, retries=retries,
            )  # fmt: skip
            patch.meta["batched"] = _batched(len(places), union, (r, c), requests)
            out.append(patch)
            continue
        # no image of the first variant here: go on alone as fetch would (S1: the relaxed
        # filter), or fail with fetch's clear "no images" error
        try:
            patch = provider._fetch_composite_alone(job, p, job.variants[1:], client.start())
        except Exception as exc:
            out.append(exc)
            continue
        patch.meta["requests"] += requests
        patch.meta["pixel_requests"] += n_px
        patch.meta["retries"] += retries
        patch.meta["batched"] = _batched(len(places), union, (r, c), requests)
        patch.meta["batched"]["refetched_alone"] = True
        out.append(patch)
    return out


def _fetch_group_frames(
    provider: GEEProvider, job: Job, places: list[Place]
) -> list[Patch | Exception]:
    """Time series: one value:compute for every place's sizes, then one union request
    per set of places that agree on the variant and on which bins are empty."""
    client = provider.client
    req0 = client.start()
    values_per = [img.size_values(job, img.region(p.grid)) for p in places]
    try:
        counts = client.counts([v for vs in values_per for v in vs], "collection size")
    except Exception as exc:
        return [exc] * len(places)
    shared = client.spent(req0)
    per = len(values_per[0])
    out: list[Patch | Exception | None] = [None] * len(places)
    decided: dict[tuple[int, tuple[bool, ...]], list[int]] = {}
    info: dict[int, tuple[int, int, list[int]]] = {}
    for i, p in enumerate(places):
        k, total, bins = img.decide(job, counts[i * per : (i + 1) * per])
        if k is None:
            try:
                out[i] = provider.images.empty_error(job, p.grid)
            except Exception as exc:
                out[i] = exc
            continue
        info[i] = (k, total, bins)
        decided.setdefault((k, tuple(b == 0 for b in bins)), []).append(i)
    for (k, empty), members in decided.items():
        _fetch_series_members(provider, job, places, k, list(empty), members, info, shared, out)
    assert all(r is not None for r in out)
    return out  # type: ignore[return-value]


def _fetch_series_members(
    provider: GEEProvider,
    job: Job,
    places: list[Place],
    k: int,
    empty: list[bool],
    members: list[int],
    info: dict[int, tuple[int, int, list[int]]],
    shared: tuple[int, int],
    out: list[Any],
) -> None:
    """One union request for the places ``members`` that agree on variant and empty bins."""
    sub = union_grid([places[i].grid for i in members])
    req1 = provider.client.start()
    try:
        data, n_px = provider.tiles.fetch_series(job, k, empty, sub)
    except Exception as exc:
        for i in members:
            out[i] = exc
        return
    spent, retries = provider.client.spent(req1)
    for i in members:
        g = places[i].grid
        r, c = grid_offset(sub, g)
        _, total, bins = info[i]
        patch = finish(
            job, places[i], data[:, :, r : r + g.height, c : c + g.width], k, total,
            bins, requests=shared[0] + spent, pixel_requests=n_px,
            retries=shared[1] + retries,
        )  # fmt: skip
        patch.meta["batched"] = _batched(len(members), sub, (r, c), shared[0] + spent)
        patch.meta["batched"]["value_group_size"] = len(places)
        out[i] = patch
