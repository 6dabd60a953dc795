"""The errors of mlvc models: one-line messages, exit codes from mlvc.errors' table."""

from __future__ import annotations

from ..errors import MlvcError, UsageError


class ModelError(MlvcError):
    """A model that cannot be saved, read or loaded (bad directory, unknown flavor...)."""


class UnknownModel(MlvcError):
    """A model name, version, alias or URI that names nothing."""

    exit_code = 4


class SignatureError(UsageError):
    """Input that does not fit the model's signature: a missing column, a wrong type."""


class BadPayload(UsageError):
    """A scoring request body that cannot be read (HTTP 400)."""


class UnsupportedMediaType(UsageError):
    """A scoring request in a content type the server does not read (HTTP 415)."""


class MissingExtra(MlvcError):
    """An optional dependency a command needs is not installed."""
