"""Array key naming shared by the writers and the loader (contract §2.16.1).

Every array in an export file is named ``<kind>__<model key>`` (optionally followed by
``__<iiiii>``, the zero-padded point index, for per-point arrays of the combined layout), where
the model key is :func:`sanitize_key` of the user's model spelling.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_NON_KEY_CHARS = re.compile(r"[^0-9A-Za-z_]+")
_UNDERSCORE_RUNS = re.compile(r"_{2,}")

#: per-item: one input ``(C,H,W)`` / ``(T,C,H,W)`` (first model per input key only)
INPUT_CHW = "input_chw"
#: per-item: one embedding ``(D,)`` / ``(D,h,w)``; combined: per point, partial or ragged
EMBEDDING = "embedding"
#: combined: stacked inputs ``(N,C,H,W)`` / ``(N,T,C,H,W)``
INPUTS_BCHW = "inputs_bchw"
#: combined: stacked embeddings ``(N,D)`` / ``(N,D,h,w)``
EMBEDDINGS = "embeddings"

ARRAY_KINDS = (INPUT_CHW, EMBEDDING, INPUTS_BCHW, EMBEDDINGS)
#: prefix of combined checkpoint-only arrays (never part of a finished export)
PREFETCH_PREFIX = "__prefetch_"


def sanitize_key(name: object) -> str:
    """File-safe key of a model name.

    Every run of characters outside ``[0-9A-Za-z_]`` becomes ``_``, runs of ``_`` collapse to
    one, leading/trailing ``_`` are stripped, and an empty result becomes ``"item"``
    (``"foo/bar baz"`` → ``"foo_bar_baz"``, ``"a---b///c"`` → ``"a_b_c"``).
    """
    out = _NON_KEY_CHARS.sub("_", str(name))
    out = _UNDERSCORE_RUNS.sub("_", out).strip("_")
    return out or "item"


def array_key(kind: str, model: str, index: int | None = None) -> str:
    """``<kind>__<sanitize_key(model)>`` plus ``__<index:05d>`` when ``index`` is given."""
    key = f"{kind}__{sanitize_key(model)}"
    return key if index is None else f"{key}__{int(index):05d}"


def embedding_key(model: str) -> str:
    """Per-item embedding key ``embedding__<m>``."""
    return array_key(EMBEDDING, model)


def input_key(model: str) -> str:
    """Per-item input key ``input_chw__<m>``."""
    return array_key(INPUT_CHW, model)


def embeddings_key(model: str) -> str:
    """Combined stacked embedding key ``embeddings__<m>``."""
    return array_key(EMBEDDINGS, model)


def inputs_key(model: str) -> str:
    """Combined stacked input key ``inputs_bchw__<m>``."""
    return array_key(INPUTS_BCHW, model)


class ParsedKey(NamedTuple):
    """An array key split into its parts (see :func:`parse_array_key`)."""

    kind: str
    model_key: str
    index: int | None


def parse_array_key(key: str) -> ParsedKey | None:
    """Split ``<kind>__<m>[__<digits>]`` into its parts; ``None`` for any other key.

    Checkpoint arrays (``__prefetch_*``) and keys of unknown kinds are not array keys of an
    export and give ``None``.
    """
    if not isinstance(key, str) or key.startswith("__"):
        return None
    parts = key.split("__")
    if len(parts) not in (2, 3) or parts[0] not in ARRAY_KINDS or not parts[1]:
        return None
    if len(parts) == 3:
        if not parts[2].isdigit():
            return None
        return ParsedKey(parts[0], parts[1], int(parts[2]))
    return ParsedKey(parts[0], parts[1], None)
