"""Templated Earth Engine requests: build and serialise an expression once per request shape.

Why: the requests of one sensor group differ only in their region, grid and date window, yet
the earthengine-api client builds the whole expression graph (dozens of ``ApiFunction``
calls) and serialises it (hashing every node, then optimising the DAG) again for every
place: most of the client CPU a fetched place costs. Here the expression of a request
*shape* (what ``key`` names: sensor, collection, bands, composite, variant, frame bins,
...) is built once with placeholder values and serialised with the client's own serializer
(``ee.serializer.encode``) into JSON text; each place then only splices its own values
(region corners, date strings) into that text. The grid is not part of the expression: it
goes into the request body as before.

Why it is exact: the serializer's output depends on the values only through their JSON text
at the placeholder positions and through which values are equal (equal constants are
shared, and a string referenced twice stays a reference). So a template is keyed by the
shape *and* the equality pattern of the per-place values (by their JSON text, as the
serializer compares them), a string value that equals any other string of the template
makes the place use the client path, and the first place of every template is also built
and serialised by the client and compared: a mismatch disables that template (logged and
counted). ``tests/ee/test_gee_template.py`` compares the request bodies byte for byte.

Sending: :func:`compute_pixels` is ``ee.data.computePixels`` without its
``serializer.encode`` step, built from the same ``ee.data`` helpers, so the request goes
through the client's own googleapiclient resource, credentials, headers, workload tag and
``http_transport`` (the provider's limiter slots), and the provider's retry policy wraps it
as before. If this earthengine-api lacks one of those helpers, :func:`supported` is False and
the provider uses the client path for everything.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# the ee.data helpers computePixels is made of (earthengine-api 1.x)
_EE_DATA_HELPERS = (
    "_extract_image_converter",
    "_maybe_populate_workload_tag",
    "_execute_cloud_call",
    "_get_projects_path",
    "_get_state",
    "_cloud_api_utils",
)
MAX_TEMPLATES = 256  # request shapes kept per process (a run has a handful)


def supported() -> bool:
    """Whether this earthengine-api has the helpers :func:`compute_pixels` is built from."""
    try:
        import ee.data
    except ImportError:  # pragma: no cover - earthengine-api is a dependency
        return False
    return all(hasattr(ee.data, name) for name in _EE_DATA_HELPERS)


@dataclass(frozen=True)
class Encoded:
    """An expression already serialised by ``ee.serializer.encode`` (a JSON-ready dict)."""

    expression: dict[str, Any]


_RESOURCE: tuple[Any, Any] | None = None  # (cloud_api_resource_raw, its projects().image())
_RESOURCE_LOCK = threading.Lock()


def _image_resource() -> Any:
    """``projects().image()`` of the client's current raw resource (rebuilt after ee.Reset)."""
    global _RESOURCE
    import ee.data

    raw = ee.data._get_state().cloud_api_resource_raw
    if raw is None:
        return ee.data._get_cloud_projects_raw().image()  # raises "not initialized"
    cached = _RESOURCE
    if cached is not None and cached[0] is raw:
        return cached[1]
    with _RESOURCE_LOCK:
        image = raw.projects().image()
        _RESOURCE = (raw, image)
    return image


def compute_pixels(params: dict[str, Any]) -> Any:
    """``ee.data.computePixels(params)`` for ``params["expression"]`` already encoded.

    The same steps in the same order (file format and converter, workload tag, the raw
    cloud resource's ``image.computePixels``, ``_execute_cloud_call``), so the body, headers
    and transport are those of the client; only ``serializer.encode`` is skipped.
    """
    import ee.data

    params = params.copy()
    converter = ee.data._extract_image_converter(params)
    params["fileFormat"] = ee.data._cloud_api_utils.convert_to_image_file_format(
        converter.expected_data_format()
    )
    ee.data._maybe_populate_workload_tag(params)
    data = ee.data._execute_cloud_call(
        _image_resource().computePixels(project=ee.data._get_projects_path(), body=params)
    )
    if converter:
        return converter.do_conversion(data)
    return data


# ------------------------------------------------------------------------------------------
# templates


def _placeholder(kind: str, k: int) -> Any:
    """A value of the given type that no real request carries (distinct per ``k``)."""
    if kind == "str":
        return f"\x01rs_embed_ray.placeholder.{k}\x01"
    if kind == "float":
        return float(f"7.31{k:06d}9137e+297")
    return 7_310_000_000_913_700 + k  # int


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return "str"
    if isinstance(value, float):
        return "float"
    if isinstance(value, int) and float(value) == value:  # ee encodes huge ints otherwise
        return "int"
    return None


def _pattern(texts: Sequence[str]) -> tuple[int, ...]:
    """Which values are equal, as the serializer sees them (by their JSON text)."""
    first: dict[str, int] = {}
    return tuple(first.setdefault(t, len(first)) for t in texts)


@dataclass(frozen=True)
class _Template:
    pieces: tuple[str, ...]  # JSON text between the slots; len(slots) + 1 pieces
    slots: tuple[int, ...]  # per slot: which per-place value goes there
    static: str  # the JSON text without the placeholders (for the string check)

    def fill(self, texts: Sequence[str]) -> dict[str, Any]:
        parts = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts.append(texts[slot])
            parts.append(piece)
        return json.loads("".join(parts))


def _make_template(text: str, tokens: Sequence[str], positions: Sequence[int]) -> _Template | None:
    """Cut ``text`` at every placeholder token (``tokens[i]`` stands for the per-place value
    at ``positions[i]``); None if a token is ambiguous in the text."""
    pieces: list[str] = []
    slots: list[int] = []
    rest = text
    while True:
        hits = [(rest.find(tok), i) for i, tok in enumerate(tokens) if tok in rest]
        if not hits:
            pieces.append(rest)
            break
        pos, i = min(hits)
        pieces.append(rest[:pos])
        slots.append(positions[i])
        rest = rest[pos + len(tokens[i]) :]
    static = "".join(pieces)
    if any(tok in static for tok in tokens):  # pragma: no cover - tokens are unambiguous
        return None
    return _Template(tuple(pieces), tuple(slots), static)


class RequestTemplates:
    """Per-process cache of serialised request shapes (thread-safe; see the module doc).

    ``stats``: ``templated`` (requests whose expression came from a template),
    ``client`` (built and serialised by the client: templates off for that shape, or a
    value that may not be spliced), ``built`` (templates made), ``rejected`` (templates
    that did not reproduce the client's expression and were disabled).
    """

    def __init__(self, max_templates: int = MAX_TEMPLATES) -> None:
        self.max_templates = int(max_templates)
        self._cache: dict[Any, _Template | None] = {}
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def _count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def expression(
        self, key: Any, values: Sequence[Any], build: Callable[[Sequence[Any]], Any]
    ) -> Any:
        """The expression for ``values``: an :class:`Encoded` from the template of ``key``
        (made on first use), or the client's object ``build(values)`` where templating is
        not safe. ``build`` must make the same expression for any values of the same kinds.
        """
        kinds = [_kind(v) for v in values]
        if None in kinds:
            self._count("client")
            return build(values)
        texts = [json.dumps(v) for v in values]
        full_key = (key, tuple(kinds), _pattern(texts))
        template = self._cache.get(full_key, False)
        if template is False:
            return self._first(full_key, values, kinds, texts, build)
        if template is None or any(
            k == "str" and t in template.static for k, t in zip(kinds, texts, strict=True)
        ):
            self._count("client")
            return build(values)
        self._count("templated")
        return Encoded(template.fill(texts))

    def _first(
        self,
        full_key: Any,
        values: Sequence[Any],
        kinds: list[str | None],
        texts: list[str],
        build: Callable[[Sequence[Any]], Any],
    ) -> Any:
        """Make the template of a new shape and check it against the client's own request."""
        import ee

        pattern = full_key[2]
        unique = sorted(set(pattern))
        first_of = {u: pattern.index(u) for u in unique}
        ph_unique = {u: _placeholder(str(kinds[first_of[u]]), u) for u in unique}
        placeholders = [ph_unique[u] for u in pattern]
        real = build(values)
        try:
            text = json.dumps(ee.serializer.encode(build(placeholders)))
            tokens = [json.dumps(ph_unique[u]) for u in unique]
            template = _make_template(text, tokens, [first_of[u] for u in unique])
            expected = json.dumps(ee.serializer.encode(real))
            if template is not None and json.dumps(template.fill(texts)) != expected:
                template = None
        except Exception:  # e.g. the client checks a value a placeholder cannot pass
            log.debug("templating %s failed", str(full_key[0])[:200], exc_info=True)
            template = None
        if template is None:
            log.warning(
                "Earth Engine request shape %s cannot be templated; its requests are built "
                "by the client", str(full_key[0])[:200],
            )  # fmt: skip
            self._count("rejected")
            template = None
        else:
            self._count("built")
        with self._lock:
            if len(self._cache) >= self.max_templates:
                self._cache.clear()
            self._cache[full_key] = template
            self.stats["client"] += 1
        return real


__all__ = ["Encoded", "RequestTemplates", "compute_pixels", "supported"]
