"""A random-valued THOR v1 checkpoint in the published file format, for tests.

``FM4CS/THOR-1.0-<variant>`` ships ``thor_v1_vit_<variant>.pt``: ``torch.save`` of
``{"state_dict": {"encoder.<key>": tensor}}`` (the format rs-embed 0.3.1's loader and the
anchor's ``make_ckpt.py`` use). The values come from :func:`thor_values`, a rule that needs
only numpy and the key names and shapes, so that ``scripts/thor_golden.py`` fills the
official encoder (rs-embed's vendored copy) with the very same numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# tables the file carries as built: the ALiBi slopes and the group sin-cos
FROZEN_PREFIXES = ("encoder_slopes", "band_embed.")


def thor_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every non-frozen key, in sorted key order: LayerNorm
    weights ``1 + 0.02 N``, everything else ``0.02 N`` (numpy ``RandomState``)."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        if k.startswith(FROZEN_PREFIXES):
            continue
        v = (0.02 * rs.standard_normal(shapes[k])).astype(np.float32)
        parent = k.rsplit(".", 2)[-2] if k.count(".") else ""
        if parent.startswith("norm") and k.endswith(".weight"):
            v += np.float32(1.0)
        out[k] = v
    return out


def write_thor_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    variant: str = "base",
    extra: dict[str, object] | None = None,
) -> Path:
    """Write ``thor_v1_vit_<variant>.pt`` (the published format) into ``directory`` and
    return its path. Built with this package's encoder, values from :func:`thor_values`,
    frozen tables as built; ``extra`` adds ``{"encoder.<key>": tensor}`` entries as given
    (e.g. a ``pos_embed`` table the loader must set aside)."""
    import torch

    from rs_embed_ray.models.thor import VARIANTS, build_thor

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sd = build_thor(variant).state_dict()
    vals = thor_values({k: tuple(v.shape) for k, v in sd.items()}, seed)
    state = {
        f"encoder.{k}": (torch.from_numpy(vals[k]) if k in vals else v.clone())
        for k, v in sd.items()
    }
    state.update(extra or {})  # type: ignore[arg-type]
    path = out / str(VARIANTS[variant]["file"])
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": state}, tmp)
    tmp.replace(path)
    return path


__all__ = ["FROZEN_PREFIXES", "thor_values", "write_thor_checkpoint"]
