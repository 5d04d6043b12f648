"""The writer context (``Runner._ctx``) for tests that call ``io.assemble`` directly."""

from __future__ import annotations

from typing import Any


def model_spec(name: str, key: str, fetch_key: str | None, **extra: Any) -> dict[str, Any]:
    """One model's entry of the writer context (its inputs come from ``fetch_key``)."""
    spec = {
        "name": name,
        "key": key,
        "sensor": None,
        "describe": {},
        "input_key": fetch_key,
        "fetch_key": fetch_key,
        "channels": None,
    }
    return {**spec, **extra}


def writer_ctx(fmt: str, models: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """A local CPU run writing ``fmt`` with inputs, embeddings and manifests saved."""
    ctx = dict(
        format=fmt,
        save_inputs=True,
        save_embeddings=True,
        save_manifest=True,
        backend="local",
        device="cpu",
        temporal=None,
        output={"mode": "pooled"},
        input_prep={},
        package_version="0",
        models=models,
    )
    return {**ctx, **overrides}
