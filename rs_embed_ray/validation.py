"""Checks of a whole export request that go beyond one spec: argument types, bounds, the cost
of one patch, the output location against the inputs, the source, the Ray address.

Why a module of its own: every one of these must fail before Ray starts (and before anything
is written), so the planner and the CLI call them; none of them imports ray or touches the
output location beyond reading it.
"""

from __future__ import annotations

import json
import math
import operator
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import InputTypeError, ModelError
from rs_embed_ray.io.quantize import check_dtype
from rs_embed_ray.io.storage import is_remote

# one patch must fit in memory (one actor holds a batch of them) and in one request plan
MAX_PATCH_SIDE_PX = 32768
MAX_PATCH_BYTES_ENV = "RS_EMBED_RAY_MAX_PATCH_BYTES"
DEFAULT_MAX_PATCH_BYTES = 4 << 30
MAX_RETRY_BACKOFF_S = 3600.0
ADDRESS_PROBE_TIMEOUT_S = 3.0
_TEMP_SUFFIX_BYTES = len(".tmp-") + 7 + 1 + 8  # io.atomic: <final>.tmp-<pid>-<8 hex>
_VIRTUAL_FS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "securityfs",
        "tracefs",
        "configfs",
        "pstore",
        "bpf",
        "fusectl",
        "mqueue",
        "binfmt_misc",
        "autofs",
    }
)

_INT_BOUNDS = {
    "chunk_size": (1, 4096),
    "num_workers": (1, 4096),
    "max_retries": (0, 100),
    "writer_workers": (1, 1024),
    "fetch_threads": (1, 1024),
    "ee_max_concurrent": (1, 100_000),
}
_BOOLS = (
    "save_inputs",
    "save_embeddings",
    "save_manifest",
    "fail_on_bad_input",
    "continue_on_error",
    "async_write",
    "resume",
    "show_progress",
    "spatial_batching",
)
_PATHS = ("out", "out_dir", "out_path", "source")
_STRINGS = (
    "layout",
    "backend",
    "device",
    "format",
    "precision",
    "ray_address",
    "executor",
    "ee_quota_actor",
    "dtype",
)


def _type_name(v: Any) -> str:
    return type(v).__name__


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InputTypeError(f"{what} must be an integer, got {value!r}.")
    try:
        return operator.index(value)
    except TypeError:
        raise InputTypeError(
            f"{what} must be an integer, got {_type_name(value)} {value!r:.40}."
        ) from None


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or isinstance(value, str):
        raise InputTypeError(f"{what} must be a number, got {_type_name(value)} {value!r:.40}.")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputTypeError(
            f"{what} must be a number, got {_type_name(value)} {value!r:.40}."
        ) from None
    if not math.isfinite(out):
        raise ModelError(f"{what} must be a finite number, got {value!r}.")
    return out


def _mapping_of(value: Any, what: str, example: str, *, values: type | tuple[type, ...]) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise InputTypeError(
            f"{what} must be a mapping {example}, got {_type_name(value)} {value!r:.60}."
        )
    for k, v in value.items():
        if not isinstance(k, str):
            raise InputTypeError(f"{what}: keys must be model ids (strings), got {k!r:.40}.")
        if not isinstance(v, values):
            raise InputTypeError(
                f"{what}[{k!r}] must be {example.split(':', 1)[-1].strip(' }')}, got "
                f"{_type_name(v)} {v!r:.40}."
            )


def check_call(args: Mapping[str, Any]) -> None:
    """Types and bounds of ``plan_export``'s keyword arguments (the Python API's first gate):
    a wrong type is an :class:`InputTypeError` (a ``TypeError``) naming the argument, a value
    out of range a :class:`ModelError` (a ``ValueError``)."""
    from rs_embed_ray.specs import InputPrepSpec, OutputSpec, SensorSpec, TemporalSpec

    models = args.get("models")
    if isinstance(models, str):
        raise InputTypeError(
            f"models must be a list of model ids, got the string {models!r:.40}; "
            f"use [{models!r:.40}]."
        )
    if not isinstance(models, (list, tuple)):
        raise InputTypeError(f"models must be a list of model ids, got {_type_name(models)}.")
    names = args.get("names")
    if names is not None and (isinstance(names, str) or not isinstance(names, (list, tuple))):
        raise InputTypeError(f"names must be a list of strings, got {_type_name(names)}.")
    temporal = args.get("temporal")
    if temporal is not None and not isinstance(temporal, TemporalSpec):
        raise InputTypeError(
            f"temporal must be a TemporalSpec (TemporalSpec.range(start, end) or "
            f"TemporalSpec.year(y)) or None, got {_type_name(temporal)} {temporal!r:.40}."
        )
    for key, cls, hint in (
        ("output", OutputSpec, "OutputSpec.pooled() or OutputSpec.grid()"),
        ("sensor", SensorSpec, "a SensorSpec"),
    ):
        v = args.get(key)
        if v is not None and not isinstance(v, cls):
            raise InputTypeError(f"{key} must be {hint} or None, got {_type_name(v)} {v!r:.40}.")
    prep = args.get("input_prep")
    if prep is not None and not isinstance(prep, (str, InputPrepSpec)):
        raise InputTypeError(
            f"input_prep must be 'resize', 'tile', 'auto' or an InputPrepSpec, got "
            f"{_type_name(prep)}."
        )
    _mapping_of(
        args.get("weights"), "weights", "{model: path or 'random'}", values=(str, os.PathLike)
    )
    _mapping_of(args.get("model_configs"), "model_configs", "{model: {key: value}}", values=dict)
    _mapping_of(
        args.get("per_model_sensors"), "per_model_sensors", "{model: SensorSpec}", values=SensorSpec
    )
    popts = args.get("provider_options")
    if popts is not None and not isinstance(popts, Mapping):
        raise InputTypeError(f"provider_options must be a mapping, got {_type_name(popts)}.")
    for key in _PATHS:
        v = args.get(key)
        if v is not None and not isinstance(v, (str, os.PathLike)):
            raise InputTypeError(f"{key} must be a path (str), got {_type_name(v)} {v!r:.40}.")
    for key in _STRINGS:
        v = args.get(key)
        if v is not None and not isinstance(v, str):
            raise InputTypeError(f"{key} must be a string, got {_type_name(v)} {v!r:.40}.")
    for key in _BOOLS:
        v = args.get(key)
        if key in args and not isinstance(v, bool) and type(v).__name__ != "bool_":
            raise InputTypeError(f"{key} must be True or False, got {_type_name(v)} {v!r:.40}.")
    for key, (lo, hi) in _INT_BOUNDS.items():
        if key not in args:
            continue
        v = _int(args[key], key)
        if v < lo:
            raise ModelError(f"{key} must be >= {lo}, got {v}.")
        if v > hi:
            raise ModelError(f"{key} must be <= {hi}, got {v}.")
    if "retry_backoff_s" in args:
        b = _float(args["retry_backoff_s"], "retry_backoff_s")
        if not 0 <= b <= MAX_RETRY_BACKOFF_S:
            raise ModelError(
                f"retry_backoff_s must be within [0, {MAX_RETRY_BACKOFF_S:g}] seconds, got {b:g}."
            )
    if "ee_max_qps" in args:
        q = _float(args["ee_max_qps"], "ee_max_qps")
        if not q > 0:
            raise ModelError(f"ee_max_qps must be > 0 (requests per second), got {q:g}.")
    if args.get("precision", "auto") not in ("auto", "float32"):
        raise ModelError(f"precision must be 'auto' or 'float32', got {args['precision']!r}.")
    check_quota_actor_name(args.get("ee_quota_actor"))
    check_executor(args)
    if "dtype" in args:
        try:
            check_dtype(args["dtype"])
        except ValueError as exc:
            raise ModelError(f"{exc} (CLI --dtype)") from None


def check_quota_actor_name(name: str | None) -> None:
    """A Ray actor name (letters, digits, ``_.-``), or None for the run's own quota split."""
    if name is None:
        return
    name = str(name).strip()
    if not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise ModelError(
            f"ee_quota_actor {name!r}: use a name of letters, digits, '_', '.' or '-' "
            "(the same name in every job that shares the quota)."
        )


# -- the cost of one patch ---------------------------------------------------------------


def max_patch_bytes() -> int:
    raw = os.environ.get(MAX_PATCH_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PATCH_BYTES
    try:
        return max(1, int(raw))
    except ValueError:
        raise ModelError(f"{MAX_PATCH_BYTES_ENV} must be a number of bytes, got {raw!r}.") from None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def check_patch_sizes(plan: Any) -> None:
    """Refuse a place whose patch cannot work: more than ``MAX_PATCH_SIDE_PX`` a side, or
    more bytes (pixels x bands x frames x 4) than ``RS_EMBED_RAY_MAX_PATCH_BYTES`` (4 GiB)."""
    from rs_embed_ray.geo import grid_for

    limit = max_patch_bytes()
    for g in plan.groups:
        scale = float(g.sensor.scale_m)
        if not (math.isfinite(scale) and scale > 0):
            raise ModelError(f"sensor {g.sensor.collection}: scale_m must be > 0, got {scale}.")
        frames = int(g.n_frames or 1)
        per_px = 4 * len(g.sensor.bands) * frames
        for i, s in enumerate(plan.spatials):
            grid = grid_for(s, scale)
            side = max(grid.width, grid.height)
            cost = grid.width * grid.height * per_px
            if side > MAX_PATCH_SIDE_PX or cost > limit:
                what = f"buffer_m={s.buffer_m:g}" if hasattr(s, "buffer_m") else "the box"
                raise ModelError(
                    f"spatials[{i}] ({plan.names[i]}): {what} at {scale:g} m is a "
                    f"{grid.width} x {grid.height} px patch of {len(g.sensor.bands)} band(s) x "
                    f"{frames} frame(s) ({_gib(cost)}); one patch may be at most "
                    f"{MAX_PATCH_SIDE_PX} px a side and {_gib(limit)} "
                    f"(${MAX_PATCH_BYTES_ENV}): use a smaller buffer_m / box or a coarser scale."
                )


def check_name_lengths(plan: Any) -> None:
    """Every per-item file (array, sidecar, their temp files) must fit the file system's
    name limit; found here rather than when the first file is written, after the work."""
    if plan.layout != "per_item" or is_remote(plan.out_path):
        return  # object keys are up to 1024 bytes: no per-name limit worth checking
    folder = plan.out_path
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        limit = int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError):
        limit = 255
    suffix = max(len(plan.ext.encode()), len(b".json")) + _TEMP_SUFFIX_BYTES
    for i, name in enumerate(plan.names):
        n = len(name.encode("utf-8"))
        if n + suffix > limit:
            raise ModelError(
                f"names[{i}] is {n} bytes long ({name[:24]!r}...); with its extension and "
                f"temp suffix a file name may hold at most {limit - suffix} bytes here: "
                "use a shorter name."
            )


# -- where the output goes ---------------------------------------------------------------


def _mount_of(path: Path) -> tuple[str, str] | None:
    """(mount point, fs type) of the mount holding ``path``, from /proc/mounts (Linux)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    p = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and (
            best is None or len(mnt) > len(best[0])
        ):
            best = (mnt, parts[2])
    return best


def check_output_location(layout: str, path: Path) -> None:
    """Beyond permissions (which root ignores): not a file-system root, not on a virtual or
    read-only file system."""
    if is_remote(path):
        return  # io.storage.check_bucket checks a bucket
    folder = path if layout == "per_item" else path.parent
    if folder == folder.parent:
        raise ModelError(
            f"Output {folder} is the root of the file system; choose a folder of its own."
        )
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    mount = _mount_of(probe.resolve())
    if mount is not None and mount[1] in _VIRTUAL_FS:
        raise ModelError(
            f"Output {folder} is on {mount[0]}, a virtual file system ({mount[1]}); "
            "choose a folder on a disk."
        )
    try:
        st = os.statvfs(probe)
    except OSError:
        return
    if st.f_flag & os.ST_RDONLY:
        raise ModelError(
            f"Output {folder} is on a read-only file system (checked {probe}); "
            "choose a writable folder."
        )


def _same(a: Path, b: Path) -> bool:
    if is_remote(a) or is_remote(b):
        return str(a) == str(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_inputs(plan: Any, inputs: list[tuple[str, str | os.PathLike[str]]]) -> None:
    """An output must never be one of the run's inputs (the points file, the source): the
    export would overwrite what it reads. ``inputs`` holds (what, path) pairs."""
    outs: list[Path] = []
    if plan.layout == "combined":
        outs.append(plan.out_path)
    else:
        outs.extend(plan.item_path(i) for i in range(plan.n_items))
        outs.extend(plan.item_path(i).with_suffix(".json") for i in range(plan.n_items))
    for what, raw in inputs:
        src = Path(raw).expanduser().resolve()
        if plan.layout == "per_item" and (src == plan.out_path or _same(src, plan.out_path)):
            raise ModelError(
                f"Output folder {plan.out_path} is the {what}; choose another output folder."
            )
        for o in outs:
            if o == src or _same(o, src):
                raise ModelError(
                    f"Output {o} is the {what} ({raw}); the export would overwrite its own "
                    "input: choose another output."
                )


def check_source(source: str | os.PathLike[str] | None) -> None:
    """A local source must hold rasters: a raster file, an index, a GDAL name, or a folder
    with at least one raster (a text file or an empty folder is refused now, not per place)."""
    from rs_embed_ray.providers.local import INDEX_NAMES, RASTER_SUFFIXES

    if source is None:
        return
    text = str(source)
    p = Path(text).expanduser()
    if not p.exists():
        return  # resolve_backend says so
    if p.is_dir():
        if p.suffix.lower() == ".zarr":
            return
        children = sorted(p.iterdir())
        if any(c.name in INDEX_NAMES for c in children):
            return
        rasters = [c for c in children if c.suffix.lower() in RASTER_SUFFIXES and c.is_file()]
        if rasters:
            _open_raster(rasters[0], text)
            return
        raise ModelError(
            f"source {text!r} is a folder without rasters (no {'/'.join(RASTER_SUFFIXES)} file "
            f"and no {' or '.join(INDEX_NAMES)}); pass a raster file or folder."
        )
    if p.name in INDEX_NAMES or p.suffix.lower() in (".json", ".csv"):
        return
    if p.suffix.lower() not in RASTER_SUFFIXES:
        raise ModelError(
            f"source {text!r} is not a raster ({p.suffix or 'no extension'}); use a GeoTIFF "
            f"or another {'/'.join(RASTER_SUFFIXES)} file, a folder of them, or a source.json."
        )
    _open_raster(p, text)


def _open_raster(path: Path, source: str) -> None:
    """Open the raster's header (GDAL reads no pixels): a text file named .tif is refused."""
    try:
        import rasterio
    except ImportError:  # pragma: no cover - the local backend needs it anyway
        return
    try:
        with rasterio.open(path):
            pass
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"source {source!r}: {path.name} is not a readable raster ({first})."
        ) from None


def check_existing_format(plan: Any) -> None:
    """Never mix formats in one output: an output written as netcdf is not resumed (or
    overwritten) as npz; its run.json (and, per item, its files) say what it holds."""
    from rs_embed_ray.io.formats import all_formats

    info_path = plan.state_dir / "run.json"
    fmt: str | None = None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if isinstance(info, dict) and isinstance(info.get("format"), str):
            fmt = info["format"]
    except (OSError, ValueError, RecursionError):
        pass
    if fmt is None and plan.layout == "per_item" and plan.out_path.is_dir():
        for other in all_formats():
            if other.name != plan.format and any(plan.out_path.glob(f"*{other.ext}")):
                fmt = other.name
                break
    if fmt is not None and fmt != plan.format:
        raise ModelError(
            f"Output {plan.out_path} holds a {fmt} export; writing {plan.format} there would "
            f"mix formats: use --format {fmt} (format={fmt!r}) or another output."
        )


# -- the Ray address ---------------------------------------------------------------------


def _address_of(address: str) -> tuple[str, int] | None:
    a = address.strip()
    for prefix in ("ray://", "http://", "https://"):
        if a.startswith(prefix):
            a = a[len(prefix) :]
    a = a.split("/", 1)[0]
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


EXECUTORS = ("auto", "ray", "local")  # what each runs: pipeline.executor


def check_executor(args: dict[str, Any]) -> None:
    """``executor`` is one of EXECUTORS; ``local`` runs without Ray, so it cannot take a Ray
    address or share a quota actor."""
    name = args.get("executor", "auto")
    if name not in EXECUTORS:
        raise ModelError(
            f"executor must be one of {', '.join(EXECUTORS)} (CLI --executor), got {name!r}."
        )
    if name != "local":
        return
    if args.get("ray_address") is not None:
        raise ModelError(
            "executor='local' runs in this process, without Ray, but ray_address (CLI "
            "--address) names a cluster: drop one of them."
        )
    if args.get("ee_quota_actor"):
        raise ModelError(
            "executor='local' runs without Ray, but ee_quota_actor shares a quota through a Ray "
            "actor: drop one of them, or use executor='ray'."
        )


def check_ray_address(address: str | None) -> None:
    """A given address must answer: a TCP probe (seconds) instead of Ray's own minute of
    retries and its traceback. ``auto`` needs a cluster started on this machine."""
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or None
        if address is None:
            return
    a = address.strip()
    if a in ("", "local"):
        return
    if a == "auto":
        current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        try:
            a = current.read_text().strip()
        except OSError:
            raise ModelError(
                "ray_address='auto' (CLI --address auto): no Ray cluster was started on this "
                "machine (ray start --head); pass its address, or omit --address to run locally."
            ) from None
    hp = _address_of(a)
    if hp is None:
        raise ModelError(
            f"Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379 or "
            "ray://10.0.0.5:10001)."
        )
    try:
        with socket.create_connection(hp, timeout=ADDRESS_PROBE_TIMEOUT_S):
            return
    except OSError as exc:
        raise ModelError(
            f"No Ray cluster answers at {address!r} ({hp[0]}:{hp[1]}: {exc}); start it "
            "(ray start --head) or fix --address."
        ) from None


__all__ = [
    "check_call",
    "check_existing_format",
    "check_name_lengths",
    "check_not_inputs",
    "check_output_location",
    "check_patch_sizes",
    "check_executor",
    "check_ray_address",
    "check_source",
    "max_patch_bytes",
]
