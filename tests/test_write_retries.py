"""Issue 21 item 6: ``max_retries`` covers output writes. The per-item writer runs in-process
here; one try of a real ``write_item`` is made to fail with a stale-handle error (what an NFS
output can answer once), since a transient storage fault cannot be produced on a local disk."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from rs_embed_ray.io.shards import write_shard
from rs_embed_ray.pipeline import write as write_mod


def ctx_and_batch(tmp_path, max_retries):
    shard = tmp_path / "s.npz"
    write_shard(shard, {0: (np.arange(4, dtype=np.float32), {"weights": None})})
    ctx = {
        "format": "npz",
        "ext": ".npz",
        "out_dir": str(tmp_path / "out"),
        "save_inputs": False,
        "save_embeddings": True,
        "save_manifest": True,
        "max_retries": max_retries,
        "retry_backoff_s": 0.0,
        "backend": "local",
        "device": "cpu",
        "temporal": None,
        "output": {"mode": "pooled"},
        "input_prep": {"mode": "resize"},
        "package_version": None,
        "models": [
            {
                "name": "m",
                "key": "m",
                "sensor": None,
                "describe": {},
                "input_key": None,
                "fetch_key": None,
                "channels": None,
            }
        ],
    }
    row = {
        "index": 0,
        "name": "p00000",
        "spatial_manifest": {},
        "temporal": None,
        "fingerprint": "f",
        "sources": {"patch": {}, "embed": {"m": {"status": "ok", "shard": str(shard)}}},
    }
    batch = {"index": np.asarray([0]), "payload": np.asarray([json.dumps(row)], dtype=object)}
    return ctx, batch


@pytest.mark.parametrize("retries,status", [(0, "write_failed"), (1, "ok")])
def test_a_failed_write_is_retried(tmp_path, monkeypatch, retries, status):
    real = write_mod.write_item
    calls = []

    def flaky(ctx, row, reader=None):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ESTALE, "Stale file handle")
        return real(ctx, row, reader)

    monkeypatch.setattr(write_mod, "write_item", flaky)
    ctx, batch = ctx_and_batch(tmp_path, retries)
    out = write_mod.finalize_items(batch, ctx)
    assert list(out["status"]) == [status]
    assert len(calls) == 1 + retries
    assert (tmp_path / "out" / "p00000.npz").exists() == (status == "ok")
