"""Error hierarchy: every error a user can cause is one of these, saying what to change."""


class RSEmbedRayError(Exception):
    """Base class of all errors raised on purpose by rs-embed-ray."""


class SpecError(RSEmbedRayError, ValueError):
    """A spatial, temporal, sensor or output spec is invalid."""


class ProviderError(RSEmbedRayError):
    """Pixels could not be fetched (bad source, no imagery, auth, quota)."""


class NoImageryError(ProviderError):
    """The source has no imagery for this place and time window (a deterministic answer:
    asking again, alone or in a batch, gives the same answer, so it is never retried)."""


class ModelError(RSEmbedRayError, ValueError):
    """A model request or export request is invalid, or a model failed."""


class InputTypeError(ModelError, TypeError):
    """An argument of the Python API has the wrong type (e.g. a string where a mapping goes):
    a TypeError, and a ModelError like every other request error."""


class WeightsError(ModelError):
    """Model weights could not be found or loaded."""


class OutputLockedError(RSEmbedRayError):
    """Another run is writing to the same output location."""


class ExportStopped(RSEmbedRayError):
    """A place failed and ``continue_on_error`` is off, so the run stopped (contract §2.14).

    Places that had finished are written before this is raised, and the run's log keeps
    every finished step: rerun with ``resume=True`` to continue from there. ``index`` /
    ``name`` say which place failed, ``stage`` where (``fetch[...]``, ``infer[...]``,
    ``write``), ``reason`` why.
    """

    def __init__(self, message: str, *, index: int, name: str, stage: str, reason: str) -> None:
        super().__init__(message)
        self.index = index
        self.name = name
        self.stage = stage
        self.reason = reason
