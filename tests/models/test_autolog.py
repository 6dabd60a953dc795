"""mlvc.autolog(): scikit-learn, XGBoost and LightGBM training logs itself (for real, on
tens of rows and a few rounds)."""

from __future__ import annotations

import numpy as np
import pytest

import mlvc
from mlvc.api.remote import ENV_START_TIMEOUT
from mlvc.models.autolog import autolog

sklearn = pytest.importorskip("sklearn")


@pytest.fixture
def on(project):
    yield autolog()
    autolog(disable=True)


def _data():
    X = np.random.RandomState(0).rand(40, 3)
    return X, (X[:, 0] > 0.5).astype(int)


def _runs(repo):
    return {r["name"] or r["id"]: repo.show(r["id"]) for r in repo.log()}


def test_sklearn_fit_logs_params_metrics_and_a_loadable_model(on, repo):
    from sklearn.linear_model import LogisticRegression, Ridge

    assert "sklearn" in on
    X, y = _data()
    model = LogisticRegression(C=0.5).fit(X, y)  # no run active: one is made for it
    with mlvc.start_run(name="reg"):
        Ridge(alpha=2.0).fit(X, X[:, 1])
    runs = _runs(mlvc.Repo())
    (clf,) = [r for name, r in runs.items() if name != "reg"]
    assert clf["params"]["C"] == 0.5 and clf["status"] == "finished"
    assert clf["metrics"]["training_accuracy_score"] == pytest.approx(model.score(X, y))
    assert "training_f1_score" in clf["metrics"]
    loaded = mlvc.models.load(f"run:{clf['id']}/models/model")
    assert list(loaded.predict(X[:5])) == list(model.predict(X[:5]))
    paths = {e["path"] for e in clf["artifacts"]["entries"]}
    assert {"models/model/mlvc-model.json", "models/model/input_example.npy"} <= paths
    reg = runs["reg"]
    assert reg["params"]["alpha"] == 2.0
    assert {"training_r2_score", "training_mean_squared_error"} <= set(reg["metrics"])


def test_a_meta_estimator_logs_once_and_disable_stops_logging(on, repo):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    X, y = _data()
    with mlvc.start_run(name="grid") as run:
        GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    shown = mlvc.Repo().show(run.run_id.hex)
    assert shown["params"]["cv"] == 2 and "C" not in shown["params"]  # inner fits are quiet
    assert [p["step"] for p in _points(repo, run.run_id.hex, "training_score")] == [0]
    autolog(disable=True)
    LogisticRegression().fit(X, y)
    assert len(repo.log()) == 1


def _points(repo, rid: str, key: str) -> list[dict]:
    table = repo.query(f"SELECT step, value FROM metrics WHERE run_id = '{rid}' AND key = '{key}' "
                       "ORDER BY step")  # fmt: skip
    return table.to_pylist()


def test_xgboost_logs_each_iteration_and_the_booster(on, repo):
    xgb = pytest.importorskip("xgboost")
    X, y = _data()
    d = xgb.DMatrix(X, label=y)
    with mlvc.start_run(name="xgb") as run:
        booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, d,
                            num_boost_round=4, evals=[(d, "train")], verbose_eval=False)  # fmt: skip
    rid = run.run_id.hex
    shown = repo.show(rid)
    assert shown["params"]["max_depth"] == 2
    points = _points(repo, rid, "train-logloss")
    assert [p["step"] for p in points] == [0, 1, 2, 3]
    assert points[-1]["value"] == pytest.approx(float(booster.eval(d).split(":")[1]), rel=1e-4)
    saved = b"".join(repo.cat(f"{rid}:artifacts/model/model.json"))
    again = xgb.Booster()
    again.load_model(bytearray(saved))
    assert np.allclose(again.predict(d), booster.predict(d))
    xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(X, y, eval_set=[(X, y)], verbose=False)
    assert len(repo.log()) == 2  # the sklearn wrapper logs through train, in a run of its own


def test_lightgbm_logs_each_iteration_and_the_booster(on, repo):
    lgb = pytest.importorskip("lightgbm")
    X, y = _data()
    params = {"objective": "binary", "verbose": -1, "min_data_in_leaf": 2}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=3,
                        valid_sets=[lgb.Dataset(X, y)], valid_names=["train"])  # fmt: skip
    (row,) = repo.log()
    rid = row["id"]
    assert repo.show(rid)["params"]["objective"] == "binary"
    assert [p["step"] for p in _points(repo, rid, "train-binary_logloss")] == [0, 1, 2]
    text = b"".join(repo.cat(f"{rid}:artifacts/model/model.txt")).decode()
    again = lgb.Booster(model_str=text)
    assert np.allclose(again.predict(X), booster.predict(X))


def test_unknown_frameworks_are_refused(project):
    with pytest.raises(mlvc.MlvcError, match="autolog knows sklearn"):
        autolog(["caffe"])


def test_only_the_first_process_of_a_distributed_job_logs(on, repo, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK"):  # torchrun's, Lightning's
        monkeypatch.setenv(name, "2")
        LogisticRegression().fit(X, y)
        monkeypatch.setenv(name, "0")
    assert repo.log() == []
    # "not distributed" (-1), padded, or not a number: logged, never silently off
    for n, value in enumerate(["-1", " 0", "00", "abc", ""], start=1):
        monkeypatch.setenv("LOCAL_RANK", value)
        LogisticRegression().fit(X, y)
        assert len(repo.log()) == n, value


def test_training_outside_a_repository_goes_on_unlogged(tmp_path, monkeypatch, caplog):
    from sklearn.linear_model import LogisticRegression

    monkeypatch.chdir(tmp_path)  # no .mlvc here or above (tmp_path is under /tmp)
    autolog(["sklearn"])
    try:
        model = LogisticRegression().fit(*_data())
    finally:
        autolog(disable=True)
    assert model.coef_.shape == (1, 3)
    assert "not an mlvc repository" in caplog.text and "training is not logged" in caplog.text


def test_a_run_that_cannot_be_recorded_does_not_cost_the_training(on, repo, monkeypatch, caplog):
    """A full disk at the end of a fit: the fit still returns its model, the run is set
    aside (not left active for the next fit to log into), and recording it later works."""
    from sklearn.linear_model import LogisticRegression

    from mlvc.runs.live import LiveRun

    conclude, failed = LiveRun._conclude, []

    def full_disk_once(self, status):
        if not failed:
            failed.append(self)
            raise OSError(28, "No space left on device")
        return conclude(self, status)

    monkeypatch.setattr(LiveRun, "_conclude", full_disk_once)
    X, y = _data()
    model = LogisticRegression().fit(X, y)
    assert model.coef_.shape == (1, 3) and "No space left on device" in caplog.text
    assert mlvc.active_run() is None and repo.log() == []
    LogisticRegression(C=0.5).fit(X, y)  # a run of its own, not logged into the first
    (second,) = repo.log()
    assert repo.show(second["id"])["params"]["C"] == 0.5
    failed[0].end("finished")  # the disk has room again: the first is recorded too
    assert len(repo.log()) == 2


def test_a_tracking_server_that_is_down_does_not_stop_training(on, project, monkeypatch, caplog):
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("MLVC_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv(ENV_START_TIMEOUT, "0.5")  # the client's own patience (30 s)
    model = LogisticRegression().fit(*_data())
    assert model.coef_.shape == (1, 3) and "training is not logged" in caplog.text
    assert mlvc.active_run() is None
