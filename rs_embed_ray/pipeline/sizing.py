"""How big each part of the Ray plan is: blocks, fetch actors and threads, fetch calls,
inference actors, writer tasks. Pure arithmetic over the run options and the cluster's size
(no ray), so every rule is stated, and tested, in one place.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from rs_embed_ray.options import ExportOptions, FetchOptions, QuotaOptions, WriteOptions

MAX_BLOCKS = 2000  # a cap on Ray Data's per-block overhead
MAX_CALL_PLACES = 64  # the most places one fetch or per-item writer call takes
# calls of one stage past which calls take more places: each costs the driver memory for the
# whole run (Ray Data's block metadata and stats, task specs). 50,000 places in calls of 64
# instead of 16: 0.84 against 1.18 KB a place of driver growth (docs/benchmarks.md)
MAX_CALLS = 1000
# fetched pixels up to which a call takes more places than ``chunk_size``: a call costs
# about the same CPU whatever its size (Ray Data's dispatch and blocks, the driver's records,
# a shard a call): 64 places a call instead of 16 took about 1 ms of CPU a place off at
# 40 places/s (docs/benchmarks.md, session 18). Bounded, because a fetch actor holds the
# pixels of its CALLS_PER_ACTOR calls until each call's shard is written.
CALL_BYTES = 32 * 2**20
# calls grow that way from the default chunk_size up: a smaller chunk_size asks for a finer
# grain (rs-embed's unit of fetch, inference and write: what a killed run fetches again, how
# soon the log and the progress move) and is kept as it is
GROW_FROM_CHUNK = ExportOptions.chunk_size
# fetch batches one actor runs at once (Ray threads); its pool still caps requests in flight
CALLS_PER_ACTOR = 2
# places the fetch actors' calls hold at once, at most, where CALL_BYTES makes the calls
# larger than chunk_size: they are what the model drains at the run's end (all of them
# arrive together: 512 places in calls of 64 at W = 32 cost 1.4 s of a 33 s run) and what
# a killed run fetches again
HELD_PLACES = 256


def call_places(chunk: int, n: int, place_bytes: int, most: int = MAX_CALL_PLACES) -> int:
    """Places per call (a block of place rows, a fetch call, a per-item writer call) for a
    stage over ``n`` places of about ``place_bytes`` fetched pixels each
    (``ExportPlan.place_bytes``): as many as ``CALL_BYTES`` holds (up to ``most``) when
    ``chunk`` is ``GROW_FROM_CHUNK`` or more, and at least the user's ``chunk``, made larger
    for a long run so the stage makes about ``MAX_CALLS`` calls at most; never past
    ``MAX_CALL_PLACES``. The model's own batch stays ``chunk`` (Ray Data splits a larger
    block into batches of it)."""
    chunk = max(1, chunk)
    by_bytes = CALL_BYTES // place_bytes if place_bytes > 0 else MAX_CALL_PLACES
    grown = min(most, by_bytes) if chunk >= GROW_FROM_CHUNK else chunk
    return min(MAX_CALL_PLACES, max(chunk, math.ceil(n / MAX_CALLS), grown))


def n_blocks(n_rows: int, parallelism: int, rows_per_block: int = 64) -> int:
    """Small blocks stream sooner (and make the log finer-grained); a cap bounds overhead."""
    want = max(2 * parallelism, math.ceil(n_rows / max(1, rows_per_block)))
    return max(1, min(n_rows, want, MAX_BLOCKS))


def writers(writer_workers: int, n_rows: int, batch: int) -> int:
    """Writer tasks for ``n_rows`` rows in batches of ``batch``: never more than batches."""
    return max(1, min(writer_workers, math.ceil(n_rows / max(1, batch))))


def morton(lonlat: tuple[float, float]) -> int:
    """Z-order key of a lon/lat: sorting by it puts nearby places in the same batches."""
    x = int((lonlat[0] + 180.0) / 360.0 * 65535)
    y = int((lonlat[1] + 90.0) / 180.0 * 65535)
    key = 0
    for b in range(16):
        key |= ((x >> b) & 1) << (2 * b) | ((y >> b) & 1) << (2 * b + 1)
    return key


@dataclass(frozen=True)
class FetchSizing:
    """The FETCH actor pool: ``actors`` x ``threads`` requests in flight, at most."""

    actors: int
    threads: int
    cpus_per_actor: float
    batch: int  # places per fetch call


def fetch_sizing(
    opts: FetchOptions,
    quota: QuotaOptions | None,
    n: int,
    cpus: float,
    chained: bool,
    place_bytes: int,
) -> FetchSizing:
    """``opts.in_flight`` fetches (capped by the quota's concurrency when given, gee) for ``n``
    places on a cluster of ``cpus``; ``chained``: a model actor shares the CPUs."""
    # an actor is a process: a few threaded actors cost far less memory and start-up
    # than one actor per fetch
    conc = max(1, min(opts.in_flight, n))
    if quota is not None:
        # more fetches in flight than the project's concurrency quota would only queue
        conc = min(conc, quota.max_concurrent)
    threads = max(1, min(opts.threads_per_actor, conc))
    # at most two fetch processes per CPU of the cluster: past that, more actors only
    # add memory and context switches; their threads carry the extra requests instead
    size = min(math.ceil(conc / threads), max(2, 2 * int(cpus)))
    # actors x threads never exceeds conc: the quota split relies on it
    threads = max(1, conc // size)
    # IO-bound: small CPU shares, leaving room for the model actor when chained
    share = 0.25 if chained else 0.5
    fetch_cpus = min(1.0, max(0.05, share * cpus / size))
    return FetchSizing(size, threads, fetch_cpus, fetch_batch(opts, n, size, place_bytes))


def fetch_batch(opts: FetchOptions, n: int, actors: int, place_bytes: int) -> int:
    """Places per fetch call (``call_places``, the actors' calls holding ``HELD_PLACES`` at
    most), few enough that a short run still spreads over every fetch actor; whole chunks
    when nearby places share requests."""
    held = max(1, HELD_PLACES // (actors * CALLS_PER_ACTOR))
    per_call = call_places(opts.max_batch, n, place_bytes, held)
    spread = min(per_call, math.ceil(n / (2 * actors)))
    if opts.spatial_batching:
        return max(min(opts.max_batch, per_call), spread)
    return max(1, spread)


NODE_CORES = 0  # torch_threads: every core of the node the actor runs on (``node_threads``)


@dataclass(frozen=True)
class InferSizing:
    """The INFER actor pool: one actor per GPU, or one CPU actor using the machine."""

    actors: int
    gpus_per_actor: int
    torch_threads: int  # NODE_CORES: the actor's node decides


def infer_sizing(device: str, cpus: float, gpus: float) -> InferSizing:
    """A GPU actor needs one host thread. A CPU actor gets all of its node's cores: the
    forward is the run's bottleneck there, and the fetch threads mostly wait on the network
    (their CPU is small and measured, not reserved: scripts/bench.py ``cpu_ms_per_item``)."""
    use_gpu = device.startswith("cuda")
    if use_gpu:
        return InferSizing(actors=max(1, int(gpus)), gpus_per_actor=1, torch_threads=1)
    return InferSizing(actors=1, gpus_per_actor=0, torch_threads=NODE_CORES)


def node_threads(requested: int) -> int:
    """``requested`` threads, or for NODE_CORES the cores this process may run on (the
    node's, not the cluster's: one actor runs on one node)."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def item_writer_batch(opts: WriteOptions, n: int, place_bytes: int) -> int:
    """Places per per-item writer call, for a run of ``n`` places (``call_places``)."""
    return call_places(opts.max_batch, n, place_bytes)
