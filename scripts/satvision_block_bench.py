"""CPU time of the SatVision-TOA giant's forward, composed from timed pieces, for machines
where the whole giant (2.6e9 parameters, 10 GB float32) may not be built.

Builds the giant's widths with ONE block per stage (about 0.3e9 parameters, 1.2 GB), times
the patch embedding, each stage's block (unshifted and shifted alike: the shift is a roll and
an additive mask), each merge and the final norm on a batch of 128 px inputs, and sums them
with the published depths (2, 2, 42, 2). Process CPU time, so a busy machine slows the wall
clock but not the figure much. Usage::

    python scripts/satvision_block_bench.py --batch 1 --reps 3
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rs_embed_ray.models import satvision as sv


def cpu_time(fn, x, reps: int) -> tuple[float, torch.Tensor]:
    fn(x)  # warm-up
    t0 = time.process_time()
    for _ in range(reps):
        y = fn(x)
    return (time.process_time() - t0) / reps, y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    giant = sv.VARIANTS["giant"]
    sv.VARIANTS["giant_one_block"] = {**giant, "depths": (1, 1, 1, 1)}
    net = sv.build_satvision("giant_one_block").eval()
    x = torch.rand(a.batch, 14, 128, 128)
    parts: dict[str, float] = {}
    total = 0.0
    with torch.inference_mode():
        t, y = cpu_time(net.patch_embed, x, a.reps)
        parts["patch_embed"] = t
        total += t
        for i, layer in enumerate(net.layers):
            t, z = cpu_time(layer.blocks[0], y, a.reps)
            parts[f"stage{i}_block x{giant['depths'][i]}"] = t
            total += t * giant["depths"][i]
            if layer.downsample is not None:
                t, z = cpu_time(layer.downsample, z, a.reps)
                parts[f"merge{i}"] = t
                total += t
            y = z
        t, _ = cpu_time(net.norm, y, a.reps)
        total += t
    print(
        json.dumps(
            {
                "model": "satvision giant (composed)",
                "batch": a.batch,
                "threads": a.threads,
                "cpu_s_per_batch": round(total, 2),
                "images_per_cpu_s": round(a.batch / total, 4),
                "parts_cpu_s": {k: round(v, 4) for k, v in parts.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
