"""``rs-embed-ray`` command line: export, models, inspect.

Exit codes of ``export``: 0 every item ok, 1 finished with failed items (see the skip list),
2 bad input caught before any work.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from rs_embed_ray.errors import RSEmbedRayError
from rs_embed_ray.io.manifest_list import ManifestList
from rs_embed_ray.io.quantize import DTYPES
from rs_embed_ray.io.storage import STORE_CLIENT_LOGGERS, is_remote
from rs_embed_ray.options import ExportOptions, default
from rs_embed_ray.validation import EXECUTORS

EXIT_OK, EXIT_FAILED_ITEMS, EXIT_BAD_INPUT = 0, 1, 2


def _parse_weights(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        model, sep, path = v.partition("=")
        if not sep or not model.strip() or not path.strip():
            raise click.BadParameter(
                f"{v!r}: use MODEL=PATH or MODEL=random", param_hint="--weights"
            )
        out[model.strip()] = path.strip()
    return out


def _parse_model_configs(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``MODEL.KEY=VALUE`` -> {MODEL: {KEY: VALUE}}; VALUE is read as JSON when it parses
    (numbers, true/false, lists), else kept as a string."""
    out: dict[str, dict[str, Any]] = {}
    for v in values:
        lhs, sep, raw = v.partition("=")
        model, dot, key = lhs.partition(".")
        if not sep or not dot or not model.strip() or not key.strip() or not raw.strip():
            raise click.BadParameter(
                f"{v!r}: use MODEL.KEY=VALUE, e.g. dofa.variant=large",
                param_hint="--model-config",
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw.strip()
        out.setdefault(model.strip(), {})[key.strip()] = value
    return out


def _same_file(a: Path, b: str) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.group()
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output (-v info, -vv debug), Ray's own logs included; without it only "
    "warnings are shown (RS_EMBED_RAY_LOG_LEVEL=INFO sets Ray's level alone).",
)
def main(verbose: int) -> None:
    """Export remote-sensing foundation-model embeddings at scale on Ray."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    # Ray's loggers follow this level (rs_embed_ray.pipeline.quiet), set when Ray starts
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # the object-store clients log request headers (the access key id) at DEBUG
    for name in STORE_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))


@main.command()
@click.option(
    "--points",
    "points",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV, Parquet or GeoJSON: lon,lat[,buffer_m][,name] or "
    "minlon,minlat,maxlon,maxlat[,name]; optional per-place windows: start,end or year "
    "(they override --start/--end/--year for their row).",
)
@click.option("--models", required=True, help="Comma-separated model ids, e.g. remoteclip,prithvi.")
@click.option("--start", help="Window start (YYYY-MM-DD), with --end.")
@click.option("--end", help="Window end, exclusive (YYYY-MM-DD).")
@click.option("--year", type=int, help="A calendar year instead of --start/--end.")
@click.option(
    "--out",
    required=True,
    help="Output folder (per_item) or file (combined); also s3://bucket/prefix or "
    "gs://bucket/prefix (credentials from the environment, AWS_ENDPOINT_URL for an "
    "S3-compatible server).",
)
@click.option(
    "--layout", type=click.Choice(["per_item", "combined"]), default="per_item", show_default=True
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["npz", "netcdf", "geoparquet", "zarr"]),
    default=default("format"),
    show_default=True,
    help="geoparquet: one row per place with its geometry and pooled vectors "
    "(needs --layout combined --output pooled --no-save-inputs); zarr: one Zarr v3 store "
    "written in parallel by chunks of places (needs --layout combined).",
)
@click.option("--buffer-m", type=float, help="Buffer for points files without a buffer_m column.")
@click.option(
    "--backend", type=click.Choice(["auto", "gee", "local"]), default="auto", show_default=True
)
@click.option("--source", help="Raster source for --backend local (file or folder).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--output",
    "output_mode",
    type=click.Choice(["pooled", "grid"]),
    default="pooled",
    show_default=True,
)
@click.option("--pooling", type=click.Choice(["mean", "max"]), default="mean", show_default=True)
@click.option(
    "--chunk-size",
    type=int,
    default=default("chunk_size"),
    show_default=True,
    help="Inference batch size.",
)
@click.option(
    "--num-workers",
    type=int,
    default=default("num_workers"),
    show_default=True,
    help="Fetch actors (concurrent fetches).",
)
@click.option(
    "--writer-workers",
    type=int,
    default=default("writer_workers"),
    show_default=True,
    help="Writers at a time (per-item files; regions of a Zarr store): Ray tasks, or threads "
    "in the model actor that writes the files it finishes.",
)
@click.option("--resume", is_flag=True, help="Skip finished (item, model) pairs; redo the rest.")
@click.option("--continue-on-error", is_flag=True, help="Record failed items and go on.")
@click.option("--max-retries", type=int, default=default("max_retries"), show_default=True)
@click.option(
    "--retry-backoff-s", type=float, default=default("retry_backoff_s"), show_default=True
)
@click.option(
    "--input-prep",
    type=click.Choice(["resize", "tile", "auto"]),
    default=default("input_prep"),
    show_default=True,
)
@click.option("--no-save-inputs", is_flag=True, help="Do not store the fetched input patches.")
@click.option("--no-save-manifest", is_flag=True, help="Do not write JSON sidecars.")
@click.option(
    "--weights",
    multiple=True,
    metavar="MODEL=PATH|random",
    help="Weights file per model, or 'random' for random init (recorded).",
)
@click.option(
    "--model-config",
    "model_config",
    multiple=True,
    metavar="MODEL.KEY=VALUE",
    help="A model option, e.g. dofa.variant=large or olmoearth.patch_size=8 (repeatable).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "float32"]),
    default=default("precision"),
    show_default=True,
    help="auto: mixed precision on GPU; float32: always fp32.",
)
@click.option(
    "--dtype",
    type=click.Choice(list(DTYPES)),
    default=default("dtype"),
    show_default=True,
    help="How vectors are stored: int8 is linear per-vector quantization (scale and offset "
    "stored beside the codes); loading decodes to float32.",
)
@click.option("--address", "ray_address", help="Ray address (default: local, or RAY_ADDRESS).")
@click.option(
    "--executor",
    type=click.Choice(list(EXECUTORS)),
    default=default("executor"),
    show_default=True,
    help="Where the stages run: ray (actors and tasks), local (threads of this process, no "
    "Ray), auto (local for up to 1,000 places when no Ray cluster is given or running).",
)
@click.option(
    "--ee-max-concurrent",
    type=int,
    default=default("ee_max_concurrent"),
    show_default=True,
    help="Cluster-wide Earth Engine requests in flight.",
)
@click.option(
    "--ee-max-qps",
    type=float,
    default=default("ee_max_qps"),
    show_default=True,
    help="Cluster-wide Earth Engine requests per second.",
)
@click.option(
    "--ee-quota-actor",
    metavar="NAME",
    help="Share one Earth Engine quota between jobs on one cluster: every job with the same "
    "NAME takes request slots from one detached actor (default: the run splits its own quota).",
)
@click.option(
    "--ee-project", help="Earth Engine project (default: EE_PROJECT, GOOGLE_CLOUD_PROJECT)."
)
@click.option("--ee-url", help="Earth Engine base URL (default: RS_EMBED_RAY_EE_URL or Google's).")
@click.option("--ee-high-volume", is_flag=True, help="Use Earth Engine's high-volume endpoint.")
@click.option(
    "--ee-max-retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries of a failed Earth Engine request (429/5xx/timeouts); default 5.",
)
@click.option(
    "--spatial-batching",
    is_flag=True,
    help="Fetch nearby places in one Earth Engine request (fewer requests per place).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def export(**o: Any) -> None:
    """Fetch imagery, embed it and write inputs, embeddings and manifests."""
    from rs_embed_ray.api import plan_export, run_planned
    from rs_embed_ray.validation import check_not_inputs

    try:
        options = _export_options(o)
        plan = plan_export(options)  # every input error surfaces here, before Ray starts
        check_not_inputs(plan, [("points file", o["points"])])
    except (RSEmbedRayError, ValueError, TypeError) as exc:
        _fail(str(exc))
        return
    try:
        result = run_planned(plan)  # planned once, above
    except RSEmbedRayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED_ITEMS)
    statuses = item_statuses(result)
    n_ok = statuses.count("ok")
    if not isinstance(result, dict):  # per_item: the manifests (io.manifest_list)
        out = o["out"] if is_remote(o["out"]) else str(Path(o["out"]).resolve())
    else:
        out = (
            result.get("npz_path")
            or result.get("nc_path")
            or result.get("parquet_path")
            or result.get("zarr_path")
            or result.get("resume_output_path")
        )
    click.echo(
        json.dumps(
            {
                "out": out,
                "layout": o["layout"],
                "items": len(statuses),
                "status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
            }
        )
    )
    sys.exit(EXIT_OK if n_ok == len(statuses) else EXIT_FAILED_ITEMS)


# the export command's options that are ExportOptions fields of the same name
_SAME_NAME = (
    "out",
    "layout",
    "backend",
    "source",
    "device",
    "chunk_size",
    "num_workers",
    "writer_workers",
    "resume",
    "continue_on_error",
    "max_retries",
    "retry_backoff_s",
    "input_prep",
    "precision",
    "ray_address",
    "executor",
    "ee_max_concurrent",
    "ee_max_qps",
    "ee_quota_actor",
    "spatial_batching",
    "dtype",
)


def _export_options(o: dict[str, Any]) -> ExportOptions:
    """The export command's options as one ExportOptions (the Python API's keywords)."""
    from rs_embed_ray.io.points import read_places
    from rs_embed_ray.specs import OutputSpec, TemporalSpec

    if o["year"] is not None and (o["start"] or o["end"]):
        raise RSEmbedRayError("Use either --year or --start/--end, not both.")
    if o["year"] is not None:
        temporal = TemporalSpec.year(o["year"])
    elif o["start"] or o["end"]:
        if not (o["start"] and o["end"]):
            raise RSEmbedRayError("--start and --end go together.")
        temporal = TemporalSpec.range(o["start"], o["end"])
    else:
        temporal = None
    spatials, names, temporals = read_places(o["points"], buffer_m=o["buffer_m"])
    models = [m.strip() for m in o["models"].split(",") if m.strip()]
    output = OutputSpec.pooled(o["pooling"]) if o["output_mode"] == "pooled" else OutputSpec.grid()
    popts: dict[str, Any] = {}
    if o["ee_project"]:
        popts["project"] = o["ee_project"]
    if o["ee_url"]:
        popts["url"] = o["ee_url"]
    if o["ee_high_volume"]:
        popts["high_volume"] = True
    if o["ee_max_retries"] is not None:
        popts["max_retries"] = o["ee_max_retries"]
    return ExportOptions(
        spatials=spatials,
        temporal=temporal,
        temporals=temporals,
        models=models,
        names=names if o["layout"] == "per_item" or names else None,
        output=output,
        format=o["fmt"],
        save_inputs=not o["no_save_inputs"],
        save_manifest=not o["no_save_manifest"],
        show_progress=not o["no_progress"],
        weights=_parse_weights(o["weights"]),
        model_configs=_parse_model_configs(o["model_config"]) or None,
        provider_options=popts or None,
        **{name: o[name] for name in _SAME_NAME},
    )


def item_statuses(result: Sequence[dict[str, Any]] | dict[str, Any]) -> list[str]:
    """Per-place status for either layout (combined: from the models' failed_indices); a
    run's per-item ManifestList answers without reading its manifests."""
    if isinstance(result, ManifestList):
        return result.statuses()
    if not isinstance(result, dict):
        return [str(r.get("status")) for r in result]
    n = int(result.get("n_items") or 0)
    models = result.get("models") or []
    failed_in = [0] * n
    for m in models:
        bad = range(n) if m.get("status") == "failed" else m.get("failed_indices") or []
        for i in bad:
            if 0 <= int(i) < n:
                failed_in[int(i)] += 1
    k = len(models)
    return ["ok" if f == 0 else "failed" if f >= k else "partial" for f in failed_in]


def _band_list(bands: tuple[str, ...], most: int = 12) -> str:
    """All bands, or 'first..last (n)' when a product has many (gse has 64)."""
    if len(bands) <= most:
        return ",".join(bands)
    return f"{bands[0]}..{bands[-1]} ({len(bands)})"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List every catalog model id with its status, sensor, bands, dims and weights source."""
    from rs_embed_ray.models.registry import list_models

    rows = []
    for info in list_models():
        s = info.sensor
        rows.append(
            {
                "model": info.model_id,
                "status": info.status,
                "type": info.kind,
                "collection": s.collection if s else "",
                "bands": _band_list(s.bands) if s else "",
                "scale_m": s.scale_m if s else "",
                "dim": info.dim_pooled or "",
                "weights": info.weights_source,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    cols = ["model", "status", "type", "collection", "bands", "scale_m", "dim", "weights"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


class _ExportPath(click.Path):
    """A local path that must exist, or an ``s3://`` / ``gs://`` URL (checked on reading)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and is_remote(value):
            return value
        return super().convert(value, param, ctx)


@main.command()
@click.argument("path", type=_ExportPath(exists=True))
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Also write a PNG quick look: pooled: places on a lon/lat map coloured by the "
    "first 3 principal components of their embeddings (a panel per model); grid: the "
    "PCA-to-RGB grids of a few places next to their saved input. Needs matplotlib.",
)
@click.option(
    "--plot-places",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Places shown (grid).",
)
@click.option(
    "--dpi", type=click.IntRange(10, 600), default=100, show_default=True, help="PNG resolution."
)
def inspect(path: str, plot_path: str | None, plot_places: int, dpi: int) -> None:
    """Count ok/failed items per model of an export (reads manifests only); --plot draws it."""
    from rs_embed_ray.io.load import summarize_export

    unreadable = (RSEmbedRayError, ValueError, OSError, RecursionError, MemoryError)
    if plot_path:
        from rs_embed_ray.io.plot import PlotUnavailable, require_matplotlib

        target = Path(plot_path).expanduser()
        if target.suffix.lower() != ".png" or (target.exists() and _same_file(target, path)):
            _fail(f"inspect --plot {plot_path}: give a new .png file name (never the export).")
            return
        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            _fail(f"inspect --plot: {exc}")
            return
    try:
        summary = summarize_export(path)
    except unreadable as exc:
        _fail(str(exc) or type(exc).__name__)
        return
    if plot_path:
        from rs_embed_ray.io.plot import plot_export

        try:
            summary["plot"] = plot_export(path, plot_path, max_places=plot_places, dpi=dpi)
        except unreadable as exc:
            _fail(f"inspect --plot: {exc}")
            return
    click.echo(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
