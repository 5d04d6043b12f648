"""Pixel providers, looked up by backend name and imported only when asked for."""

from __future__ import annotations

import importlib
from typing import Any

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.base import Patch, Provider

# backend name -> "module:factory"; the factory takes the provider options as keywords
PROVIDERS: dict[str, str] = {
    "local": "rs_embed_ray.providers.local:LocalProvider",
    "gee": "rs_embed_ray.providers.gee:GEEProvider",
}


def provider_names() -> list[str]:
    return sorted(PROVIDERS)


def create_provider(name: str, **options: Any) -> Provider:
    """Build a provider by backend name (raises ProviderError with the known names)."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ProviderError(f"Unknown backend {name!r}. Known: {provider_names()}.")
    faults = options.pop("faults", None)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderError(f"backend {name!r} cannot be used: {exc}") from exc
    provider = getattr(module, attr)(**options)
    if faults:
        from rs_embed_ray.testing.faults import FaultInjectingProvider

        provider = FaultInjectingProvider(provider, faults)
    return provider


__all__ = ["Patch", "Provider", "PROVIDERS", "create_provider", "provider_names"]
