"""Pixel providers, looked up by backend name and imported only when asked for.

This registry is the one way in: the API and the pipeline name a backend and get a complete
``Provider`` (or its class, to ask a capability before any instance exists); nothing outside
``providers/`` imports a backend module.
"""

from __future__ import annotations

import importlib
from typing import Any

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.base import BaseProvider, Patch, Provider, complete

# backend name -> "module:factory"; the factory takes the provider options as keywords
PROVIDERS: dict[str, str] = {
    "local": "rs_embed_ray.providers.local:LocalProvider",
    "gee": "rs_embed_ray.providers.gee:GEEProvider",
}


def provider_names() -> list[str]:
    return sorted(PROVIDERS)


def provider_class(name: str) -> Any:
    """The factory registered for ``name`` (imported now), to read its capabilities."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ProviderError(f"Unknown backend {name!r}. Known: {provider_names()}.")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderError(f"backend {name!r} cannot be used: {exc}") from exc
    return getattr(module, attr)


def create_provider(name: str, **options: Any) -> BaseProvider:
    """Build a provider by backend name (raises ProviderError with the known names)."""
    if name not in PROVIDERS:
        raise ProviderError(f"Unknown backend {name!r}. Known: {provider_names()}.")
    faults = options.pop("faults", None)
    factory = provider_class(name)
    provider = factory(**options)
    if faults:
        from rs_embed_ray.testing.faults import FaultInjectingProvider

        provider = FaultInjectingProvider(provider, faults)
    return complete(provider)


__all__ = [
    "BaseProvider",
    "Patch",
    "Provider",
    "PROVIDERS",
    "create_provider",
    "provider_class",
    "provider_names",
]
