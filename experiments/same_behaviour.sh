#!/usr/bin/env bash
# A refactor must not change what a search does: run one small fixed-seed search with the code at
# BASE (a commit) and with the working tree, and compare the run directories.
#
#   bash experiments/same_behaviour.sh 5a3b043        # ~1 minute on 2 CPU cores
#
# Equal means: evaluations.jsonl equal but for `seconds`; hall_of_fame.csv, best_metric.json,
# best_metric.txt and baselines.csv byte-equal; config.json equal but for `created`;
# checkpoint.json equal but for the history's `seconds` and torch_rng_state (the torch stream is
# advanced by model loading, which differs between processes even with the same code).
set -euo pipefail
BASE=${1:?usage: same_behaviour.sh BASE_COMMIT}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared}
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=$(mktemp -d)
trap 'git -C "$REPO" worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$REPO" worktree add -q --detach "$WORK/base" "$BASE"

search() {  # search SOURCE_TREE OUT
  (cd "$1" && PYTHONPATH="$1" "$PY" -m pruner_zero search --model "$SHARED/models/wiki-llama-5m" \
    --data-dir "$SHARED/data/wikitext-2" --calib-split valid --nsamples 8 --seqlen 128 \
    --device cpu --generations 2 --population 6 --fitness-windows 16 --confirm-seeds 2 \
    --confirm-windows 8 --eval-windows 8 --final-top 2 --seed-metrics wanda \
    --baselines magnitude,wanda --seed 1 --cache-dir "$WORK/cache" --quiet --out "$2" \
    >/dev/null 2>"$2.log")
}
search "$WORK/base" "$WORK/before"
search "$REPO" "$WORK/after"

"$PY" - "$WORK/before" "$WORK/after" <<'EOF'
import json, sys
from pathlib import Path
a, b = map(Path, sys.argv[1:3])
def jsonl(p):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in p.read_text().splitlines()]
def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}
checks = {"evaluations.jsonl": jsonl(a / "evaluations.jsonl") == jsonl(b / "evaluations.jsonl")}
for name in ("hall_of_fame.csv", "best_metric.json", "best_metric.txt", "baselines.csv"):
    checks[name] = (a / name).read_bytes() == (b / name).read_bytes()
ca, cb = (json.loads((p / "config.json").read_text()) for p in (a, b))
checks["config.json"] = without(ca, "created") == without(cb, "created")
ka, kb = (json.loads((p / "checkpoint.json").read_text()) for p in (a, b))
strip = lambda h: [without(x, "seconds") for x in h]
checks["checkpoint.json"] = (without(ka, "history", "torch_rng_state")
                             == without(kb, "history", "torch_rng_state")
                             and strip(ka["history"]) == strip(kb["history"]))
for name, same in checks.items():
    print(f"{'same' if same else 'DIFFERENT'}  {name}")
sys.exit(0 if all(checks.values()) else 1)
EOF
