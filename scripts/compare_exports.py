"""Prove a redesign leaves the exports unchanged: make a fixed set of exports, compare two sets.

    python scripts/compare_exports.py run OUT_DIR      # the fixed exports (a local Ray, ~2 min)
    python scripts/compare_exports.py diff A B         # exit 0 when identical, 1 otherwise

``run`` uses only the public API (``export_batch`` and the ``rs-embed-ray export`` CLI), seeded
random checkpoints in the published formats, a synthetic raster source written here, and the
Earth Engine emulator, so the same script runs unchanged before and after a redesign. It covers
both layouts, npz / netCDF / GeoParquet, the local and gee backends, two models (remoteclip and
gse), save_inputs on and off, resume (after a deleted per-item file, and after a finished run;
what the second run wrote is recorded) and one CLI export. Each export's return value is kept
as JSON under ``returns/``.

``diff`` compares two trees file by file. Equal bytes pass; otherwise the decoded content must
be equal, after dropping only the keys in ``VOLATILE_KEYS`` (the tree's own root folder, which
differs by construction, becomes a token): npz members' raw bytes, netCDF
via xarray ``identical`` plus array bytes, Parquet tables plus schema metadata, JSON / JSON
lines. Every other difference, a flipped float bit included, is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The keys whose values legitimately differ between two runs of the same code on the same
# inputs. They are dropped wherever they appear (JSON files, JSON lines, JSON held in netCDF
# attributes and Parquet metadata, netCDF attributes). Nothing else is dropped.
VOLATILE_KEYS: dict[str, str] = {
    # wall-clock times, UTC to the second (io/manifest.py utc_ts)
    "created_at": "when a manifest / file was written",
    "completed_at": "when a combined export finished",
    "updated_at": "when the run state (run.json) was last written",
    "t": "when a step was logged (log.jsonl)",
    "ts": "the same as a Unix time in ms, for throughput figures (log.jsonl)",
    # identities that each run draws afresh
    "node": "the Ray node id that did a step (log.jsonl): new for every ray.init",
    "shard": "a step's shard file name ends in uuid4 (log.jsonl); shards are gone at the end",
}

ROOT_TOKEN = "<ROOT>"  # the tree's own absolute folder (checkpoint/source/output paths)
# the emulator's URL (a free port, so it varies), for the record; no export records it, and
# `diff` skips this one file
EMULATOR_FILE = "emulator_url.txt"

# -- the fixed exports ---------------------------------------------------------------------

BANDS = ("B2", "B3", "B4", "B8")
CENTER = (15.0, 45.0)  # lon, lat on the central meridian of UTM 33N (easting 500000)
SIDE_PX = 400  # 4 km of 10 m pixels around CENTER
DATES = (("2022-07-01", 0.0), ("2022-08-01", 100.0))
N_PLACES = 3
SEED = 0
# a new name whenever the inputs change (see shared_inputs)
INPUTS = Path(tempfile.gettempdir()) / "rs_embed_ray_compare_inputs_v1"


def write_scene(folder: Path, day: str, offset: float) -> None:
    """Dated single-band GeoTIFFs <date>_<band>.tif in UTM 33N, 10 m, smooth gradients."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    half = SIDE_PX * 10.0 / 2
    transform = from_origin(500000.0 - half, 4983000.0 + half, 10.0, 10.0)
    yy, xx = np.mgrid[0:SIDE_PX, 0:SIDE_PX].astype(np.float32)
    for b, name in enumerate(BANDS):
        data = (500.0 + 300.0 * b + 0.5 * xx + 0.25 * yy + offset).astype(np.float32)
        profile = dict(driver="GTiff", width=SIDE_PX, height=SIDE_PX, count=1, dtype="float32")
        profile.update(crs="EPSG:32633", transform=transform, nodata=-9999.0)
        with rasterio.open(folder / f"{day}_{name}.tif", "w", **profile) as ds:
            ds.write(data, 1)


def places() -> list[Any]:
    from rs_embed_ray import PointBuffer

    return [
        PointBuffer(CENTER[0] + 0.004 * (i - 1), CENTER[1] + 0.003 * (i - 1), 160.0)
        for i in range(N_PLACES)
    ]


def _to_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _save_return(out: Path, name: str, value: Any) -> None:
    (out / "returns").mkdir(exist_ok=True)
    text = json.dumps(_to_json(value), indent=2, sort_keys=True) + "\n"
    (out / "returns" / f"{name}.json").write_text(text)


def _stat_tree(root: Path) -> dict[str, tuple[int, int, int]]:
    if root.is_file():
        files = [root]
        base = root.parent
    else:
        files = [p for p in root.rglob("*") if p.is_file()]
        base = root
    out = {}
    for p in files:
        st = p.stat()
        out[str(p.relative_to(base))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _written(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """What a run wrote: files it created, replaced (atomic writes change the inode) or
    removed, by path relative to the export's output."""
    return {
        "created": sorted(set(after) - set(before)),
        "replaced": sorted(k for k in set(after) & set(before) if after[k] != before[k]),
        "removed": sorted(set(before) - set(after)),
    }


def shared_inputs() -> Path:
    """The raster source and checkpoint, at one fixed path for every run on this machine.

    Their absolute paths enter the request fingerprints (hashes in manifests and the log),
    so they must not depend on OUT_DIR. Written once into a temp folder and renamed into
    place; later and concurrent runs reuse it (the content is fixed by SEED and DATES).
    """
    from rs_embed_ray.testing.checkpoints import write_remoteclip_checkpoint

    if INPUTS.is_dir():
        return INPUTS
    tmp = Path(tempfile.mkdtemp(prefix=INPUTS.name + ".tmp-", dir=INPUTS.parent))
    for day, offset in DATES:
        write_scene(tmp / "source", day, offset)
    write_remoteclip_checkpoint(tmp / "remoteclip", seed=SEED)
    try:
        tmp.rename(INPUTS)
    except OSError:  # another run put it there first
        shutil.rmtree(tmp, ignore_errors=True)
    return INPUTS


class Exports:
    """The fixed exports of ``run``; each writes under ``out`` and saves its return value."""

    def __init__(self, out: Path, work: Path, emulator_url: str, inputs: Path) -> None:
        from rs_embed_ray import TemporalSpec

        self.out = out
        self.work = work
        self.url = emulator_url
        self.temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
        self.source = inputs / "source"
        self.weights = str(inputs / "remoteclip" / "model.safetensors")

    def export(self, name: str, rel: str, *, backend: str, models: list[str], **kw: Any) -> Any:
        from rs_embed_ray import export_batch

        if backend == "local":
            kw.update(source=str(self.source))
        else:
            kw.update(provider_options={"url": self.url})
        weights = {"remoteclip": self.weights} if "remoteclip" in models else None
        t0 = time.monotonic()
        result = export_batch(
            spatials=places(),
            temporal=self.temporal,
            models=models,
            out=str(self.out / rel),
            backend=backend,
            weights=weights,
            device="cpu",
            show_progress=False,
            num_workers=2,
            chunk_size=2,
            **kw,
        )
        _save_return(self.out, name, result)
        print(f"  {name}: {time.monotonic() - t0:.1f} s", flush=True)
        return result

    def resume(self, name: str, rel: str, drop: str | None, **kw: Any) -> None:
        """Export, delete ``drop`` (one per-item file) or nothing, export again with
        ``resume=True``; record what the second run wrote."""
        self.export(f"{name}_first", rel, **kw)
        if drop:
            (self.out / rel / drop).unlink()
        before = _stat_tree(self.out / rel)
        self.export(f"{name}_second", rel, resume=True, **kw)
        _save_return(self.out, f"{name}_written", _written(before, _stat_tree(self.out / rel)))

    def cli(self, name: str, rel: str) -> None:
        from click.testing import CliRunner

        from rs_embed_ray.cli import main

        pts = self.work / "points.csv"
        rows = ["name,lon,lat,buffer_m"]
        rows += [f"site{i},{p.lon},{p.lat},{p.buffer_m}" for i, p in enumerate(places())]
        pts.write_text("\n".join(rows) + "\n")
        args = ["export", "--points", str(pts), "--models", "remoteclip"]
        args += ["--weights", f"remoteclip={self.weights}", "--start", "2022-06-01"]
        args += ["--end", "2022-09-01", "--out", str(self.out / rel), "--backend", "local"]
        args += ["--source", str(self.source), "--device", "cpu", "--num-workers", "2"]
        args += ["--chunk-size", "2", "--layout", "combined", "--format", "netcdf"]
        args += ["--no-progress"]
        res = CliRunner().invoke(main, args)
        if res.exception and not isinstance(res.exception, SystemExit):
            raise res.exception
        _save_return(self.out, name, {"exit_code": res.exit_code, "output": res.output})

    def all(self) -> None:
        rc = ["remoteclip"]
        both = ["remoteclip", "gse"]
        ex = self.export
        ex("local_per_item_netcdf", "local_per_item_nc", backend="local", models=rc,
           layout="per_item", format="netcdf", save_inputs=False)  # fmt: skip
        ex("gee_per_item_npz", "gee_per_item_npz", backend="gee", models=both,
           layout="per_item")  # fmt: skip
        ex("gee_combined_netcdf", "gee_combined_nc.nc", backend="gee", models=both,
           layout="combined", format="netcdf", save_inputs=False)  # fmt: skip
        ex("gee_combined_geoparquet", "gee_combined_pq.parquet", backend="gee", models=both,
           layout="combined", format="geoparquet", save_inputs=False)  # fmt: skip
        # local per_item npz with inputs, then resumed after one item's file is deleted
        self.resume("resume_deleted_item", "local_per_item_npz", "p00001.npz",
                    backend="local", models=rc, layout="per_item")  # fmt: skip
        # local combined npz without inputs, then resumed when nothing is left to do
        self.resume("resume_finished", "local_combined_npz.npz", None, backend="local",
                    models=rc, layout="combined", save_inputs=False)  # fmt: skip
        # local combined netCDF with inputs, through the CLI
        self.cli("cli_combined_netcdf", "cli_combined_nc.nc")


@contextlib.contextmanager
def _quiet_ee_env(work: Path) -> Iterator[None]:
    """No developer Earth Engine settings or credentials; google.auth probes nothing."""
    saved = dict(os.environ)
    for name in ("RS_EMBED_RAY_EE_URL", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT",
                 "GOOGLE_APPLICATION_CREDENTIALS"):  # fmt: skip
        os.environ.pop(name, None)
    os.environ.update(NO_GCE_CHECK="True", HOME=str(work / "home"))
    os.environ.update(CLOUDSDK_CONFIG=str(work / "gcloud"), RAY_AUTH_MODE="disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(out_dir: str) -> int:
    """Write the fixed exports into ``out_dir`` (new or empty)."""
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: {out} is not an empty folder; choose a new OUT_DIR", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="compare-exports-"))
    try:
        with _quiet_ee_env(work):
            import ray

            from rs_embed_ray.testing.ee_emulator import EEEmulator

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                with EEEmulator(retry_after_s=0) as emu:
                    (out / EMULATOR_FILE).write_text(emu.url + "\n")
                    exports = Exports(out, work, emu.url, shared_inputs())
                    print(f"  inputs ready: {time.monotonic() - t0:.1f} s", flush=True)
                    exports.all()
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out} in {time.monotonic() - t0:.1f} s")
    return 0


# -- the comparison ------------------------------------------------------------------------


class Tree:
    """One export tree and how its run-specific strings read when normalised."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()

    def files(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()}

    def norm(self, value: Any) -> Any:
        """Drop VOLATILE_KEYS at any depth; the root folder becomes a token; floats become
        their bits; JSON text inside strings is decoded so that its keys are seen too."""
        if isinstance(value, dict):
            return {k: self.norm(v) for k, v in value.items() if k not in VOLATILE_KEYS}
        if isinstance(value, list | tuple):
            return [self.norm(v) for v in value]
        if isinstance(value, np.ndarray | np.generic) and not isinstance(value, np.str_):
            arr = np.asarray(value)
            return ("array", arr.dtype.str, arr.shape, arr.tobytes())  # bit-exact, NaN too
        if isinstance(value, float):
            return ("float", struct.pack("<d", value))  # bit-exact, NaN == NaN
        if isinstance(value, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                return self.norm(value.decode("utf-8"))
            return value
        if isinstance(value, str):
            s = value.strip()
            if s[:1] in "{[" and s[-1:] in "}]":
                with contextlib.suppress(ValueError):
                    return self.norm(json.loads(s))
            return value.replace(str(self.root), ROOT_TOKEN)
        return value


def _show(v: Any) -> str:
    if isinstance(v, tuple) and v[:1] == ("float",):
        return repr(struct.unpack("<d", v[1])[0])
    return repr(v)[:120]


def _diffs(a: Any, b: Any, where: str = "") -> list[str]:
    """Every place where two normalised JSON-like values differ, for the report."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'B' if k not in a else 'A'}")
            elif a[k] != b[k]:
                out += _diffs(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y
                for d in _diffs(x, y, f"{where}[{i}]")]  # fmt: skip
    return [f"{where or '/'}: {_show(a)} != {_show(b)}"]


def _cmp_json(ta: Tree, tb: Tree, a: Path, b: Path) -> list[str]:
    return _diffs(ta.norm(json.loads(a.read_text())), tb.norm(json.loads(b.read_text())))


def _cmp_jsonl(ta: Tree, tb: Tree, a: Path, b: Path) -> list[str]:
    """JSON lines as a sorted list: the run log's lines come in the order steps finished,
    which concurrent actors decide."""

    def lines(tree: Tree, path: Path) -> list[Any]:
        rows = [tree.norm(json.loads(x)) for x in path.read_text().splitlines() if x.strip()]
        return sorted(rows, key=repr)

    return _diffs(lines(ta, a), lines(tb, b))


def _cmp_npz(ta: Tree, tb: Tree, a: Path, b: Path) -> list[str]:
    """Zip members by name, each member's uncompressed bytes (the .npy header included)."""
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        na, nb = set(za.namelist()), set(zb.namelist())
        out = [f"member {m}: only in {'A' if m in na else 'B'}" for m in sorted(na ^ nb)]
        for m in sorted(na & nb):
            if za.read(m) != zb.read(m):
                out.append(f"member {m}: bytes differ")
        if [i.compress_type for i in za.infolist()] != [i.compress_type for i in zb.infolist()]:
            out.append("compression differs")
    return out


def _attrs_diff(ta: Tree, tb: Tree, a: dict, b: dict, where: str) -> list[str]:
    va, vb = ta.norm(dict(a)), tb.norm(dict(b))
    return [f"{where} attrs {d}" for d in _diffs(va, vb)]


def _cmp_netcdf(ta: Tree, tb: Tree, a: Path, b: Path) -> list[str]:
    """xarray ``identical`` (raw, undecoded) after normalising attributes, plus array bytes."""
    import xarray as xr

    with xr.open_dataset(a, decode_cf=False) as da, xr.open_dataset(b, decode_cf=False) as db:
        da, db = da.load(), db.load()
    out = _attrs_diff(ta, tb, da.attrs, db.attrs, "global")
    names = sorted(set(da.variables) | set(db.variables))
    for n in names:
        if n not in da.variables or n not in db.variables:
            out.append(f"variable {n}: only in {'A' if n in da.variables else 'B'}")
            continue
        va, vb = da.variables[n], db.variables[n]
        out += _attrs_diff(ta, tb, va.attrs, vb.attrs, f"variable {n}")
        if va.dims != vb.dims or va.dtype != vb.dtype or va.shape != vb.shape:
            out.append(f"variable {n}: {va.dims}{va.dtype}{va.shape} != {vb.dims}{vb.dtype}")
        elif np.ascontiguousarray(va.values).tobytes() != np.ascontiguousarray(vb.values).tobytes():
            out.append(f"variable {n}: array bytes differ")
        if va.encoding.get("dtype") != vb.encoding.get("dtype"):
            out.append(f"variable {n}: encoding dtype differs")
    if not out:
        da.attrs, db.attrs = ta.norm(dict(da.attrs)), tb.norm(dict(db.attrs))
        for n in names:
            da[n].attrs = ta.norm(dict(da[n].attrs))
            db[n].attrs = tb.norm(dict(db[n].attrs))
        if not da.identical(db):
            out.append("xarray identical() is False")
    return out


def _cmp_parquet(ta: Tree, tb: Tree, a: Path, b: Path) -> list[str]:
    """Table equality (values, types, order) plus the schema metadata, normalised."""
    import pyarrow.parquet as pq

    xa, xb = pq.read_table(a), pq.read_table(b)
    out = []
    ma, mb = xa.schema.metadata or {}, xb.schema.metadata or {}
    va = {k.decode(): ta.norm(v) for k, v in ma.items()}
    vb = {k.decode(): tb.norm(v) for k, v in mb.items()}
    out += [f"schema metadata {d}" for d in _diffs(va, vb)]
    xa, xb = xa.replace_schema_metadata(None), xb.replace_schema_metadata(None)
    if not xa.schema.equals(xb.schema, check_metadata=True):
        out.append(f"schema differs: {xa.schema} != {xb.schema}")
    elif not xa.equals(xb):
        out.append("table values differ")
    else:
        for name in xa.column_names:  # bit-exact floats (equals() treats NaNs by value)
            ca, cb = xa[name].combine_chunks(), xb[name].combine_chunks()
            if [x for x in ca.buffers() if x] != [x for x in cb.buffers() if x]:
                out.append(f"column {name}: buffer bytes differ")
    return out


COMPARERS = {
    ".json": _cmp_json,
    ".jsonl": _cmp_jsonl,
    ".npz": _cmp_npz,
    ".nc": _cmp_netcdf,
    ".parquet": _cmp_parquet,
}


def compare_file(ta: Tree, tb: Tree, rel: str) -> list[str]:
    """The differences of one relative path (empty when equal)."""
    a, b = ta.root / rel, tb.root / rel
    if a.read_bytes() == b.read_bytes():
        return []
    if rel == EMULATOR_FILE:
        return []
    cmp = COMPARERS.get(Path(rel).suffix)
    if cmp is None:
        return ["bytes differ"]
    try:
        return cmp(ta, tb, a, b)
    except Exception as exc:  # an unreadable file is a difference, not a crash
        return [f"cannot compare: {type(exc).__name__}: {exc}"]


def diff(a: str, b: str, stream: io.TextIOBase | None = None) -> int:
    """Print one line per difference and a summary; 0 when the trees match, else 1."""
    stream = stream or sys.stdout
    ta, tb = Tree(a), Tree(b)
    fa, fb = ta.files(), tb.files()
    problems = [f"{rel}: only in A" for rel in sorted(fa - fb)]
    problems += [f"{rel}: only in B" for rel in sorted(fb - fa)]
    same = sorted(fa & fb)
    for rel in same:
        problems += [f"{rel}: {d}" for d in compare_file(ta, tb, rel)]
    for line in problems:
        print(line, file=stream)
    verdict = "identical" if not problems else f"{len(problems)} difference(s)"
    print(f"compared {len(same)} common file(s) of {len(fa | fb)}: {verdict}", file=stream)
    return 0 if not problems else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="write the fixed exports into OUT_DIR (new or empty)")
    p_run.add_argument("out_dir", metavar="OUT_DIR")
    p_diff = sub.add_parser("diff", help="compare two trees written by `run`")
    p_diff.add_argument("a", metavar="A")
    p_diff.add_argument("b", metavar="B")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return run(args.out_dir)
    return diff(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
