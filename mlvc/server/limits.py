"""The limits of ``mlvc models serve``: what one client may cost the server.

max_body          bytes in a request body (413 above it)       MLVC_SERVE_MAX_BODY       64 MiB
max_json_body     bytes in a JSON body: parsed JSON takes      MLVC_SERVE_MAX_JSON_BODY  8 MiB
                  about 20 times its size in memory, and
                  CPU time no other thread gets (413; send
                  big batches as CSV or Arrow)
max_concurrency   requests scored at once per worker (503      MLVC_SERVE_MAX_CONCURRENCY  8
                  with Retry-After above it)
header_timeout    seconds for a request's line and headers     MLVC_SERVE_HEADER_TIMEOUT  10
max_header_bytes  bytes of them (431 above it)                 MLVC_SERVE_MAX_HEADER_BYTES 64 KiB
body_timeout      seconds for a request's body (408)           MLVC_SERVE_BODY_TIMEOUT    60
keep_alive        seconds an idle connection stays open        MLVC_SERVE_KEEP_ALIVE      5
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from ..errors import UsageError

ENV = {
    "max_body": "MLVC_SERVE_MAX_BODY",
    "max_json_body": "MLVC_SERVE_MAX_JSON_BODY",
    "max_concurrency": "MLVC_SERVE_MAX_CONCURRENCY",
    "header_timeout": "MLVC_SERVE_HEADER_TIMEOUT",
    "max_header_bytes": "MLVC_SERVE_MAX_HEADER_BYTES",
    "body_timeout": "MLVC_SERVE_BODY_TIMEOUT",
    "keep_alive": "MLVC_SERVE_KEEP_ALIVE",
}


@dataclass(frozen=True)
class Limits:
    max_body: int = 64 << 20
    max_json_body: int = 8 << 20
    max_concurrency: int = 8
    header_timeout: float = 10.0
    max_header_bytes: int = 64 << 10
    body_timeout: float = 60.0
    keep_alive: int = 5

    @classmethod
    def from_env(cls, environ=os.environ, **given) -> Limits:
        """Limits from the environment, then ``given`` (CLI options; None means unset)."""
        values = {}
        for f in fields(cls):
            text = environ.get(ENV[f.name], "").strip()
            if given.get(f.name) is not None:
                values[f.name] = given[f.name]
            elif text:
                kind = float if f.type == "float" else int
                try:
                    values[f.name] = kind(text)
                except ValueError:
                    raise UsageError(f"{ENV[f.name]}={text!r} is not a number") from None
        limits = cls(**values)
        for name, value in asdict(limits).items():
            if value <= 0:
                raise UsageError(f"{ENV[name]} must be more than 0 (got {value})")
        return limits

    def to_env(self) -> dict[str, str]:
        """The same limits as environment variables (for uvicorn's worker processes)."""
        return {ENV[k]: str(v) for k, v in asdict(self).items()}
