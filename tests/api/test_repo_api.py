"""``Repo``'s signatures are what they say: ``commit`` names its keywords (LAYOUT §5.6),
so users and type checkers see them, and a misspelt one is refused by name."""

from __future__ import annotations

import inspect

import pytest

from mlvc import Repo
from mlvc.runs.record import capture_inputs


def test_commit_names_every_keyword_it_takes():
    params = inspect.signature(Repo.commit).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert {
        "message", "name", "params", "metrics", "params_files", "metrics_files", "data",
        "artifacts", "tags", "command", "cwd", "capture_code", "capture_env", "inputs",
    } <= set(params)  # fmt: skip


def test_commit_keywords_work_and_a_misspelt_one_is_refused(repo, project):
    bare = repo.run(repo.commit("bare", capture_code=False, capture_env=False))
    assert bare.code is None and bare.env is None
    inputs = capture_inputs(repo.ctx, data=["data"], env=False)
    again = repo.run(repo.commit("again", inputs=inputs))
    assert again.data == inputs.data and again.code == inputs.code
    with pytest.raises(TypeError, match="captur_env"):
        repo.commit("typo", captur_env=False)
    assert repo.fsck() == []
