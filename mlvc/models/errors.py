"""The errors of mlvc models: one-line messages, exit codes from mlvc.errors' table."""

from __future__ import annotations

from ..errors import MlvcError, UsageError


class ModelError(MlvcError):
    """A model that cannot be saved, read or loaded (bad directory, unknown flavor...)."""


class ModelFailed(ModelError):
    """The model itself raised while scoring (its own bug, or input it cannot take)."""

    @classmethod
    def of(cls, e: BaseException) -> ModelFailed:
        return cls(f"the model failed: {one_line(e)}")


def one_line(e: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(e).strip()
    line = f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


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


class UntrustedModel(MlvcError):
    """A model whose files would run code (a pickle) and that does not come from this
    repository; loading it needs an explicit opt-in (``trust=True``, ``--trust``)."""

    exit_code = 16
