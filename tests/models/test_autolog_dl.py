"""mlvc.autolog() for deep-learning trainers: Lightning, Keras and Hugging Face's Trainer
train for real (a few epochs of a tiny model on CPU) and log their hyperparameters, each
epoch's metrics and the trained model, in a run of their own or the active one.

Heavy: torch, keras and transformers are gigabytes, no dependency of mlvc, so CI does not
install them. ``bash benchmarks/deep_learning.sh`` makes a venv with them and runs this file.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import mlvc
from mlvc.models.autolog import autolog

pytestmark = pytest.mark.heavy
if importlib.util.find_spec("jax") is not None:
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported


@pytest.fixture
def on(project):
    yield
    autolog(disable=True)


def _only_run(repo) -> dict:
    (row,) = repo.log()
    return repo.show(row["id"]) | {"status": row["status"]}


def _steps(repo, rid: str, key: str) -> list[int]:
    table = repo.query(f"SELECT step FROM metrics WHERE run_id = '{rid}' AND key = '{key}' "
                       "ORDER BY step")  # fmt: skip
    return table.column("step").to_pylist()


def _fetch(repo, rid: str, path: str, into) -> None:
    into.parent.mkdir(parents=True, exist_ok=True)
    into.write_bytes(b"".join(repo.cat(f"{rid}:artifacts/{path}")))


# -- Lightning ---------------------------------------------------------------------------------


def _lightning():
    torch = pytest.importorskip("torch")
    try:
        import lightning.pytorch as pl
    except ImportError:
        pl = pytest.importorskip("pytorch_lightning")
    return torch, pl


def _regressor(pl, torch):
    class Regressor(pl.LightningModule):
        def __init__(self, lr: float = 0.05, width: int = 4):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(width, 1)

        def forward(self, x):
            return self.layer(x).squeeze(-1)

        def training_step(self, batch, i):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, i):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)

    return Regressor


def _trainer(pl, epochs: int = 3, **kwargs):
    return pl.Trainer(max_epochs=epochs, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, enable_model_summary=False, **kwargs)  # fmt: skip


def test_lightning_logs_what_the_module_logs_at_epoch_end_and_no_stale_validation(on, repo, caplog):
    """Lightning calls a callback's on_train_epoch_end before the module's: read there, a
    metric the module logs in its own lands an epoch late and the last is lost; and a
    validation run every 2nd epoch left its last value to be logged again in between."""
    torch, pl = _lightning()
    autolog(["lightning"], log_models=False)

    class Marked(_regressor(pl, torch)):
        def on_train_epoch_end(self):
            self.log("marker", float(self.current_epoch))  # the epoch it was logged in

    x = torch.rand(32, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=8)
    # an hparam named as a trainer setting, and one too long for a param
    module = Marked(lr=0.05)
    module.hparams.update({"epochs": 100, "notes": "n" * 70_000, "width": 4})
    _trainer(pl, epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=0).fit(
        module, data, data
    )
    run = _only_run(repo)
    rid = run["id"]
    marker = repo.query(f"SELECT step, value FROM metrics WHERE run_id = '{rid}' "
                        "AND key = 'marker' ORDER BY step").to_pylist()  # fmt: skip
    assert [(p["step"], p["value"]) for p in marker] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]
    assert _steps(repo, rid, "val_loss") == [1, 3]  # only where validation ran
    params = run["params"]
    assert params["epochs"] == 4  # the trainer's, not the module's 100 (said as a warning)
    assert "epochs=100 is not logged" in caplog.text
    assert params["notes"] == "n" * 6000 and params["width"] == 4  # cut, and the rest kept


def test_lightning_fit_logs_hparams_each_epoch_and_a_loadable_module(on, repo):
    torch, pl = _lightning()
    assert autolog(["lightning"]) == ["lightning"]
    torch.manual_seed(0)
    x = torch.rand(64, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=16)
    module = _regressor(pl, torch)(lr=0.05)
    trainer = _trainer(pl)
    trainer.fit(module, data, data)
    assert mlvc.active_run() is None  # the run started for the fit ended with it
    run = _only_run(repo)
    assert run["status"] == "finished"
    params = run["params"]
    assert (params["epochs"], params["lr"], params["width"]) == (3, 0.05, 4)  # hparams
    assert (params["optimizer_name"], params["optimizer_lr"]) == ("SGD", 0.05)
    assert params["optimizer_momentum"] == 0.5
    rid = run["id"]
    assert _steps(repo, rid, "train_loss") == [0, 1, 2]
    assert _steps(repo, rid, "val_loss") == [0, 1, 2]
    assert run["metrics"]["val_loss"] == pytest.approx(float(trainer.callback_metrics["val_loss"]))
    assert trainer.callbacks == [c for c in trainer.callbacks if "Mlvc" not in type(c).__name__]
    loaded = mlvc.models.load(f"run:{rid}/models/model")
    sample = np.random.RandomState(1).rand(5, 4).astype(np.float32)
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(sample)).numpy()
    assert np.allclose(loaded.predict(sample), expected, atol=1e-6)


def test_lightning_fit_inside_a_run_logs_into_it_and_leaves_it_open(on, repo):
    torch, pl = _lightning()
    autolog(["lightning"], log_models=False)
    x = torch.rand(32, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=8)
    with mlvc.start_run(name="mine") as run:
        run.log_param("dataset", "synthetic")
        _trainer(pl, epochs=2).fit(_regressor(pl, torch)(), data)
        assert mlvc.active_run() is run
    shown = _only_run(repo)
    assert shown["name"] == "mine" and shown["params"]["dataset"] == "synthetic"
    assert shown["params"]["epochs"] == 2 and _steps(repo, shown["id"], "train_loss") == [0, 1]
    assert shown["artifacts"]["entries"] == []  # log_models=False


def test_only_the_first_process_of_a_distributed_training_logs(on, repo, monkeypatch):
    torch, pl = _lightning()
    autolog(["lightning"], log_models=False)
    x = torch.rand(16, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=8)
    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning's DDP launcher sets it in process 2
    _trainer(pl, epochs=1).fit(_regressor(pl, torch)(), data)
    assert repo.log() == [] and mlvc.active_run() is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    _trainer(pl, epochs=1).fit(_regressor(pl, torch)(), data)
    assert len(repo.log()) == 1


# -- Keras -------------------------------------------------------------------------------------


def _keras_model(keras):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001), loss="binary_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    return model


def test_keras_fit_logs_its_settings_each_epoch_and_the_model(on, repo, tmp_path):
    keras = pytest.importorskip("keras")
    assert autolog(["keras"]) == ["keras"]
    keras.utils.set_random_seed(0)
    x = np.random.RandomState(0).rand(64, 4).astype("float32")
    y = (x.sum(1) > 2).astype("float32")
    model = _keras_model(keras)
    seen = []
    mine = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    # callbacks given by position (x, y, batch_size, epochs, verbose, callbacks): kept
    history = model.fit(x, y, 16, 3, 0, [mine], validation_split=0.25)
    assert seen == [0, 1, 2] and mlvc.active_run() is None
    run = _only_run(repo)
    assert run["status"] == "finished"
    params = run["params"]
    assert (params["epochs"], params["batch_size"], params["validation_split"]) == (3, 16, 0.25)
    assert params["optimizer_name"] == "Adam"
    assert params["optimizer_learning_rate"] == 0.001  # not float32's 0.0010000000474974513
    found = repo.query("SELECT count(*) AS n FROM params WHERE key = 'optimizer_learning_rate' "
                       "AND value = '0.001'")  # fmt: skip
    assert found.column("n").to_pylist() == [1]
    rid = run["id"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert _steps(repo, rid, key) == [0, 1, 2], key
    assert run["metrics"]["val_loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    _fetch(repo, rid, "model/model.keras", tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    assert np.allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_a_failing_keras_fit_ends_its_run_failed_and_disable_stops_logging(on, repo):
    keras = pytest.importorskip("keras")
    inherited = "fit" in keras.Model.__dict__
    autolog(["keras"], log_models=False)
    model = _keras_model(keras)
    with pytest.raises(Exception):  # noqa: B017 - whatever the backend raises for 3 columns
        model.fit(np.zeros((8, 3), "float32"), np.zeros(8, "float32"), epochs=1, verbose=0)
    assert _only_run(repo)["status"] == "failed" and mlvc.active_run() is None
    autolog(disable=True)
    assert ("fit" in keras.Model.__dict__) == inherited  # inherited again, not shadowed
    model.fit(np.zeros((8, 4), "float32"), np.zeros(8, "float32"), epochs=1, verbose=0)
    assert len(repo.log()) == 1


def test_keras_ctrl_c_is_killed_and_nothing_autolog_logs_stops_a_training(on, repo, caplog):
    keras = pytest.importorskip("keras")
    autolog(["keras"])

    class NoConfig(keras.Model):  # saving needs a get_config this one cannot give
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1, activation="sigmoid")

        def call(self, x):
            return self.dense(x)

        def get_config(self):
            raise NotImplementedError("no config")

    model = NoConfig()
    model.compile(optimizer="adam", loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc roc"), "accuracy"])  # fmt: skip
    x = np.random.RandomState(0).rand(32, 4).astype("float32")
    y = (x.sum(1) > 2).astype("float32")
    seen = []
    mine = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    own = keras.callbacks.CallbackList([mine], add_history=True, model=model)
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=own)  # the caller's CallbackList
    assert seen == [0, 1] and mine in own.callbacks
    assert not any("Mlvc" in type(c).__name__ for c in own.callbacks)  # ours taken out again
    run = _only_run(repo)
    assert run["status"] == "finished" and history.history["loss"]
    # "auc roc" is no metric name mlvc takes: the others of each epoch are kept
    assert _steps(repo, run["id"], "accuracy") == [0, 1]
    assert _steps(repo, run["id"], "loss") == [0, 1]
    assert "could not log metric 'auc roc'" in caplog.text
    assert "could not log the model" in caplog.text  # a warning; the fit returned

    def interrupt(epoch, logs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0,
                  callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=interrupt)])  # fmt: skip
    statuses = sorted(r["status"] for r in repo.log())
    assert statuses == ["finished", "killed"] and mlvc.active_run() is None


# -- Hugging Face Trainer ----------------------------------------------------------------------


def test_transformers_train_logs_its_arguments_each_step_and_the_saved_model(on, repo, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it with torch
    assert autolog(["transformers"]) == ["transformers"]
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16,
                                     max_position_embeddings=16)  # fmt: skip
    model = transformers.BertForSequenceClassification(config)

    class Tiny(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return {"input_ids": torch.tensor([1 + i % 7, 2, 3, 4]), "labels": torch.tensor(i % 2)}

    secret = "hf_" + "s3cr3t" * 6
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=8,
        learning_rate=5e-4, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True, hub_token=secret,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tiny())
    trainer.train()
    assert mlvc.active_run() is None
    run = _only_run(repo)
    assert run["status"] == "finished"
    params = run["params"]
    assert (params["learning_rate"], params["num_train_epochs"]) == (5e-4, 2)
    assert params["per_device_train_batch_size"] == 8
    assert params["model_class"] == "BertForSequenceClassification"
    assert None not in params.values()  # the arguments left unset are not params
    assert _steps(repo, run["id"], "loss") == list(range(1, 9))  # 2 epochs x 4 batches
    assert _steps(repo, run["id"], "epoch") == list(range(1, 9))  # once at the last step too
    assert params["hub_token"] == "<HUB_TOKEN>"  # masked by the arguments themselves
    artifacts = sorted(e["path"] for e in run["artifacts"]["entries"])
    # no training_args.bin: a pickle of the arguments with the Hub token in clear
    assert artifacts == ["model/config.json", "model/model.safetensors"]
    for name in artifacts:
        data = b"".join(repo.cat(f"{run['id']}:artifacts/{name}"))
        assert secret.encode() not in data
    for name in ("config.json", "model.safetensors"):
        _fetch(repo, run["id"], f"model/{name}", tmp_path / "saved" / name)
    again = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([[1, 2, 3, 4]])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


SPAWNED = """
import sys, torch, lightning.pytorch as pl, mlvc

class Regressor(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, i):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

if __name__ == "__main__":
    mlvc.autolog(["lightning"], log_models=False)
    x = torch.rand(32, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=8)
    pl.Trainer(max_epochs=2, strategy=sys.argv[1], accelerator="cpu", devices=2,
               enable_progress_bar=False, logger=False, enable_checkpointing=False,
               enable_model_summary=False).fit(Regressor(), data)
"""


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_lightning_training_in_other_processes_makes_one_run(on, repo, project, strategy):
    """ddp_spawn pickles the trainer's callbacks (ours held the run: the fit failed before
    training); ddp_fork trains in forks (what they logged was lost with them). Now the
    launching process logs the metrics the trainer brings back: one run, no error."""
    import subprocess
    import sys

    _lightning()
    (project / "spawned.py").write_text(SPAWNED)
    done = subprocess.run([sys.executable, "spawned.py", strategy], cwd=project,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run = _only_run(repo)
    assert run["status"] == "finished" and run["params"]["epochs"] == 2
    assert "train_loss" in run["metrics"]


def test_lightning_ctrl_c_ends_its_run_killed(on, repo):
    """Lightning catches Ctrl-C, shuts down and calls exit(1): the run is killed, as a run
    a Ctrl-C ends in ``with mlvc.start_run()``, not failed."""
    torch, pl = _lightning()
    autolog(["lightning"], log_models=False)

    class CtrlC(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    x = torch.rand(16, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=8)
    with pytest.raises(SystemExit):
        _trainer(pl, epochs=3, callbacks=[CtrlC()]).fit(_regressor(pl, torch)(), data)
    run = _only_run(repo)
    assert run["status"] == "killed" and mlvc.active_run() is None
    assert _steps(repo, run["id"], "train_loss") == [0]  # the epoch that ended
