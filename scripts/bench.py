"""Benchmark an export: wall time, steady-state items/s, bounds, efficiency, peak memory.

Runs a real export on a local Ray cluster against the Earth Engine emulator (``--backend
emulator``, with injected latency) or the local raster backend (``--backend local``, a
synthetic scene is written if no ``--source`` is given), and prints ONE JSON line:

  items_per_s_span (from the first request the emulator received, else the first logged
  place, to the last logged place), wall_s, fetch_bound (concurrency limit / measured fetch
  latency, emulator only), model_bound (items/s of the same model's forward alone, measured
  in this run), efficiency = items_per_s_span / min(bounds), peak RSS of the driver and of
  all Ray processes together, requests per item, CPU ms a place over the run and in the
  steady window (10-90 % of the emulator's pixel requests, else of the last model's records).

Example:
  python scripts/bench.py --n 1000 --models spectral_stats --layout per_item
  python scripts/bench.py --forward remoteclip,dofa:large --batch-sizes 1,16
  python scripts/bench.py --forward satmaepp/s2_10b,olmoearth/s1 --batch-sizes 1,16
  python scripts/bench.py --forward dofa --batch-sizes 64 --prep-only   # host share alone
  python scripts/bench.py --n 2000 --latency-ms 300 --num-workers 40 --models remoteclip
  python scripts/bench.py --fetch-cpu --n 1000   # CPU per place of one FetchWorker, no Ray
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


class ExternalEmulator:
    """The Earth Engine emulator in its own process (the CLI), so its request handling does
    not share the driver's GIL and CPU time is charged where it belongs."""

    def __init__(self, latency_ms: float, jitter_ms: float) -> None:
        cmd = [sys.executable, "-m", "rs_embed_ray.testing.ee_emulator"]
        cmd += ["--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms)]
        cmd += ["--retry-after-s", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self) -> tuple[list[dict], int]:
        from rs_embed_ray.testing.ee_emulator import fetch_stats

        doc = fetch_stats(self.url)
        return doc["request_log"], int(doc["peak_in_flight"])

    def cpu_s(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def rss_anon(pid: int) -> int | None:
    """Anonymous resident bytes of ``pid`` (Linux ``RssAnon``), None where not readable.

    The driver's RSS also counts the file-backed pages of its shared libraries, which the
    kernel keeps or drops with the page cache: 105-150 MB between runs on the bench machine,
    enough to move a 50k / 5k ratio. Its heap is the anonymous part."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_role(p: psutil.Process) -> str:
    """A Ray process's role from its title (``ray::FetchWorker.fetch`` -> ``FetchWorker``;
    ``ray::IDLE`` -> ``ray worker``), else its program's name (raylet, gcs_server, ...)."""
    try:
        argv = p.cmdline()
    except psutil.Error:
        return "other"
    if not argv:
        return "other"
    head = argv[0]
    if head.startswith("ray::"):
        title = head[5:].split()[0].split(".")[0]
        return "ray worker" if title in ("IDLE", "") else title
    prog = Path(head).name
    if prog.startswith("python") and len(argv) > 1:
        return Path(argv[1]).name if not argv[1].startswith("-") else " ".join(argv[1:3])
    return prog


class PeakRSS:
    """Samples the RSS of this process (or ``pid``) and all its descendants (the local Ray
    cluster); ``exclude`` pids (the emulator) are not the export's memory. The driver's
    anonymous part is sampled too (``rss_anon``)."""

    def __init__(
        self, every_s: float = 0.5, exclude: tuple[int, ...] = (), pid: int | None = None
    ) -> None:
        self.pid = pid
        self.exclude = set(exclude)
        self.cpu_s: dict[int, float] = {}  # pid -> user+system seconds, last sample
        self.role: dict[int, str] = {}  # pid -> what it was last seen doing (process_role)
        self.every_s = every_s
        self.peak_total = 0
        self.peak_driver = 0
        self.peak_driver_anon: int | None = None
        # (epoch s, the export's CPU s by role, the excluded processes' CPU s) a sample
        self.series: list[tuple[float, dict[str, float], float]] = []
        # CPU seconds of the sampler thread itself: the instrument's, not the export's, so
        # taken off this process's figures when it measures itself (about 8 ms a second)
        self.own_cpu_s = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process(self.pid)
        while not self._stop.is_set():
            self.sample(me)
            self._stop.wait(self.every_s)

    def _procs(self, me: psutil.Process) -> list[psutil.Process]:
        """This process and its descendants but ``exclude``. One ``children`` walk a sample:
        it reads every process's /proc entry, the sampler's main cost."""
        try:
            kids = me.children(recursive=True)
        except psutil.Error:
            kids = []
        return [me, *(c for c in kids if c.pid not in self.exclude)]

    def sample(self, me: psutil.Process) -> None:
        """One sample: each process's RSS and CPU seconds; the driver's RSS and RssAnon."""
        total = driver = 0
        for p in self._procs(me):
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    t = p.cpu_times()
            except psutil.Error:
                continue
            total += rss
            self.cpu_s[p.pid] = t.user + t.system
            if p.pid == os.getpid():
                if threading.current_thread() is self._t:
                    self.own_cpu_s = time.thread_time()
                self.cpu_s[p.pid] -= self.own_cpu_s
            self.role[p.pid] = "driver" if p.pid == me.pid else process_role(p)
            if p.pid == me.pid:
                driver = rss
        anon = rss_anon(me.pid)
        if anon is not None:
            self.peak_driver_anon = max(self.peak_driver_anon or 0, anon)
        self.peak_driver = max(self.peak_driver, driver)
        self.peak_total = max(self.peak_total, total)
        self.series.append((time.time(), self.cpu_s_by_role(), self._excluded_cpu_s()))

    def _excluded_cpu_s(self) -> float:
        out = 0.0
        for pid in self.exclude:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                out += t.user + t.system
        return out

    @property
    def total_cpu_s(self) -> float:
        """CPU seconds of the driver and the Ray processes (until their last sample)."""
        return sum(self.cpu_s.values())

    def cpu_s_by_role(self) -> dict[str, float]:
        """CPU seconds by role (driver, raylet, an actor's class, ...): where a place's CPU
        goes on Ray, which one total cannot say."""
        out: dict[str, float] = {}
        for pid, s in self.cpu_s.items():
            r = self.role.get(pid, "other")
            out[r] = out.get(r, 0.0) + s
        return out

    def __enter__(self) -> PeakRSS:
        me = psutil.Process(self.pid)
        self.sample(me)
        self._cpu0 = dict(self.cpu_s)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        with contextlib.suppress(psutil.Error):  # a root process that has exited
            self.sample(psutil.Process(self.pid))
        # only what the export used: processes that existed before count from then
        for pid, t0 in self._cpu0.items():
            if pid in self.cpu_s:
                self.cpu_s[pid] -= t0


def fetch_cpu_main(a: argparse.Namespace) -> None:
    """CPU per place of ONE FetchWorker in this process (no Ray, no model, the emulator in its
    own process), Earth Engine request templates off, on, on, off: one JSON line each.

    On a busy machine this is the robust per-place figure: CPU seconds of this process
    (all its threads: the client, the HTTP transport, shard writing) over the places, after
    one warm-up batch; wall time depends on the other load and is printed only for context.
    """
    from rs_embed_ray.options import FetchOptions, RetryOptions
    from rs_embed_ray.pipeline import fetch
    from rs_embed_ray.pipeline.fetch import FetchWorker
    from rs_embed_ray.specs import spatial_to_dict

    fetch.current_node = lambda: ""  # outside Ray: asking for the node would start Ray here

    emu = ExternalEmulator(a.latency_ms, a.jitter_ms)
    try:
        pts = make_points(a.n + a.chunk_size, 15.0, 45.0, a.buffer_m, a.spread_deg)
        rows = [json.dumps(spatial_to_dict(p)) for p in pts]
        batches = [
            {
                "index": np.arange(i, min(i + a.chunk_size, len(rows)), dtype=np.int64),
                "spatial": np.asarray(rows[i : i + a.chunk_size], dtype=object),
            }
            for i in range(0, len(rows), a.chunk_size)
        ]
        # off, on, on, off: a drift of the machine's other load hits both modes alike
        for templates in (False, True, True, False):
            with tempfile.TemporaryDirectory(prefix="rs_bench_shards_") as shards:
                worker = FetchWorker(
                    backend="gee",
                    provider_options={
                        "url": emu.url,
                        "request_templates": templates,
                        "ee_max_concurrent": a.ee_max_concurrent,
                        "ee_max_qps": a.ee_max_qps,
                    },
                    sensor={
                        "collection": "COPERNICUS/S2_SR_HARMONIZED",
                        "bands": ("B2", "B3", "B4", "B8"),
                        "scale_m": 10,
                    },
                    n_frames=None,
                    temporal={"mode": "range", "start": "2022-06-01", "end": "2022-09-01"},
                    shard_dir=shards,
                    options=FetchOptions(
                        in_flight=a.fetch_threads,
                        threads_per_actor=a.fetch_threads,
                        max_batch=a.chunk_size,
                        spatial_batching=False,
                        fail_on_bad_input=False,
                    ),
                    retry=RetryOptions(max_retries=0, backoff_s=0.0),
                    threads=a.fetch_threads,
                )
                worker(batches[0])  # warm-up: ee initialisation, first template
                emu0, cpu0, t0 = emu.cpu_s(), time.process_time(), time.perf_counter()
                ok = 0
                for b in batches[1:]:
                    ok += int((worker(b)["status"] == "ok").sum())
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
                n = len(rows) - len(batches[0]["index"])
                print(
                    json.dumps(
                        {
                            "mode": "fetch_cpu",
                            "request_templates": templates,
                            "n": n,
                            "ok": ok,
                            "fetch_threads": a.fetch_threads,
                            "fetch_worker_cpu_ms_per_place": round(1000 * cpu / n, 3),
                            "emulator_cpu_ms_per_place": round(1000 * (emu.cpu_s() - emu0) / n, 3),
                            "wall_s": round(wall, 2),
                            "templates": worker.provider.template_stats(),
                        }
                    ),
                    flush=True,
                )
    finally:
        emu.stop()


def make_points(n: int, lon0: float, lat0: float, buffer_m: float, spread_deg: float):
    from rs_embed_ray import PointBuffer

    side = int(np.ceil(np.sqrt(n)))
    step = spread_deg / max(1, side)
    return [
        PointBuffer(lon0 + (i % side) * step, lat0 + (i // side) * step, buffer_m) for i in range(n)
    ]


def model_bound(
    models: list[str],
    weights: dict[str, str],
    chunk: int,
    hw: int,
    device: str = "cpu",
    precision: str = "auto",
) -> float:
    """items/s of the slowest model's forward alone on random raw-unit inputs of the run's
    patch size (hw x hw), batches of ``chunk``, in-process, on the run's device and precision."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # all cores, as the run's model actor
    rates = [
        forward_rates(m, [chunk], device, precision, 3.0, side=hw, weights=weights.get(m))[0]
        for m in models
    ]
    return min(r["images_per_s"] for r in rates)


def forward_rates(
    spec: str,
    batch_sizes: list[int],
    device: str,
    precision: str,
    min_s: float,
    n_frames: int | None = None,
    *,
    side: int | None = None,
    weights: str | None = "random",
    prep_only: bool = False,
) -> list[dict]:
    """images/s of one model's forward alone (``model`` or ``model:variant``), one result per
    batch size: random raw-unit inputs at the model's own image size (one tile each; ``side``
    overrides it), random weights (asked for explicitly), pooled output, after a warm-up.
    ``prep_only`` times the model's own ``preprocess`` (raw patches to the network's input
    tensor on the device) instead: the host's share of a forward."""
    import torch

    from rs_embed_ray.models.registry import get_info, load_embedder
    from rs_embed_ray.models.runtime import autocast_dtype, precision_label
    from rs_embed_ray.models.tiling import embed_with_prep
    from rs_embed_ray.specs import InputPrepSpec, OutputSpec, PointBuffer

    name, _, modality = spec.partition("/")  # model/modality: satmaepp/s2_10b, olmoearth/s1
    name, _, variant = name.partition(":")
    info = get_info(name)
    cfg: dict | None = {"variant": variant} if variant else None
    sensor = info.sensor
    if modality:
        cfg = {**(cfg or {}), "modality": modality}
        sensor = dict(info.modality_sensors)[modality]
    t_load = time.perf_counter()
    emb = load_embedder(name, device=device, weights=weights, model_config=cfg, precision=precision)
    load_s = time.perf_counter() - t_load
    if prep_only and not callable(getattr(emb, "preprocess", None)):
        raise ValueError(f"{name} has no preprocess step of its own to time")
    hook = getattr(emb, "resolve_input_image_size", None)
    side = side or int((hook(cfg) if callable(hook) else None) or info.image_size or 224)
    c = len(sensor.bands) if sensor else 3
    frames = (n_frames or info.n_frames or 4) if info.temporal_mode == "multi" else None
    shape = (frames, c, side, side) if frames else (c, side, side)
    rng = np.random.default_rng(0)
    out = []
    for bs in batch_sizes:
        xs = [rng.uniform(0, 3000, shape).astype(np.float32) for _ in range(bs)]
        kw = dict(
            prep=InputPrepSpec.resize(),
            output=OutputSpec.pooled(),
            spatials=[PointBuffer(15.0, 45.0, side * 5.0)] * bs,
            temporal=None,
            fetch_metas=[{}] * bs,
            batch_size=bs,
        )
        # warm-up (allocator, autotuning, lazy init) on one input: a batch of a slow model
        # can take minutes, and what the warm-up pays for does not grow with the batch
        embed_with_prep(emb, xs[:1], **{**kw, "spatials": kw["spatials"][:1],
                                        "fetch_metas": [{}], "batch_size": 1})  # fmt: skip
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_s or reps < 1:
            if prep_only:
                emb.preprocess(xs)
            else:
                embed_with_prep(emb, xs, **kw)
            reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out.append(
            {
                "model": spec,
                "timed": "preprocess" if prep_only else "embed",
                "device": device,
                "precision": precision_label(autocast_dtype(device, precision)),
                "batch": bs,
                "input": list(shape),
                "images_per_s": round(reps * bs / dt, 3),
                "ms_per_batch": round(1000 * dt / reps, 1),
                "reps": reps,
                "load_s": round(load_s, 1),
                "torch_threads": torch.get_num_threads(),
            }
        )
    return out


def forward_main(a: argparse.Namespace) -> None:
    """--forward: one JSON line per model and batch size (docs/benchmarks.md's model table)."""
    import torch

    a.device = a.device or "cpu"
    if a.device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    sizes = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
    failed = 0
    for spec in [m.strip() for m in a.forward.split(",") if m.strip()]:
        try:
            rows = forward_rates(
                spec,
                sizes,
                a.device,
                a.precision,
                a.min_seconds,
                a.frames,
                prep_only=a.prep_only,
            )
        except Exception as exc:  # one model's failure (a missing extra, OOM) ends only its row
            failed += 1
            print(json.dumps({"model": spec, "device": a.device, "error": repr(exc)}), flush=True)
            continue
        finally:
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
        for row in rows:
            print(json.dumps(row), flush=True)
    if failed:
        sys.exit(1)


def service_window(requests: list[dict]) -> tuple[float, float, int] | None:
    """(epoch start, epoch end, requests ended in between) between the 10% and 90%
    completions at the service: the fetch stage's steady state, free of driver-side
    batching and of the bursts in which batches are logged."""
    ends = sorted(r["end"] for r in requests)
    if len(ends) < 10:
        return None
    t0, t1 = ends[len(ends) // 10], ends[(9 * len(ends)) // 10]
    return t0, t1, sum(1 for t in ends if t0 < t <= t1)


def service_rate(requests: list[dict]) -> tuple[float, float]:
    """(requests/s, mean requests in flight) in the ``service_window``."""
    w = service_window(requests)
    if w is None or w[1] <= w[0]:
        return float("nan"), float("nan")
    t0, t1, ended = w
    busy = sum(max(0.0, min(r["end"], t1) - max(r["time"], t0)) for r in requests)
    return ended / (t1 - t0), busy / (t1 - t0)


def steady_window(state_dir: Path, kind: str, key: str) -> tuple[float, float, int] | None:
    """(epoch start, epoch end, places) between 10% and 90% of the step's records."""
    from rs_embed_ray.io.state import RunState

    ts = sorted(
        r["ts"]
        for r in RunState(state_dir).read_log()
        if r["kind"] == kind and r["key"] == key and "ts" in r
    )
    if len(ts) < 10:
        return None
    t0, t1 = ts[int(0.1 * len(ts))], ts[int(0.9 * len(ts))]
    # the places logged in (t0, t1]: a batch's records share one timestamp, so counting
    # ranks (b - a) would count part of the batch logged at t0 without its time and
    # overstate the rate of a run in large calls (64 places a call: by about 10 %)
    return t0, t1, sum(1 for t in ts if t0 < t <= t1)


def rate_of(window: tuple[float, float, int] | None) -> tuple[float, float]:
    """(places/s, seconds) of a ``steady_window``."""
    if window is None:
        return float("nan"), float("nan")
    dt = window[1] - window[0]
    return (window[2] / dt if dt > 0 else float("inf")), dt


def steady_rate(state_dir: Path, kind: str, key: str) -> tuple[float, float]:
    """(items/s between 10% and 90% of the step's records, their seconds) from the log."""
    return rate_of(steady_window(state_dir, kind, key))


def steady_cpu(mem: PeakRSS, window: tuple[float, float, float] | None) -> dict[str, Any]:
    """CPU ms a place in the steady ``window``, between the samples nearest its ends: the
    export's (``total``, ``by_role``) and the excluded processes' (``excluded``, the
    emulator). Empty when the run was too short to have a window."""
    if window is None or window[2] <= 0 or window[1] <= window[0] or len(mem.series) < 2:
        return {}
    ts = [t for t, _, _ in mem.series]
    a = min(range(len(ts)), key=lambda i: abs(ts[i] - window[0]))
    b = min(range(len(ts)), key=lambda i: abs(ts[i] - window[1]))
    if b <= a:
        return {}
    n = window[2] * (ts[b] - ts[a]) / (window[1] - window[0])  # places in [ts[a], ts[b]]
    (_, r0, e0), (_, r1, e1) = mem.series[a], mem.series[b]
    by_role = {r: 1000 * (c - r0.get(r, 0.0)) / n for r, c in r1.items()}
    return {
        "total": round(sum(by_role.values()), 2),
        "by_role": {
            r: round(v, 2) for r, v in sorted(by_role.items(), key=lambda kv: -kv[1]) if v > 0.005
        },
        "excluded": round(1000 * (e1 - e0) / n, 2),
    }


class WriteTime(logging.Handler):
    """The runner's ``write: N items in S s`` record: how long the final write step took."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("write:"):
            self.seconds = float(record.args[-1]) if record.args else None


def main() -> None:
    from rs_embed_ray.options import default  # the package's defaults, stated once

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--models", default="spectral_stats")
    ap.add_argument("--layout", choices=["per_item", "combined"], default="per_item")
    ap.add_argument("--format", choices=["npz", "netcdf", "zarr"], default="npz")
    ap.add_argument("--output", choices=["pooled", "grid"], default="pooled")
    ap.add_argument(
        "--writer-workers",
        type=int,
        default=default("writer_workers"),
        help="concurrent writer tasks (per-item files, Zarr regions)",
    )
    ap.add_argument("--backend", choices=["emulator", "local"], default="emulator")
    ap.add_argument("--source", help="raster source for --backend local")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--ee-max-concurrent", type=int, default=default("ee_max_concurrent"))
    ap.add_argument("--ee-max-qps", type=float, default=default("ee_max_qps"))
    ap.add_argument("--num-workers", type=int, default=default("num_workers"))
    ap.add_argument("--fetch-threads", type=int, default=default("fetch_threads"))
    ap.add_argument("--chunk-size", type=int, default=default("chunk_size"))
    ap.add_argument("--buffer-m", type=float, default=160.0)
    ap.add_argument("--spread-deg", type=float, default=0.5)
    ap.add_argument("--no-save-inputs", action="store_true")
    ap.add_argument("--skip-model-bound", action="store_true")
    ap.add_argument("--out", help="output folder (default: a temp dir, removed after)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--forward",
        help="instead of an export: forward throughput of these models (comma list, "
        "model or model:variant), one JSON line per model and batch size",
    )
    ap.add_argument("--batch-sizes", default="1,16", help="for --forward")
    ap.add_argument(
        "--device",
        help="cpu or cuda: the export's model device and its model bound's (default: the "
        "export's own default); for --forward, the device timed (default cpu)",
    )
    ap.add_argument(
        "--precision",
        choices=["auto", "float32"],
        default=default("precision"),
        help="auto: mixed precision on GPU; float32: always fp32 (export and --forward)",
    )
    ap.add_argument(
        "--executor",
        choices=["ray", "local", "auto"],
        default="ray",
        help="ray: start Ray here first (as the figures before the in-process executor); "
        "local: threads of this process, no Ray; auto: as a user's export decides",
    )
    ap.add_argument("--min-seconds", type=float, default=5.0, help="for --forward")
    ap.add_argument(
        "--prep-only",
        action="store_true",
        help="for --forward: time only the model's preprocess (the host's share of a batch)",
    )
    ap.add_argument(
        "--frames", type=int, help="for --forward: frames per input of multi-temporal models"
    )
    ap.add_argument(
        "--fetch-cpu",
        action="store_true",
        help="instead of an export: CPU per place of one FetchWorker (no Ray), Earth Engine "
        "request templates off and on",
    )
    ap.add_argument(
        "--no-request-templates",
        action="store_true",
        help="export with the Earth Engine client building every request (provider option "
        "request_templates=False)",
    )
    a = ap.parse_args()
    if a.forward:
        forward_main(a)
        return
    if a.fetch_cpu:
        fetch_cpu_main(a)
        return

    import ray

    from rs_embed_ray import OutputSpec, TemporalSpec, export_batch
    from rs_embed_ray.models.runtime import resolve_device

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    weights = {m: "random" for m in models if m not in ("spectral_stats", "gse")}
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="rs_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    ext = {"npz": ".npz", "netcdf": ".nc", "zarr": ".zarr"}[a.format]
    out = work / ("export" if a.layout == "per_item" else f"export{ext}")
    pts = make_points(a.n, 15.0, 45.0, a.buffer_m, a.spread_deg)
    kw = dict(
        spatials=pts,
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=models,
        out=str(out),
        layout=a.layout,
        format=a.format,
        weights=weights,
        num_workers=a.num_workers,
        fetch_threads=a.fetch_threads,
        chunk_size=a.chunk_size,
        save_inputs=not a.no_save_inputs,
        output=OutputSpec.grid() if a.output == "grid" else OutputSpec.pooled(),
        writer_workers=a.writer_workers,
        show_progress=False,
        ee_max_concurrent=a.ee_max_concurrent,
        ee_max_qps=a.ee_max_qps,
        precision=a.precision,
    )
    if a.device:
        kw["device"] = a.device
    emu = None
    if a.backend == "emulator":
        emu = ExternalEmulator(a.latency_ms, a.jitter_ms)
        emu_cpu0 = emu.cpu_s()
        popts: dict = {"url": emu.url}
        if a.no_request_templates:
            popts["request_templates"] = False
        kw.update(backend="gee", provider_options=popts)
    else:
        source = a.source
        if source is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.conftest import write_scene

            source = str(work / "source")
            write_scene(Path(source), "2022-07-01")
        kw.update(backend="local", source=source)
        pts = make_points(a.n, 14.95, 44.95, a.buffer_m, min(a.spread_deg, 0.1))
        kw["spatials"] = pts

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("rs_embed_ray").setLevel(logging.INFO)
    write_s = WriteTime()
    logging.getLogger("rs_embed_ray.pipeline.runner").addHandler(write_s)
    if a.executor == "ray":
        # the cluster an export starts for itself (pipeline.runner.LOCAL_CLUSTER)
        from rs_embed_ray.pipeline.runner import init_local_cluster

        init_local_cluster(log_to_driver=False)
    kw["executor"] = a.executor
    try:
        with PeakRSS(exclude=(emu.proc.pid,) if emu is not None else ()) as mem:
            t0 = time.perf_counter()
            res = export_batch(**kw)
            wall = time.perf_counter() - t0
        items = [res] if isinstance(res, dict) else res
        statuses = [r.get("status") for r in items]
        state = (
            out / "_rs_embed_ray"
            if a.layout == "per_item"
            else out.with_name("export.rs_embed_ray")
        )
        from rs_embed_ray.io.keys import sanitize_key

        window = steady_window(state, "embed", sanitize_key(models[-1]))
        rate, _ = rate_of(window)
        all_ts = [
            r["ts"]
            for r in __import__("rs_embed_ray.io.state", fromlist=["RunState"])
            .RunState(state)
            .read_log()
            if "ts" in r
        ]
        start = min(all_ts) if all_ts else float("nan")
        # with the emulator, both are the service's: a place is logged only when its batch
        # leaves the model stage, so the log's timestamps come in bursts (a whole call's
        # places at once, and the model's queue drained at the end), which overstated the
        # rates of runs in large calls by 10-30 %. The span starts at the first request sent
        # and the steady window is 10-90 % of the pixel requests' completions.
        request_log, peak_in_flight = emu.stats() if emu is not None else ([], 0)
        px = [r for r in request_log if r["kind"] == "computePixels"]
        served = service_window(px)
        if served is not None:
            start = min(r["time"] for r in px)
            window = (served[0], served[1], served[2] * a.n / len(px))  # requests -> places
        span = (max(all_ts) - start) if all_ts else float("nan")
        steady = steady_cpu(mem, window)
        fetch_rate, _ = steady_rate(
            state,
            "patch",
            next(
                (
                    r["key"]
                    for r in __import__("rs_embed_ray.io.state", fromlist=["RunState"])
                    .RunState(state)
                    .read_log()
                    if r["kind"] == "patch"
                ),
                "",
            ),
        )
        cpus = os.cpu_count() or 1
        result = {
            "executor": a.executor,
            "n": a.n,
            "models": models,
            "layout": a.layout,
            "format": a.format,
            "backend": a.backend,
            "latency_ms": a.latency_ms,
            "num_workers": a.num_workers,
            "fetch_threads": a.fetch_threads,
            "chunk_size": a.chunk_size,
            "precision": a.precision,
            "wall_s": round(wall, 2),
            "output": a.output,
            "writer_workers": a.writer_workers,
            # the final write step alone (the per-item files, or the combined file / store)
            "write_s": write_s.seconds,
            "write_items_per_s": round(a.n / write_s.seconds, 1) if write_s.seconds else None,
            "items_per_s_overall": round(a.n / wall, 2),
            "items_per_s_span": (round(a.n / span, 2) if span == span and span > 0 else None),
            "items_per_s_last_model_steady": round(rate, 2),
            "fetch_items_per_s_steady": round(fetch_rate, 2),
            "statuses": {s: statuses.count(s) for s in set(map(str, statuses))},
            "peak_rss_driver_mb": round(mem.peak_driver / 2**20),
            "peak_rss_driver_anon_mb": (
                round(mem.peak_driver_anon / 2**20) if mem.peak_driver_anon is not None else None
            ),
            "peak_rss_total_mb": round(mem.peak_total / 2**20),
            # CPU the export spent per place (driver + Ray processes): with the emulator's
            # share it bounds what this machine's cores can serve, whatever the latency
            "cpu_ms_per_item": round(1000 * mem.total_cpu_s / a.n, 2),
            "sampler_cpu_s": round(mem.own_cpu_s, 2),  # not in the figures: the instrument's
            # the same per place in the steady window alone (10-90 % of the last model's
            # places): what a place costs once the actors are up, without Ray's start-up
            # and shutdown, so what a million places cost apiece
            "cpu_ms_per_item_steady": steady.get("total"),
            "cpu_ms_per_item_steady_by_role": steady.get("by_role"),
            "cpu_ms_per_item_by_role": {
                r: round(1000 * c / a.n, 2)
                for r, c in sorted(mem.cpu_s_by_role().items(), key=lambda kv: -kv[1])
                if c > 0
            },
            "cpus": cpus,
        }
        if emu is not None:
            per_item = [r for r in request_log if r["kind"] in ("value", "computePixels")]
            # server time one place costs (its size query + its pixels), averaged
            busy = sum(r["end"] - r["time"] for r in per_item) / max(1, a.n)
            conc = min(a.num_workers, a.ee_max_concurrent)
            qps_bound = a.ee_max_qps / max(1e-9, len(per_item) / a.n)
            px_rate, px_in_flight = service_rate(px)
            result.update(
                requests_per_item=round(len(request_log) / a.n, 3),
                pixel_requests_per_item=round(len(px) / a.n, 3),
                fetch_latency_per_item_s=round(busy, 4),
                fetch_bound=round(min(conc / busy if busy > 0 else 1e12, qps_bound), 2),
                emulator_peak_in_flight=peak_in_flight,
                ee_pixel_requests_per_s_steady=round(px_rate, 2),
                ee_mean_in_flight_steady=round(px_in_flight, 2),
                emulator_cpu_ms_per_item=round(1000 * (emu.cpu_s() - emu_cpu0) / a.n, 2),
                emulator_cpu_ms_per_item_steady=steady.get("excluded"),
            )
            per_place_cpu = (mem.total_cpu_s + emu.cpu_s() - emu_cpu0) / a.n
            result["cpu_bound"] = round(cpus / per_place_cpu, 2) if per_place_cpu > 0 else None
        ray.shutdown()
        # the device the model ran on ("auto" resolved as the export did); torch is imported
        # only now, so it is not in the driver's measured memory
        result["device"] = resolve_device(a.device)
        if not a.skip_model_bound:
            result["model_bound"] = round(
                model_bound(
                    models,
                    weights,
                    a.chunk_size,
                    round(2 * a.buffer_m / 10),
                    result["device"],
                    a.precision,
                ),
                2,
            )
        bounds = [b for b in (result.get("fetch_bound"), result.get("model_bound")) if b]
        if bounds and result["items_per_s_span"]:
            # end-to-end rate from the first fetched to the last embedded place
            result["efficiency"] = round(result["items_per_s_span"] / min(bounds), 3)
        print(json.dumps(result))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if emu is not None:
            emu.stop()
        if not a.keep and not a.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
