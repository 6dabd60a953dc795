#!/usr/bin/env bash
# The deep-learning autologgers (Lightning, Keras, Hugging Face Trainer) trained for real:
# makes benchmarks/.dl-venv with mlvc[dev] and torch, lightning, keras (JAX backend),
# transformers and accelerate (~6 GiB: torch brings its CUDA libraries), then runs
# tests/models/test_autolog_dl.py, which CI skips (marked heavy: none of these is an mlvc
# dependency). Extra arguments go to pytest. Set PYTHON to choose the interpreter.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$here/.dl-venv"
python="${PYTHON:-python3}"
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"  # keras defaults to tensorflow, not installed here

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$root[dev]" torch lightning keras jax transformers accelerate
"$venv/bin/python" -c 'import torch, lightning, keras, transformers; print("torch", torch.__version__,
"lightning", lightning.__version__, "keras", keras.__version__, "transformers", transformers.__version__)'
cd "$root"
exec "$venv/bin/python" -m pytest -m heavy -p no:randomly tests/models/test_autolog_dl.py "$@"
