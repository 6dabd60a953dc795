"""The errors of mlvc models; they live in ``mlvc.errors`` with every other error and are
re-exported here for ``from mlvc.models.errors import ...``."""

from ..errors import (
    BadPayload,
    MissingExtra,
    ModelError,
    ModelFailed,
    SignatureError,
    UnknownModel,
    UnsupportedMediaType,
    UntrustedModel,
    one_line,
)

__all__ = [
    "BadPayload",
    "MissingExtra",
    "ModelError",
    "ModelFailed",
    "SignatureError",
    "UnknownModel",
    "UnsupportedMediaType",
    "UntrustedModel",
    "one_line",
]
