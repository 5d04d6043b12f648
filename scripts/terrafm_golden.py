"""Write the TerraFM golden file from the official ``terrafm.py`` (no package ships TerraFM).

    git clone https://github.com/mbzuai-oryx/TerraFM /tmp/TerraFM   # terrafm.py, one file
    python scripts/terrafm_golden.py --official /tmp/TerraFM/terrafm.py \\
        --out tests/oracle/data/terrafm_golden.npz

Builds ``terrafm_base()`` from that file, loads a portable formula checkpoint
(``rs_embed_ray.testing.golden``) into it with ``strict=True`` over the official key list,
and records what the official code computes for three 224 px inputs already in model units
(S2 in [0, 1]; S1 as the normalised 2-band image):

* ``l1c``: the official ``model(x)`` (CLS after ``norm``) and ``extract_feature(x,
  out_indices=[11])`` (normed patch tokens), which run the L1C stem for 12 channels;
* ``l2a``: the same with the official ``PatchEmbed.forward(x, is_l2a=True)``;
* ``s1``: a 2-channel input (the S1 stem, chosen by channel count).

Stored: the official state-dict layout (key, shape), pooled vectors in full, the grids at
every position for every 16th channel (to keep the file small), and provenance.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.golden import golden_image, golden_state_dict

GRID_CHANNEL_STEP = 16


def _official(path: Path):
    spec = importlib.util.spec_from_file_location("terrafm_official", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, required=True, help="the official terrafm.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--source-commit", default="", help="the TerraFM git commit, recorded")
    a = ap.parse_args()
    mod = _official(a.official)
    model = mod.terrafm_base().eval()
    layout = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict(golden_state_dict(layout), strict=True)
    s2 = torch.from_numpy(np.stack([golden_image(12, 224, 0), golden_image(12, 224, 1)]))
    s1 = torch.from_numpy(golden_image(2, 224, 2)[None])
    pe = model.patch_embed
    official_forward = pe.forward
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, x, l2a in (("l1c", s2, False), ("l2a", s2, True), ("s1", s1, False)):
            pe.forward = lambda t, _l2a=l2a: official_forward(t, is_l2a=_l2a)
            out[f"pooled_{name}"] = model(x).numpy()
            grid = model.extract_feature(x, out_indices=[11])[0].numpy()
            out[f"grid_{name}"] = grid[:, ::GRID_CHANNEL_STEP]
    pe.forward = official_forward
    provenance = {
        "official": "github.com/mbzuai-oryx/TerraFM terrafm.py",
        "official_commit": a.source_commit,
        "official_sha256": hashlib.sha256(a.official.read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "grid_channel_step": GRID_CHANNEL_STEP,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        a.out,
        layout=np.array(json.dumps(layout)),
        provenance=np.array(json.dumps(provenance)),
        **out,
    )
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
