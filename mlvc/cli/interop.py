"""``mlvc import``: bring another tool's history in as mlvc runs (docs/coming-from-mlflow.md)."""

from __future__ import annotations

import os

import click

from ..render.text import echo
from ._common import emit, json_option, open_repo


@click.group("import")
def import_() -> None:
    """Import another tool's run history into this repository.

    Example: mlvc import mlflow sqlite:///mlflow.db
    """


@import_.command("mlflow")
@click.argument("source")
@click.option("--experiment", "experiments", multiple=True, metavar="NAME",
              help="Import only this experiment (repeat for more); default: all.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_option("what was imported")
def import_mlflow(source: str, experiments: tuple[str, ...], quiet: bool) -> None:
    """Import an MLflow history: experiments, runs (status, times, names, tags, parent
    links), params, full metric series, dataset inputs and artifacts.

    SOURCE is sqlite:///path/mlflow.db, postgresql://..., mysql://... (pip install
    'mlvc[mlflow-import]'), a ./mlruns folder, or an http(s):// MLflow server (its token
    from MLFLOW_TRACKING_TOKEN). Importing again adds only runs not imported yet; runs still
    RUNNING in MLflow are imported once they end. `mlvc server` then answers MLflow's API for
    the imported runs by their MLflow run ids.

    \b
    Example:
      mlvc import mlflow sqlite:///mlflow.db
      mlvc import mlflow ./mlruns --experiment fraud-model
      MLFLOW_TRACKING_TOKEN=... mlvc import mlflow https://mlflow.example.com
    """
    from ..core import progress

    progress.enable(not quiet)
    token = os.environ.get("MLFLOW_TRACKING_TOKEN") or None
    report = open_repo().import_mlflow(source, experiments, token)
    emit(report, lambda r: echo(r.summary()))


COMMANDS = (import_,)
