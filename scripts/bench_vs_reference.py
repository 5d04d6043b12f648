"""Side by side with rs-embed 0.3.1: the workload of ../shared/anchor/README.md, whole processes.

Each round runs both tools as whole processes (imports, Ray or thread start-up, model load,
writes and exit included), alternating who goes first, and samples the resident memory of each
process tree (for us: the driver and every Ray process). Both sides get the same places
(anchor ``points.py``), the same pixels (anchor ``fake_pixels``, served by our Earth Engine
emulator in its own process for us, by rs-embed's fake provider in-process for them), the same
DOFA checkpoint (anchor ``make_ckpt.py``) and the same fetch latency: 300 +- 50 ms, uniform.

    python scripts/bench_vs_reference.py --n 64 --layouts per_item,combined --rounds 2

prints one JSON line per run and a summary table (places/s, ratio ours / theirs, peak memory).
Without the reference venv (``ANCHOR_PYTHON``, or the default of anchor ``setup_anchor.sh``)
only our side runs. ``--child`` is the mode our side's process runs in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
DOFA_FILE = "DOFA_ViT_base_e100.pth"


def default_anchor_dir() -> Path:
    return Path(os.environ.get("ANCHOR_DIR", REPO.parent / "shared" / "anchor"))


def default_anchor_python() -> str | None:
    env = os.environ.get("ANCHOR_PYTHON")
    if env:
        return env
    cand = Path(os.environ.get("TMPDIR", "/tmp")) / "anchor-venv312" / "bin" / "python"
    return str(cand) if cand.exists() else None


# ------------------------------------------------------------------------ our side (child)
def child(a: argparse.Namespace) -> None:
    """One export of ours as a user would write it; prints the run's timeline as JSON."""
    t_proc = float(a.t_spawn)
    sys.path.insert(0, str(a.anchor_dir))
    from points import make_points  # the anchor's places

    from rs_embed_ray import OutputSpec, PointBuffer, TemporalSpec, export_batch
    from rs_embed_ray.io.state import RunState

    t_import = time.time()
    out = Path(a.out) / ("export" if a.layout == "per_item" else "export.npz")
    pts = [PointBuffer(lon=lon, lat=lat, buffer_m=1120.0) for lon, lat in make_points(a.n, 0)]
    t0 = time.time()
    res = export_batch(
        spatials=pts,
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["dofa"],
        out=str(out),
        layout=a.layout,
        format="npz",
        weights={"dofa": str(Path(a.ckpt_dir) / DOFA_FILE)},
        num_workers=a.num_workers,
        chunk_size=a.chunk_size,
        save_inputs=True,
        output=OutputSpec.pooled(),
        device=a.device,
        executor=a.executor,
        backend="gee",
        provider_options={"url": a.emulator_url},
        show_progress=False,
    )
    t1 = time.time()
    statuses = [res["status"]] if isinstance(res, dict) else list(res.statuses())
    per_item = a.layout == "per_item"
    state = out / "_rs_embed_ray" if per_item else out.with_name("export.rs_embed_ray")
    # when each step finished on its worker (done_at), else when the driver logged it
    recs = [r for r in RunState(state).read_log() if "ts" in r]
    embed = [r.get("done_at", r["ts"]) for r in recs if r["kind"] == "embed"]
    print(
        json.dumps(
            {
                "statuses": {s: statuses.count(s) for s in set(statuses)},
                "import_s": round(t_import - t_proc, 2),
                "export_s": round(t1 - t0, 2),
                # fixed costs of a run, from the process start
                "first_embed_s": round(min(embed) - t_proc, 2) if embed else None,
                "last_embed_s": round(max(embed) - t_proc, 2) if embed else None,
                "export_end_s": round(t1 - t_proc, 2),
                "tail_after_last_embed_s": round(t1 - max(embed), 2) if embed else None,
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------------- orchestration
def whole_process(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; wall seconds from spawn to exit, peak RSS and CPU seconds of its process
    tree (``bench.PeakRSS``, every 0.1 s), and its last JSON line."""
    from bench import PeakRSS

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--t-spawn", repr(time.time())] if "--child" in cmd else cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with PeakRSS(every_s=0.1, pid=proc.pid) as mem:
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t0
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(mem.peak_total / 2**20),
        "cpu_s": round(mem.total_cpu_s, 1),  # until each process's last sample
        "detail": json.loads(lines[-1]),
    }


def ours_cmd(a: argparse.Namespace, layout: str, out: Path, url: str) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--layout-one",
        layout,
        "--n",
        str(a.n),
        "--num-workers",
        str(a.num_workers),
        "--chunk-size",
        str(a.chunk_size),
        "--device",
        a.device,
        "--executor",
        a.executor,
        "--anchor-dir",
        str(a.anchor_dir),
        "--ckpt-dir",
        str(a.ckpt_dir),
        "--emulator-url",
        url,
        "--out",
        str(out),
    ]


def theirs_cmd(a: argparse.Namespace, layout: str, out: Path) -> list[str]:
    return [
        a.anchor_python,
        str(Path(a.anchor_dir) / "bench_rs_embed.py"),
        "--n",
        str(a.n),
        "--models",
        "dofa",
        "--layout",
        layout,
        "--num-workers",
        str(a.num_workers),
        "--chunk-size",
        str(a.chunk_size),
        "--latency-ms",
        str(a.latency_ms),
        "--jitter-ms",
        str(a.jitter_ms),
        "--device",
        a.device,
        "--ckpt-dir",
        str(a.ckpt_dir),
        "--out-dir",
        str(out),
    ]


def start_emulator(a: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """Our emulator serving the anchor's pixels; uniform latency in [lat - jit, lat + jit]."""
    cmd = [sys.executable, "-m", "rs_embed_ray.testing.ee_emulator", "--retry-after-s", "0"]
    cmd += ["--latency-ms", str(a.latency_ms - a.jitter_ms), "--jitter-ms", str(2 * a.jitter_ms)]
    cmd += ["--pixels-from", f"{Path(a.anchor_dir) / 'fake_provider.py'}:fake_pixels"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, line.split()[-1]


def server_timeline(url: str, spawn: float) -> dict:
    """When the emulator saw this run's first and last pixel request, from the spawn."""
    from rs_embed_ray.testing.ee_emulator import fetch_stats

    px = [
        r
        for r in fetch_stats(url)["request_log"]
        if r["kind"] == "computePixels" and r["time"] >= spawn
    ]
    if not px:
        return {}
    return {
        "first_request_s": round(min(r["time"] for r in px) - spawn, 2),
        "first_pixels_s": round(min(r["end"] for r in px) - spawn, 2),
        "last_pixels_s": round(max(r["end"] for r in px) - spawn, 2),
        "pixel_requests": len(px),
    }


def ensure_ckpt(a: argparse.Namespace) -> None:
    if (Path(a.ckpt_dir) / DOFA_FILE).exists():
        return
    if not a.anchor_python:
        raise SystemExit(f"no {DOFA_FILE} in {a.ckpt_dir} and no reference venv to build it")
    make = [a.anchor_python, str(Path(a.anchor_dir) / "make_ckpt.py"), str(a.ckpt_dir)]
    subprocess.run([*make, "--models", "dofa"], check=True)


def orchestrate(a: argparse.Namespace) -> None:
    ensure_ckpt(a)
    layouts = [x.strip() for x in a.layouts.split(",") if x.strip()]
    sides = ["ours", "theirs"] if a.anchor_python and not a.ours_only else ["ours"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    emu, url = start_emulator(a)
    results: list[dict] = []
    try:
        for rnd in range(a.rounds):
            for layout in layouts:
                order = sides if rnd % 2 == 0 else sides[::-1]
                for side in order:
                    with tempfile.TemporaryDirectory(prefix="rs_vsref_") as tmp:
                        cmd = (
                            ours_cmd(a, layout, Path(tmp), url)
                            if side == "ours"
                            else theirs_cmd(a, layout, Path(tmp) / "out")
                        )
                        spawn = time.time()
                        r = whole_process(cmd, env)
                        if side == "ours":
                            r["detail"].update(server_timeline(url, spawn))
                    r.update(side=side, layout=layout, round=rnd, n=a.n)
                    r["places_per_s"] = round(a.n / r["wall_s"], 3)
                    print(json.dumps(r), flush=True)
                    results.append(r)
    finally:
        emu.terminate()
        emu.wait(timeout=10)
    summary(results, a.n)


def summary(results: list[dict], n: int) -> None:
    print(f"\n{n} places, whole-process places/s (median of rounds), peak RSS of all processes")
    print("| layout | rs-embed 0.3.1 | rs-embed-ray | ratio | peak RSS theirs / ours |")
    print("|---|---|---|---|---|")
    for layout in sorted({r["layout"] for r in results}):
        rows = {
            s: [r for r in results if r["layout"] == layout and r["side"] == s]
            for s in ("theirs", "ours")
        }

        def rates(side: str, rows: dict = rows) -> str:
            return ", ".join(f"{r['places_per_s']:.2f}" for r in rows[side]) or "-"

        def med(side: str, key: str, rows: dict = rows) -> float | None:
            vals = [r[key] for r in rows[side]]
            return median(vals) if vals else None

        ours, theirs = med("ours", "places_per_s"), med("theirs", "places_per_s")
        ratio = f"{ours / theirs:.2f}" if ours and theirs else "-"
        mem_t, mem_o = med("theirs", "peak_rss_mb"), med("ours", "peak_rss_mb")
        print(
            f"| {layout} | {rates('theirs')} | {rates('ours')} | {ratio} | "
            f"{mem_t or '-'} / {mem_o} MB |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--layouts", default="per_item,combined")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--jitter-ms", type=float, default=50.0)
    ap.add_argument("--num-workers", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--executor",
        default="auto",
        choices=["auto", "ray", "local"],
        help="our executor (auto: in process at these sizes, as a user gets by default)",
    )
    ap.add_argument("--anchor-dir", type=Path, default=default_anchor_dir())
    ap.add_argument("--anchor-python", default=default_anchor_python())
    ap.add_argument(
        "--ckpt-dir",
        type=Path,
        default=Path(
            os.environ.get("ANCHOR_CKPT_DIR", Path(tempfile.gettempdir()) / "anchor_ckpt")
        ),
    )
    ap.add_argument("--ours-only", action="store_true")
    # the child process's own options
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--layout-one", dest="layout", help=argparse.SUPPRESS)
    ap.add_argument("--emulator-url", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--t-spawn", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
    else:
        orchestrate(a)


if __name__ == "__main__":
    main()
