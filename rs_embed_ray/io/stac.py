"""STAC metadata of an export: a Collection per model, its Items and an MLM model Item.

Written beside the outputs at the end of a run (and rewritten whole on resume), so a catalog
reads an export without our code. The fields follow the STAC Embedding Extension v0.0.1
(``emb:``), the processing extension and STAC 1.0.0, which the extension's schema builds on.

Where: a combined file ``X.ext`` gets ``X.stac/<model>/``; a per-item folder gets
``<folder>/stac/<model>/``. Each holds ``collection.json``, ``model.json`` (the model as an
Item with the MLM fields) and the Items: one Item for a combined file (``item.json``), and
for per-item folders one ``items.json`` ItemCollection with one Item per place (one file a
catalog or ``pystac.ItemCollection.from_file`` loads at once, rather than a million small
files; stac-geoparquet would suit still larger runs but is not a dependency). A field we
cannot know (the gsd of a source without a scale) is left out, never guessed. Pure Python.
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from typing import Any

from rs_embed_ray.geo import bounds_3857, xy3857_to_lonlat
from rs_embed_ray.io import storage
from rs_embed_ray.io.atomic import atomic_path, write_text
from rs_embed_ray.io.manifest import utc_ts
from rs_embed_ray.io.quantize import describe as quantization
from rs_embed_ray.specs import spatial_from_dict

log = logging.getLogger(__name__)

STAC_VERSION = "1.0.0"
EMB = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
MEDIA = {
    "npz": "application/x-npz",
    "netcdf": "application/netcdf",
    "geoparquet": "application/vnd.apache.parquet",
    "zarr": "application/vnd+zarr",
}
EE_CATALOG = "https://developers.google.com/earth-engine/datasets/catalog/"


def stac_dir(out_path: Path, layout: str) -> Path:
    """Where an export's STAC files go (beside its outputs)."""
    if layout == "per_item":
        return out_path / "stac"
    return out_path.with_name(out_path.stem + ".stac")


def _place_box(spatial: dict[str, Any]) -> tuple[float, float, float, float]:
    """The lon/lat bounds of the area a place covers (a point's buffer square, as fetched)."""
    x0, y0, x1, y1 = bounds_3857(spatial_from_dict(spatial))
    (a, b), (c, d) = xy3857_to_lonlat(x0, y0), xy3857_to_lonlat(x1, y1)
    return (a, b, c, d)


def _bbox(spatials: list[dict[str, Any]]) -> list[float]:
    boxes = [_place_box(s) for s in spatials]
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]


def _geometry(spatial: dict[str, Any]) -> dict[str, Any]:
    """A place as GeoJSON: its point, or its box as a polygon."""
    if "lon" in spatial and "lat" in spatial:
        return {"type": "Point", "coordinates": [float(spatial["lon"]), float(spatial["lat"])]}
    x0, y0, x1, y1 = _place_box(spatial)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def _window(temporal: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(start, end)`` as RFC 3339 datetimes of a manifest window, None without one."""
    if not temporal:
        return None
    if temporal.get("start") and temporal.get("end"):
        return f"{temporal['start']}T00:00:00Z", f"{temporal['end']}T00:00:00Z"
    if temporal.get("year") is not None:
        y = int(temporal["year"])
        return f"{y}-01-01T00:00:00Z", f"{y + 1}-01-01T00:00:00Z"
    return None


def _times(temporal: dict[str, Any] | None, now: str) -> dict[str, Any]:
    w = _window(temporal)
    if w is None:
        return {"datetime": now}
    return {"datetime": None, "start_datetime": w[0], "end_datetime": w[1]}


def _rel(target: Any, start: Any) -> str:
    """A relative href; ``str`` works alike for a ``Path`` and a bucket ``UPath``."""
    return posixpath.relpath(Path(str(target)).as_posix(), Path(str(start)).as_posix())


def _gsd(sensor: dict[str, Any] | None) -> float | None:
    scale = (sensor or {}).get("scale_m")
    return float(scale) if isinstance(scale, (int, float)) and scale > 0 else None


def _chip_size(run: dict[str, Any], model: dict[str, Any]) -> int | None:
    """Chip size in pixels: the model's input size when inputs are resized to it, else the
    ROI's size at the sensor's scale (all places alike); None when it cannot be known."""
    size = (model.get("describe") or {}).get("image_size")
    if (run.get("input_prep") or {}).get("mode", "resize") == "resize" and size:
        return int(size)
    gsd = _gsd(model.get("sensor"))
    buffers = {s.get("buffer_m") for s in run["spatials"]}
    if gsd is None or len(buffers) != 1 or None in buffers:
        return None
    return max(1, round(2 * float(buffers.pop()) / gsd))


def _source_links(run: dict[str, Any], model: dict[str, Any]) -> list[dict[str, Any]]:
    """``emb:source-data``: the Earth Engine collection, or the local raster source."""
    coll = (model.get("sensor") or {}).get("collection")
    if run["backend"] == "local" and run.get("source"):
        href = Path(run["source"]).resolve().as_uri()
        return [{"rel": "emb:source-data", "href": href, "title": "local raster source"}]
    if coll:
        href = EE_CATALOG + str(coll).replace("/", "_")
        return [{"rel": "emb:source-data", "href": href, "title": str(coll)}]
    return [{"rel": "emb:source-data", "href": run["backend"], "title": "model's own source"}]


def collection(run: dict[str, Any], model: dict[str, Any], cid: str) -> dict[str, Any]:
    """The Collection of one model's embeddings in this export."""
    d = model.get("describe") or {}
    dims = model.get("dim") or (
        d.get("dim_pooled") if run["output"].get("mode") == "pooled" else d.get("dim_grid")
    )
    windows = [w for w in (_window(t) for t in run["temporals"]) if w is not None]
    interval = [min(w[0] for w in windows), max(w[1] for w in windows)] if windows else None
    col: dict[str, Any] = {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EMB],
        "id": cid,
        "description": f"{model['name']} embeddings exported by rs-embed-ray "
        f"({run['output'].get('mode')} output, {run['format']}).",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [_bbox(run["spatials"])]},
            "temporal": {"interval": [interval or [run["created"], None]]},
        },
        "emb:type": "chip",
        **({"emb:dimensions": int(dims)} if dims else {}),  # required; never guessed
        "data_type": run["dtype"],
        "links": [
            {"rel": "emb:model", "href": "./model.json", "type": "application/geo+json"},
            *_source_links(run, model),
        ],
    }
    gsd = _gsd(model.get("sensor"))
    if gsd is not None:
        col["gsd"] = gsd
    chip = _chip_size(run, model)
    if chip is not None:
        col["emb:chip_layout"] = {"layout_type": "variable_grid", "chip_size": [chip, chip]}
    return col


def model_item(run: dict[str, Any], model: dict[str, Any], cid: str) -> dict[str, Any]:
    """The model as an Item with the MLM fields (id, architecture, input bands, weights)."""
    d = model.get("describe") or {}
    weights = model.get("weights") or {}
    bands = list((model.get("sensor") or {}).get("bands") or [])
    size = d.get("image_size")
    props: dict[str, Any] = {
        "datetime": run["created"],
        "mlm:name": model["name"],
        "mlm:architecture": str(d.get("type") or model["name"]),
        "mlm:tasks": ["similarity-search"],  # MLM has no "embedding" task
        "mlm:input": [
            {
                "name": "patch",
                "bands": bands,
                "input": {
                    "shape": [-1, len(bands) or -1, size or -1, size or -1],
                    "dim_order": ["batch", "bands", "height", "width"],
                    "data_type": "float32",
                },
            }
        ],
        "mlm:output": [
            {
                "name": "embedding",
                "tasks": ["similarity-search"],
                "result": {
                    "shape": [-1, int(d.get("dim_pooled") or -1)],
                    "dim_order": ["batch", "embedding"],
                    "data_type": "float32",
                },
            }
        ],
    }
    asset: dict[str, Any] = {
        "href": str(weights.get("weights") or d.get("weights_source") or "unknown"),
        "title": "weights",
        "roles": ["mlm:model"],
        "mlm:artifact_type": "safetensors",
    }
    if bands:  # STAC 1.1 ``bands`` (MLM reads the input's from the Item; STAC 1.1 allows
        # them there only when an asset lists them too)
        props["bands"] = asset["bands"] = [{"name": b} for b in bands]
    if weights.get("sha256"):
        asset["sha256"] = weights["sha256"]
    if d.get("weights_source"):
        asset["description"] = f"weights source: {d['weights_source']}"
    return {
        "type": "Feature",
        "stac_version": "1.1.0",  # MLM 1.5 builds on STAC 1.1 (its bands)
        "stac_extensions": [MLM],
        "id": f"{cid}-model",
        "geometry": None,
        "properties": props,
        "links": [],
        "assets": {"model": asset},
    }


def item(
    run: dict[str, Any],
    model: dict[str, Any],
    cid: str,
    *,
    iid: str,
    spatials: list[dict[str, Any]],
    temporal: dict[str, Any] | None,
    asset: Path,
    folder: Path,
) -> dict[str, Any]:
    """One Item: a place's file (per_item) or the combined file (all places)."""
    props: dict[str, Any] = {
        **_times(temporal, run["created"]),
        "processing:datetime": run["created"],
        "processing:version": str(run["package_version"] or "unknown"),
        "emb:runtime_parameters": run["runtime_parameters"],
        "emb:preprocessing": {
            "format": "rs-embed-ray",
            "expression": {"input_prep": run.get("input_prep"), "sensor": model.get("sensor")},
        },
        "emb:energy": model["energy"],
    }
    quant = quantization(run["dtype"])
    if quant is not None:
        props["emb:quantization"] = quant
    geom = _geometry(spatials[0]) if len(spatials) == 1 else _bbox_polygon(_bbox(spatials))
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EMB, PROCESSING],
        "id": iid,
        "collection": cid,
        "geometry": geom,
        "bbox": _bbox(spatials),
        "properties": props,
        "links": [{"rel": "collection", "href": "./collection.json", "type": "application/json"}],
        "assets": {
            "embeddings": {
                "href": _rel(asset, folder),
                "type": MEDIA.get(run["format"], "application/octet-stream"),
                "roles": ["data"],
            }
        },
    }


def _bbox_polygon(b: list[float]) -> dict[str, Any]:
    ring = [[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]], [b[0], b[1]]]
    return {"type": "Polygon", "coordinates": [ring]}


def _write_items(run: dict[str, Any], m: dict[str, Any], cid: str, out: Any, folder: Any) -> None:
    """items.json of a per-item folder, one Item per place, streamed into the file: the
    driver never holds a million Items at once."""
    with atomic_path(folder / "items.json") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{\n  "type": "FeatureCollection",\n  "features": [')
        places = zip(run["names"], run["spatials"], run["temporals"], strict=True)
        for k, (name, s, t) in enumerate(places):
            feat = item(
                run,
                m,
                cid,
                iid=f"{cid}-{name}",
                spatials=[s],
                temporal=t,
                asset=out / f"{name}{run['ext']}",
                folder=folder,
            )
            fh.write(("," if k else "") + "\n    " + json.dumps(feat, ensure_ascii=False))
        fh.write("\n  ]\n}\n")


def write_stac(run: dict[str, Any]) -> Path:
    """Write every model's Collection, model Item and Items; return the STAC folder.

    ``run``: what the runner knows (``layout``, ``format``, ``out_path``, ``names``,
    ``spatials``, ``temporals`` (one per place), ``models`` (name, key, describe, sensor,
    weights, energy), ``output``, ``input_prep``, ``dtype``, ``backend``, ``source``,
    ``runtime_parameters``, ``package_version``, ``created``, ``ext``)."""
    out = storage.as_path(run["out_path"])  # a bucket URL stays a URL (io.storage)
    root = stac_dir(out, run["layout"])
    for m in run["models"]:
        folder = root / m["key"]
        cid = f"{out.stem if run['layout'] == 'combined' else out.name}-{m['key']}"
        docs: dict[str, Any] = {
            "collection.json": collection(run, m, cid),
            "model.json": model_item(run, m, cid),
        }
        if run["layout"] == "combined":
            docs["item.json"] = item(
                run,
                m,
                cid,
                iid=cid,
                spatials=run["spatials"],
                temporal=run["temporal"],
                asset=out,
                folder=folder,
            )
        for name, doc in docs.items():
            write_text(folder / name, json.dumps(doc, ensure_ascii=False, indent=2))
        if run["layout"] != "combined":
            _write_items(run, m, cid, out, folder)
    log.info("stac: wrote %s", root)
    return root


__all__ = ["stac_dir", "write_stac", "collection", "item", "model_item", "utc_ts"]
