"""Offline STAC validation: the schemas kept in tests/stac/schemas (see its README), with
their ``$id`` mapped to the local files, plus pystac's bundled GeoJSON schemas, so
jsonschema never resolves a remote ``$ref``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SCHEMAS = Path(__file__).parent / "schemas"
EMB = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
ITEM = "https://schemas.stacspec.org/v1.0.0/item-spec/json-schema/item.json"
COLLECTION = "https://schemas.stacspec.org/v1.0.0/collection-spec/json-schema/collection.json"
ITEM_1_1 = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def registry() -> Registry:
    """Every local schema under its ``$id`` (without the trailing ``#``)."""
    docs: dict[str, dict[str, Any]] = {}
    for path in SCHEMAS.rglob("*.json"):
        doc = _load(path)
        docs[str(doc["$id"]).rstrip("#")] = doc
        name, _, version = path.parent.name.rpartition("-v")
        if path.name == "schema.json":  # an extension: also where it is published (the
            # processing v1.1.0 release's file still names itself v1.0.0)
            docs[f"https://stac-extensions.github.io/{name}/v{version}/schema.json"] = doc
    # GeoJSON and STAC 1.1 (the model Item's, for MLM): the copies pystac ships
    bundled = resources.files("pystac.validation.jsonschemas")
    for name in ("Feature.json", "Geometry.json"):
        docs[f"https://geojson.org/schema/{name}"] = json.loads(
            bundled.joinpath("geojson", name).read_text()
        )
    for res in bundled.joinpath("stac-spec", "v1.1.0").iterdir():
        if res.name.endswith(".json"):
            doc = json.loads(res.read_text())
            docs[str(doc["$id"]).rstrip("#")] = doc
            # also under its file name: the bundled common.json's $id ends "commonjson"
            docs[f"https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/{res.name}"] = doc
    return Registry().with_resources(
        (uri, Resource.from_contents(doc, default_specification=DRAFT7))
        for uri, doc in docs.items()
    )


def validate(doc: dict[str, Any], schema_id: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` is valid against ``schema_id``."""
    schema = registry().contents(schema_id)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls(schema, registry=registry()).validate(doc)
