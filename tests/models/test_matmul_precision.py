"""A library imported before an export can lower torch's float32 matmul precision for the
whole process (terratorch sets "medium"; on CPU the matmuls then compute in bfloat16
inside). The model's forward runs at torch's default, "highest", so the embeddings do not
depend on what else the user imported, and the user's setting is put back after."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rs_embed_ray.models.runtime import default_matmul_precision, inference
from rs_embed_ray.pipeline import infer
from rs_embed_ray.pipeline.infer import ModelWorker


@pytest.fixture
def medium():
    torch.set_float32_matmul_precision("medium")
    yield
    torch.set_float32_matmul_precision("highest")


def _product() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=g), torch.randn(256, 256, generator=g)
    return torch.nn.functional.linear(a, b)


def test_medium_precision_changes_cpu_matmuls(medium) -> None:
    """The premise: without the guard, "medium" changes a CPU product (else the tests below
    prove nothing on this machine)."""
    lowered = _product()
    torch.set_float32_matmul_precision("highest")
    if torch.equal(lowered, _product()):
        pytest.skip("this CPU computes float32 matmuls the same at 'medium'")


@pytest.mark.parametrize("guard", [default_matmul_precision, lambda: inference("cpu", None)])
def test_forward_runs_at_highest_and_puts_the_setting_back(medium, guard) -> None:
    with guard():
        inside = _product()
        assert torch.get_float32_matmul_precision() == "highest"
    assert torch.get_float32_matmul_precision() == "medium"
    torch.set_float32_matmul_precision("highest")
    assert torch.equal(inside, _product())


def test_model_worker_embeds_at_highest(medium, monkeypatch) -> None:
    """The worker's embed step (any model, registered ones too) runs under the guard."""
    seen = []

    def observe(*args, **kwargs):  # stands in for the model: what precision does it run at
        seen.append(torch.get_float32_matmul_precision())
        return [np.zeros(3, np.float32)]

    monkeypatch.setattr(infer, "embed_with_prep", observe)
    worker = ModelWorker.__new__(ModelWorker)  # the step alone: no model is loaded
    worker.embedder = worker.prep = worker.output = None
    worker.batch_size, worker.retries, worker.backoff = 1, 0, 0.0
    worker._embed([np.zeros((1, 2, 2), np.float32)], [None], [{}], None)
    assert seen == ["highest"] and torch.get_float32_matmul_precision() == "medium"
