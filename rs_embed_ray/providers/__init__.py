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


def register_provider(name: str, target: str) -> None:
    """Make backend ``name`` build ``target`` ("module:factory"), e.g. a test provider that
    wraps a real one. Registration is seen only by this process: the plan carries the
    resolved target (``provider_target``) to Ray's workers, which import it themselves."""
    module_name, sep, attr = str(target).partition(":")
    if not (module_name and sep and attr):
        raise ProviderError(f"provider target {target!r}: write it as 'module:factory'.")
    PROVIDERS[str(name).strip().lower()] = str(target)  # as plan.resolve_backend spells it


def provider_target(name: str) -> str:
    """The "module:factory" that backend ``name`` builds (ProviderError with the known names)."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ProviderError(f"Unknown backend {name!r}. Known: {provider_names()}.")
    return target


def provider_class(name: str, *, target: str | None = None) -> Any:
    """The factory registered for ``name`` (or ``target``), imported now, to read its
    capabilities; a registered factory is a ``BaseProvider`` subclass or states them."""
    module_name, _, attr = (target or provider_target(name)).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderError(f"backend {name!r} cannot be used: {exc}") from exc
    return getattr(module, attr)


def provider_capability(name: str, capability: str, *, target: str | None = None) -> bool:
    """A capability of backend ``name`` (e.g. ``"uses_request_quota"``) before any instance
    exists; a registered factory that does not state it gets ``BaseProvider``'s default, as
    ``complete`` gives its instances."""
    default = getattr(BaseProvider, capability)
    return bool(getattr(provider_class(name, target=target), capability, default))


def create_provider(name: str, *, target: str | None = None, **options: Any) -> BaseProvider:
    """Build a complete provider by backend name, or from ``target`` ("module:factory", as
    resolved by ``provider_target`` in the driver) when given; ``name`` then only labels
    errors."""
    return complete(provider_class(name, target=target)(**options))


__all__ = [
    "BaseProvider",
    "Patch",
    "Provider",
    "PROVIDERS",
    "create_provider",
    "provider_capability",
    "provider_class",
    "provider_names",
    "provider_target",
    "register_provider",
]
