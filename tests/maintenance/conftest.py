"""The export tests write to S3 too: they share the moto server fixtures of tests/remotes
(loaded from that conftest by path, since tests/ folders are not packages)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_mlvc_remotes_conftest", Path(__file__).parents[1] / "remotes" / "conftest.py"
)
_remotes = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _remotes  # dataclasses look their module up
_spec.loader.exec_module(_remotes)

s3 = _remotes.s3
s3_bucket = _remotes.s3_bucket
