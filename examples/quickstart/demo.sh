#!/usr/bin/env bash
# The main job of mlvc on a real (tiny) project: train twice with different params, commit
# both runs, diff them, query them in SQL, check the first run out and prove its bytes match.
# Usage: bash examples/quickstart/demo.sh [WORKDIR]   (sets up .venv on first use)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
if [ ! -x "$top/.venv/bin/mlvc" ]; then
  echo "== setting up $top/.venv (first run only)"
  python3 -m venv "$top/.venv"
  "$top/.venv/bin/pip" install -q -e "$top" numpy
fi
export PATH="$top/.venv/bin:$PATH"
work="${1:-$(mktemp -d)/quickstart}"
mkdir -p "$work"
cp "$here"/train.py "$here"/make_data.py "$here"/params.json "$here"/mlvc.toml "$work"/
cd "$work"
step() {  # echo the command as one would type it, then run it
  local shown="" a
  for a in "$@"; do
    if [[ "$a" =~ [[:space:]\",] ]]; then shown+=" '$a'"; else shown+=" $a"; fi
  done
  printf '\n\033[1m$%s\033[0m\n' "$shown"
  "$@"
}

python make_data.py
step mlvc init
step python train.py
step mlvc commit -m "baseline: lr 0.1, 50 epochs" -n baseline
python - <<'PY'
import json; p = json.load(open("params.json")); p.update(lr=0.5, epochs=200)
json.dump(p, open("params.json", "w"))
PY
step python train.py
step mlvc commit -m "higher lr, more epochs" -n longer -t candidate
step mlvc log
step mlvc diff baseline longer
step mlvc query 'SELECT name, "params.lr", "params.epochs", "metrics.accuracy", "metrics.loss" FROM runs_wide ORDER BY "metrics.loss"'
replay="$work.replay"
rm -rf "$replay"
step mlvc checkout baseline --to "$replay"
echo
echo "== every checked-out file has the BLAKE3 id the baseline run recorded:"
python - "$replay" <<'PY'
import json, subprocess, sys
from pathlib import Path
import blake3
run = json.loads(subprocess.check_output(["mlvc", "show", "baseline", "--json"]))
bad = 0
for section in ("code", "data", "artifacts"):
    for e in run[section]["entries"]:
        got = blake3.blake3((Path(sys.argv[1]) / e["path"]).read_bytes()).hexdigest()
        ok = got == e["id"]
        bad += not ok
        print(f"  {'ok ' if ok else 'BAD'} {got[:16]}  {section:9} {e['path']}")
sys.exit(1 if bad else 0)
PY
step mlvc fsck
echo
echo "Done. The project is in $work (try: cd $work && mlvc show baseline)"
