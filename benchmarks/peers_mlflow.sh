#!/usr/bin/env bash
# Install MLflow, the peer that bench_tracking.py compares mlvc's tracking with, in a venv of
# its own: benchmarks/.mlflow-venv (gitignored). It is never an mlvc dependency. A failed
# install is not fatal: the benchmark then reports "mlflow: not installed".
# Full `mlflow` rather than `mlflow-skinny`: the SQLite tracking store needs SQLAlchemy and
# alembic, which only the full package brings.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.mlflow-venv"
python="${PYTHON:-python3}"
check='import mlflow, sqlalchemy, alembic; print(mlflow.__version__)'

if [ -x "$venv/bin/python" ] && v="$("$venv/bin/python" -c "$check" 2>/dev/null)"; then
    echo "mlflow $v already in $venv"
    exit 0
fi
"$python" -m venv "$venv" || { echo "peers_mlflow: could not create $venv" >&2; exit 1; }
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if "$venv/bin/python" -m pip install --quiet mlflow \
    && v="$("$venv/bin/python" -c "$check")"; then
    echo "mlflow $v installed in $venv"
else
    echo "peers_mlflow: pip install mlflow failed; benchmarks will report 'mlflow: not installed'" >&2
    exit 1
fi
