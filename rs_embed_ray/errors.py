"""Error hierarchy: every error a user can cause is one of these, saying what to change."""


class RSEmbedRayError(Exception):
    """Base class of all errors raised on purpose by rs-embed-ray."""


class SpecError(RSEmbedRayError, ValueError):
    """A spatial, temporal, sensor or output spec is invalid."""


class ProviderError(RSEmbedRayError):
    """Pixels could not be fetched (bad source, no imagery, auth, quota)."""


class ModelError(RSEmbedRayError, ValueError):
    """A model request or export request is invalid, or a model failed."""


class InputTypeError(ModelError, TypeError):
    """An argument of the Python API has the wrong type (e.g. a string where a mapping goes):
    a TypeError, and a ModelError like every other request error."""


class WeightsError(ModelError):
    """Model weights could not be found or loaded."""


class OutputLockedError(RSEmbedRayError):
    """Another run is writing to the same output location."""
