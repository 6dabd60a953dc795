#!/usr/bin/env bash
# Install the peer tools the benchmarks compare mlvc with, in a venv of their own:
#   benchmarks/.peers-venv/bin/dvc   (git is the system's `git`)
# They are never mlvc dependencies. A failed install is not fatal: the benchmarks then
# report "dvc: not installed".
set -u
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.peers-venv"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/dvc" ] && "$venv/bin/dvc" --version >/dev/null 2>&1; then
    echo "dvc $("$venv/bin/dvc" --version) already in $venv"
    exit 0
fi
"$python" -m venv "$venv" || { echo "peers: could not create $venv" >&2; exit 1; }
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if "$venv/bin/python" -m pip install --quiet dvc; then
    echo "dvc $("$venv/bin/dvc" --version) installed in $venv"
else
    echo "peers: pip install dvc failed; benchmarks will report 'dvc: not installed'" >&2
    exit 1
fi
git --version || echo "peers: git not found; benchmarks will report 'git: not installed'" >&2
