"""What the model implementations share at run time: device, autocast, strict loading,
the forward scaffolding, and the ``embed_batch`` frame (:class:`BatchEmbedder`, and
:class:`TorchEmbedder` for the networks).

Kept apart from ``base.py`` so the catalog and registry stay importable without torch:
torch is imported inside the functions that need it.
"""

from __future__ import annotations

import functools
import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedder, Embedding
from rs_embed_ray.models.weights import ResolvedWeights, resolve_weights
from rs_embed_ray.specs import OutputSpec, SpatialSpec, TemporalSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


def resolve_device(device: str | None) -> str:
    """``auto`` -> cuda when available, else cpu (mps is not used for batch export)."""
    import torch

    dev = (device or "auto").strip().lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device={device!r} was requested but CUDA is not available.")
    return dev


def autocast_dtype(device: str, precision: str) -> Any:
    """The autocast dtype for ``precision="auto"`` on CUDA (bf16 if supported, else fp16).

    None means plain float32 (CPU, or ``precision="float32"``).
    """
    import torch

    if precision != "auto" or not str(device).startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: str, dtype: Any) -> AbstractContextManager[Any]:
    """``torch.autocast`` on CUDA with ``dtype``, or a no-op."""
    import torch

    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def precision_label(dtype: Any) -> str:
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"


def load_state_dict_file(path: str) -> dict[str, Any]:
    """Read a ``.safetensors`` or torch checkpoint into a flat ``{name: tensor}`` dict.

    Torch files load with ``weights_only=True`` (no pickled code runs); a dict wrapped under
    ``state_dict`` / ``model`` / ``module`` is unwrapped.
    """

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise WeightsError(f"Cannot read safetensors file {path}: {exc}") from exc
    try:
        obj = _torch_load(str(path))
    except Exception as exc:
        raise WeightsError(f"Cannot read checkpoint {path}: {exc}") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"Checkpoint {path} does not hold a state dict ({type(obj).__name__}).")
    return dict(obj)


def _torch_load(path: str) -> Any:
    """Memory-mapped where the file allows it: the model copies what it needs and the mapping
    goes with the dict, instead of a heap copy of the whole checkpoint. The legacy (pre-zip)
    format cannot be mapped and is read whole."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def strip_prefix(
    sd: dict[str, Any],
    prefixes: tuple[str, ...] = ("model.", "module."),
    *,
    nested: bool = False,
) -> dict[str, Any]:
    """Drop a wrapper prefix when every key has it (``model.`` from PyTorchModelHubMixin).

    By default only the first prefix that every key has is dropped; ``nested=True`` peels
    each of ``prefixes`` in turn (``module.`` then ``model.`` ...), for wrapped wrappers.
    """
    for pre in prefixes:
        if sd and all(k.startswith(pre) for k in sd):
            sd = {k[len(pre) :]: v for k, v in sd.items()}
            if not nested:
                return sd
    return sd


def check_state_dict(
    model: Any, sd: dict[str, Any], *, path: str, what: str = "", stray: Sequence[str] = ()
) -> None:
    """Raise a readable WeightsError unless ``sd`` has exactly the model's keys and shapes.

    The message names missing, unexpected (plus ``stray``, keys already set aside by the
    caller) and mis-shaped keys; ``what`` names the model (``"DOFA checkpoint ..."``).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own)) + list(stray)
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(sd))
        if tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or bad:
        head = f"{what} checkpoint" if what else "Checkpoint"
        raise WeightsError(
            f"{head} {path} does not match the architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected "
            f"(e.g. {extra[:3]}), {len(bad)} shape mismatches (e.g. {bad[:2]})."
        )


def load_strict(model: Any, sd: dict[str, Any], *, path: str) -> None:
    """``load_state_dict(strict=True)``; a mismatch names missing/extra/mis-shaped keys."""
    check_state_dict(model, sd, path=path)
    model.load_state_dict(sd, strict=True)


def load_prepared(model: T, path: str | Path | None, prepare: Callable[..., dict[str, Any]]) -> T:
    """Read ``path`` (if any), map it with ``prepare(model, sd, path=...)`` (which checks
    it strictly) and load it with ``strict=True``; returns ``model``."""
    if path is not None:
        sd = prepare(model, load_state_dict_file(str(path)), path=str(path))
        model.load_state_dict(sd, strict=True)  # type: ignore[attr-defined]
    return model


def build_seeded(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``build(*args, **kwargs)`` with torch's RNG seeded to 0 inside a fork, so random-init
    runs are reproducible without touching the caller's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(*args, **kwargs)


def build_loaded(
    build: Callable[..., T],
    *args: Any,
    path: str | Path | None,
    prepare: Callable[..., dict[str, Any]],
    **kwargs: Any,
) -> T:
    """``build(*args, **kwargs)`` loaded from ``path`` (``load_prepared``); random init
    (``build_seeded``) without a path.

    Why: random init of a ViT-base takes about 2 s of CPU, at the start of the run and before
    the first forward, and the checkpoint then overwrites all of it. With a path the module is
    built on torch's meta device, given uninitialised memory and loaded strictly, so every
    tensor comes from the file. A module with non-persistent buffers (no checkpoint holds them)
    is built the slow way. Only for models whose ``prepare`` reads the module's shapes, not its
    values.
    """
    if path is None:
        return build_seeded(build, *args, **kwargs)
    import torch

    with torch.device("meta"):
        model: Any = build(*args, **kwargs)
    tensors = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    if tensors - set(model.state_dict()):  # a non-persistent buffer: built and kept in init
        return load_prepared(build_seeded(build, *args, **kwargs), path, prepare)
    return load_prepared(model.to_empty(device="cpu"), path, prepare)


# ---------------------------------------------------------------------------------------
# forward scaffolding
# ---------------------------------------------------------------------------------------


@functools.cache
def _note_lowered_precision(setting: str) -> None:
    """Once a process and setting: the guard runs on every batch."""
    log.info("float32 matmul precision is %r in this process: models run at 'highest'", setting)


@contextmanager
def default_matmul_precision() -> Iterator[None]:
    """float32 matmuls at torch's default precision ("highest") while a model runs, the
    process's own setting put back after. A library imported before the export can lower it
    for the whole process (terratorch sets "medium"): CPU matmuls then compute in bfloat16
    inside (a 256 x 256 product 0.17 off here, torch 2.14), and the embeddings differ from
    the official model's and from a run in another process."""
    import torch

    before = torch.get_float32_matmul_precision()
    if before == "highest":
        yield
        return
    _note_lowered_precision(before)
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@contextmanager
def inference(device: str, dtype: Any) -> Iterator[None]:
    """``torch.inference_mode`` plus the model's autocast (a no-op without ``dtype``), at the
    default float32 matmul precision (``default_matmul_precision``)."""
    import torch

    with default_matmul_precision(), torch.inference_mode(), autocast_context(device, dtype):
        yield


def to_numpy(t: Any) -> np.ndarray:
    """A tensor (any float dtype, any device) -> float32 numpy on the host."""
    return t.float().cpu().numpy().astype(np.float32, copy=False)


def tokens_to_grid(tok: Any, side: int | None = None) -> np.ndarray:
    """(B, N, D) row-major patch tokens -> (B, D, side, side) float32 numpy.

    ``side`` defaults to ``sqrt(N)`` (a square token grid).
    """
    b, n, d = tok.shape
    side = side or math.isqrt(n)
    grid = tok.float().reshape(b, side, side, d).permute(0, 3, 1, 2)
    return grid.cpu().numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------
# the embed_batch frame
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One ``embed_batch`` call, non-empty, with one checked fetch meta per input."""

    inputs: list[np.ndarray]
    metas: list[dict[str, Any]]
    output: OutputSpec
    spatials: list[SpatialSpec]
    temporal: TemporalSpec | None

    def __len__(self) -> int:
        return len(self.inputs)


class BatchEmbedder(Embedder):
    """An :class:`Embedder` whose ``embed_batch`` is a fixed frame: an empty batch gives [],
    otherwise the fetch metas are checked (one per input) and ``_embed`` gets the batch."""

    def embed_batch(
        self,
        inputs: list[np.ndarray],
        *,
        output: OutputSpec,
        spatials: list[SpatialSpec],
        temporal: TemporalSpec | None,
        fetch_metas: list[dict[str, Any]],
    ) -> list[Embedding]:
        """Embed a batch with ``_embed``; same length and order as ``inputs``."""
        if not inputs:
            return []
        metas = self._metas(len(inputs), fetch_metas)
        return self._embed(Batch(list(inputs), metas, output, spatials, temporal))

    @abstractmethod
    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed a non-empty batch; same length and order as ``batch.inputs``."""


class TorchEmbedder(BatchEmbedder):
    """A :class:`BatchEmbedder` that runs a torch network: device and autocast set up once
    (:meth:`_init_runtime`, called in ``_load``), weights resolved from ``model_config``,
    and the forward's context and meta keys."""

    _amp_dtype: Any = None

    def _init_runtime(self) -> None:
        """Resolve ``device`` (``auto`` -> cuda/cpu) and the autocast dtype of ``precision``."""
        self.device = resolve_device(self.device)
        self._amp_dtype = autocast_dtype(self.device, self.precision)

    def _resolve_weights(
        self,
        weights: str | None,
        *,
        filename: str,
        hf_repo: str,
        repo_keys: tuple[str, ...] = ("hf_repo",),
    ) -> ResolvedWeights:
        """``resolve_weights`` with the ``model_config`` overrides (``filename``, the first
        of ``repo_keys`` that is set, ``hf_revision``); fills ``weights_record``."""
        cfg = self.model_config
        repo = next((str(cfg[k]) for k in repo_keys if cfg.get(k)), hf_repo)
        resolved = resolve_weights(
            self.info.model_id,
            weights,
            filename=str(cfg.get("filename") or filename),
            hf_repo=repo,
            hf_revision=cfg.get("hf_revision"),
        )
        self.weights_record = resolved.record()
        return resolved

    def inference(self) -> AbstractContextManager[None]:
        """The forward's context: inference mode and this model's autocast."""
        return inference(self.device, self._amp_dtype)

    def run_meta(self) -> dict[str, Any]:
        """The ``device`` and ``precision`` keys every embedding's meta carries."""
        return {"device": self.device, "precision": precision_label(self._amp_dtype)}


__all__ = [
    "Batch",
    "BatchEmbedder",
    "TorchEmbedder",
    "autocast_context",
    "autocast_dtype",
    "build_loaded",
    "build_seeded",
    "check_state_dict",
    "default_matmul_precision",
    "inference",
    "load_prepared",
    "load_state_dict_file",
    "load_strict",
    "precision_label",
    "resolve_device",
    "strip_prefix",
    "to_numpy",
    "tokens_to_grid",
]
