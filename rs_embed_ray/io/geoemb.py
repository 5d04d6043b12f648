"""Root attributes of the ``geoemb:`` Zarr convention (geo-embeddings/embeddings-zarr-convention
v1), plus ``proj:`` where the embeddings are a grid with a CRS.

A catalog or xarray user reads what the store holds without our manifest: the embedding type
(``chip``: one vector per place, ``pixel``: a grid of vectors), its dimensionality, the model,
the source data, the stored dtype and, for chips, their size in pixels. A field we cannot know
is left out, never guessed (``geoemb:gsd``: the grid of a ViT's tokens is not the source's
pixel size). ``geoemb:quantization`` is ``io.quantize.describe`` for int8 / float16 and absent
for float32, as the schema has no null. A store holding several models' embeddings describes
the first model that has any (the convention describes one embedding product per group). Pure
Python.
"""

from __future__ import annotations

from typing import Any

from rs_embed_ray.io.quantize import describe

GEOEMB_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/geo-embeddings/"
    "embeddings-zarr-convention/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/geo-embeddings/embeddings-zarr-convention/blob/v1/README.md",
    "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c",
    "name": "geoemb:",
    "description": "Geoembeddings convention for geospatial embedding arrays with model provenance",
}
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}
GRID_CRS = "EPSG:3857"  # every provider's fetch grid (geo.py); embedding grids cover it
EE_CATALOG = "https://developers.google.com/earth-engine/datasets/catalog/"


def model_uri(name: str, describe: dict[str, Any] | None) -> str:
    """A URL for the encoder: its Hugging Face repo or Earth Engine asset, else a URN."""
    src = str((describe or {}).get("weights_source") or "")
    if src.startswith("hf:"):
        repo = "/".join(src[3:].split("/")[:2])
        return f"https://huggingface.co/{repo}"
    if src.startswith("gee:"):
        return EE_CATALOG + src[4:].replace("/", "_")
    return f"urn:rs-embed-ray:model:{name}"


def source_uris(backend: str, sensor: dict[str, Any] | None) -> list[str]:
    """The source collection: its Earth Engine catalog page, or a URN naming local files."""
    coll = (sensor or {}).get("collection")
    if not coll:
        return [f"urn:rs-embed-ray:{backend}:unknown-source"]
    if backend == "gee":
        return [EE_CATALOG + str(coll).replace("/", "_")]
    return [f"urn:rs-embed-ray:{backend}:{coll}"]


def geoemb_attrs(
    spec: dict[str, Any],
    row_shape: tuple[int, ...],
    backend: str,
    build_version: str,
    chip_size: tuple[int, int] | None,
    data_type: str = "float32",
) -> dict[str, Any]:
    """The convention's root attributes for one model's embeddings (``{}``: not describable,
    e.g. a chip whose size in pixels is unknown, since ``chip_layout`` is then required)."""
    pixel = len(row_shape) >= 3  # (band, y, x): a vector per grid cell
    attrs: dict[str, Any] = {
        "zarr_conventions": [GEOEMB_CONVENTION],
        "geoemb:type": "pixel" if pixel else "chip",
        "geoemb:dimensions": int(row_shape[0]),
        "geoemb:model": model_uri(spec["name"], spec.get("describe")),
        "geoemb:source_data": source_uris(backend, spec.get("sensor")),
        "geoemb:data_type": data_type,
        "geoemb:build_version": build_version,
    }
    quant = describe(data_type)
    if quant is not None:  # int8 / float16: how the stored codes came from float32
        attrs["geoemb:quantization"] = quant
    if chip_size is not None:
        attrs["geoemb:chip_layout"] = {
            "layout_type": "irregular",  # one chip per place, wherever the place is
            "chip_size": [int(chip_size[0]), int(chip_size[1])],
        }
    elif not pixel:
        return {}
    if pixel:
        attrs["zarr_conventions"] = [GEOEMB_CONVENTION, PROJ_CONVENTION]
        attrs["proj:code"] = GRID_CRS
    return attrs
