"""Embedder protocol: a model turns raw-unit patches into embeddings. Pure Python + torch, no ray.

A model knows nothing of providers. The pipeline hands it the arrays a provider fetched for
the model's ``SensorSpec`` (bands in the sensor's order, raw units, float32) and asks for a
batch of embeddings. Weights are loaded once, in ``__init__``; ``embed_batch`` runs one
forward per batch.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from rs_embed_ray.specs import OutputSpec, SensorSpec, SpatialSpec, TemporalSpec

log = logging.getLogger(__name__)


@dataclass
class Embedding:
    """One place's embedding: (D,) pooled or (D, h, w) grid, float32, plus JSON-able meta."""

    data: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """Catalog facts about a model; cheap to build (no torch, no weights)."""

    model_id: str
    # every catalog id is implemented (issue 20 retired "planned"); kept for describe()
    status: Literal["available"]
    sensor: SensorSpec | None
    kind: Literal["on_the_fly", "precomputed"] = "on_the_fly"
    temporal_mode: Literal["single", "multi"] = "single"
    n_frames: int | None = None
    image_size: int | None = None
    dim_pooled: int | None = None
    dim_grid: int | None = None
    grid_hw: tuple[int, int] | None = None
    outputs: tuple[str, ...] = ("pooled", "grid")
    weights_source: str = ""
    variants: tuple[str, ...] = ()
    notes: str = ""
    # explicit bins ("30d": fixed 30-day bins from the window start, at most n_frames, empty
    # bins all-NaN) instead of an equal-bin series with back-filling; multi mode only
    frame_bins: str | None = None
    # the version of our implementation's numbers: bumped when a fix changes the embeddings
    # a model produces from the same input and weights (e.g. dofa 2: the patch kernel
    # layout). It is part of the pair and request fingerprints when above 1, so a resumed
    # run re-embeds what the older code embedded instead of mixing both.
    code_version: int = 1
    # the other modalities a model offers, each with its own default sensor (satmaepp
    # "s2_10b", olmoearth "s1"): chosen by an export's ``modality=`` or by
    # ``model_config["modality"]``; the planner puts the choice into ``model_config``
    modality_sensors: tuple[tuple[str, SensorSpec], ...] = ()

    @property
    def fetch_semantics(self) -> str:
        """Two models share a fetched patch only when their semantics match."""
        if self.temporal_mode == "multi":
            if self.frame_bins:
                return f"bins:{self.frame_bins}:max{self.n_frames or 12}"
            return f"multi:{self.n_frames or 8}"
        return "single"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "type": self.kind,
            "status": self.status,
            "temporal_mode": self.temporal_mode,
            "n_frames": self.n_frames,
            "frame_bins": self.frame_bins,
            "image_size": self.image_size,
            "dim_pooled": self.dim_pooled,
            "dim_grid": self.dim_grid,
            "output": list(self.outputs),
            "weights_source": self.weights_source,
            "code_version": self.code_version,
        }


class Embedder(ABC):
    """Base class of every model implementation.

    Subclasses set ``info`` and implement ``_load`` and ``embed_batch``. ``weights`` is an
    explicit path, ``"random"`` (random init, recorded as such), or None (resolve: env dir,
    hub cache, download).
    """

    info: ClassVar[ModelInfo]
    # the model_config keys this model reads; None: not declared (nothing is refused).
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = None

    def __init__(
        self,
        *,
        device: str = "cpu",
        weights: str | None = None,
        model_config: dict[str, Any] | None = None,
        precision: Literal["auto", "float32"] = "auto",
    ) -> None:
        self.device = device
        self.model_config = dict(model_config or {})
        self.precision = precision
        # {"weights": path | "random-init", "sha256": hex | None, "source": ...}
        self.weights_record: dict[str, Any] = {}
        self._load(weights)

    @abstractmethod
    def _load(self, weights: str | None) -> None:
        """Build the network and load weights; fill ``self.weights_record``."""

    @abstractmethod
    def embed_batch(
        self,
        inputs: list[np.ndarray],
        *,
        output: OutputSpec,
        spatials: list[SpatialSpec],
        temporal: TemporalSpec | None,
        fetch_metas: list[dict[str, Any]],
    ) -> list[Embedding]:
        """Embed a batch: one forward for all inputs; same length and order as ``inputs``."""

    def describe(self) -> dict[str, Any]:
        return self.info.describe()

    # the parser of ``model_config`` the loader uses (raises ModelError on a bad value), so
    # the planner refuses what the actor would refuse, before any cluster work
    config_parser: ClassVar[Callable[[dict[str, Any] | None], Any] | None] = None

    @classmethod
    def check_request(
        cls,
        *,
        weights: str | None,
        model_config: dict[str, Any] | None,
        temporals: list[TemporalSpec | None],
    ) -> None:
        """Model-specific checks of a request, run by the planner before any cluster work
        (cheap: no weights, no torch). By default the model's ``config_parser`` (the same
        parser its loader uses) reads ``model_config``; e.g. copernicus also checks its year."""
        if cls.config_parser is not None:
            cls.config_parser(model_config)

    @classmethod
    def check_model_config(cls, model_config: dict[str, Any] | None) -> None:
        """Refuse unknown ``model_config`` keys and a ``variant`` the model does not have
        (listing the valid ones), in the driver: an ignored option is a silent wrong result."""
        from rs_embed_ray.models.checks import check_model_config

        check_model_config(cls, model_config)

    @classmethod
    def check_weights(cls, weights: str | None, model_config: dict[str, Any] | None) -> None:
        """An explicit weights path must be a readable checkpoint (its header, not its
        tensors), or a folder holding the file this model loads."""
        from rs_embed_ray.models.checks import check_weights

        check_weights(cls, weights, model_config)

    def _metas(self, n: int, fetch_metas: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """One fetch meta per input (empty when none were given); a length mismatch is a bug
        in the caller, reported with the model's name."""
        metas = list(fetch_metas or [{}] * n)
        if len(metas) != n:
            from rs_embed_ray.errors import ModelError

            raise ModelError(f"{self.info.model_id} got {n} inputs but {len(metas)} fetch_metas.")
        return metas
