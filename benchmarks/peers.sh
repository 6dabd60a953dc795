#!/usr/bin/env bash
# Install the peer tools the benchmarks compare mlvc with, in a venv of their own:
#   benchmarks/.peers-venv/bin/dvc      (bench_foundation.py; git is the system's `git`)
#   benchmarks/.peers-venv/bin/mlflow   (bench_models.py: `mlflow models serve`, with scikit-learn)
# They are never mlvc dependencies. A failed install is not fatal: the benchmarks then
# report the tool as not installed.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.peers-venv"
python="${PYTHON:-python3}"
status=0

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv" || { echo "peers: could not create $venv" >&2; exit 1; }
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true

if [ -x "$venv/bin/dvc" ] && "$venv/bin/dvc" --version >/dev/null 2>&1; then
    echo "dvc $("$venv/bin/dvc" --version) already in $venv"
elif "$venv/bin/python" -m pip install --quiet dvc; then
    echo "dvc $("$venv/bin/dvc" --version) installed in $venv"
else
    echo "peers: pip install dvc failed; benchmarks will report 'dvc: not installed'" >&2
    status=1
fi

if [ -x "$venv/bin/mlflow" ] && "$venv/bin/python" -c "import mlflow, sklearn" 2>/dev/null; then
    echo "mlflow $("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)') already in $venv"
elif "$venv/bin/python" -m pip install --quiet mlflow scikit-learn; then
    echo "mlflow $("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)') installed in $venv"
else
    echo "peers: pip install mlflow failed; bench_models.py will report 'MLflow not installed'" >&2
    status=1
fi

git --version || echo "peers: git not found; benchmarks will report 'git: not installed'" >&2
exit $status
