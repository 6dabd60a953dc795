"""Importers: bring another tool's history in as ordinary mlvc runs, through
``runs.record`` with explicit inputs, no parents and no HEAD move. ``importers.mlflow``
reads MLflow's SQL stores, ``./mlruns`` file stores and REST servers (issue 15). This layer
sits beside reproduce.
"""
