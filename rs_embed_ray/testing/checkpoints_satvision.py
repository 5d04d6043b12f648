"""A random-valued SatVision-TOA checkpoint in the published file format, for tests.

The Hugging Face repo ``nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128``
ships DeepSpeed's model states ``mp_rank_00_model_states.pt``: ``{"module": state_dict}``
(the format pytorch-caney's ``load_pretrained``, rs-embed 0.3.1's loader and the anchor's
``make_ckpt.py`` read). The values come from :func:`satvision_values`, a rule that needs
only numpy and the key names and shapes, so that ``scripts/satvision_golden.py`` fills the
official classes (rs-embed's vendored pytorch-caney SwinV2) with the very same numbers.

The giant (2.6e9 parameters) is never written by tests: they use the TEST-ONLY reduced
archs of ``rs_embed_ray.models.satvision.VARIANTS`` (``model_config={"variant": "test_tiny"}``),
which keep every code path of the giant (window clamping, shifted masks, periodic extra
norms, three merges to 4 x 4) at under 1 M parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# buffers the file carries as built (fixed tables and masks)
FROZEN_SUFFIXES = ("relative_coords_table", "relative_position_index", "attn_mask")


def satvision_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every non-buffer key, in sorted key order: LayerNorm
    weights ``1 + 0.02 N``, ``logit_scale`` ``log(10) + 0.02 N``, everything else ``0.02 N``
    (numpy ``RandomState``)."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        if k.endswith(FROZEN_SUFFIXES):
            continue
        v = (0.02 * rs.standard_normal(shapes[k])).astype(np.float32)
        parent = k.rsplit(".", 2)[-2] if k.count(".") else ""
        if parent.startswith("norm") and k.endswith(".weight"):
            v += np.float32(1.0)
        if k.endswith("logit_scale"):
            v += np.float32(np.log(10.0))
        out[k] = v
    return out


def write_satvision_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    variant: str = "test_tiny",
    mim: bool = False,
    extra: dict[str, object] | None = None,
) -> Path:
    """Write ``mp_rank_00_model_states.pt`` (``{"module": ...}``) into ``directory`` and
    return its path. Built with this package's encoder of ``variant``, values from
    :func:`satvision_values`, buffers as built. ``mim=True`` writes the training
    ``MiMModel`` layout (``encoder.*`` plus the SimMIM ``decoder.0.*`` pixel head);
    ``extra`` adds entries as given."""
    import torch

    from rs_embed_ray.models.satvision import HF_FILENAME, build_satvision

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = build_satvision(variant)
    sd = model.state_dict()
    vals = satvision_values({k: tuple(v.shape) for k, v in sd.items()}, seed)
    state = {k: (torch.from_numpy(vals[k]) if k in vals else v.clone()) for k, v in sd.items()}
    if mim:
        state = {f"encoder.{k}": v for k, v in state.items()}
        d = int(model.num_features)
        state["decoder.0.weight"] = torch.zeros(32 * 32 * 14, d, 1, 1)
        state["decoder.0.bias"] = torch.zeros(32 * 32 * 14)
    state.update(extra or {})  # type: ignore[arg-type]
    path = out / HF_FILENAME
    tmp = path.with_suffix(".tmp")
    torch.save({"module": state}, tmp)
    tmp.replace(path)
    return path


__all__ = ["FROZEN_SUFFIXES", "satvision_values", "write_satvision_checkpoint"]
