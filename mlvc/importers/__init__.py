"""Importers (coming, issue 15): bring another tool's history in as ordinary mlvc runs
(MLflow's sqlite/SQL/file stores and REST servers first), through ``runs.record`` with
explicit inputs, parents and no HEAD move. This layer sits beside reproduce.
"""
