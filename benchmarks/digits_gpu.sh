#!/usr/bin/env bash
# benchmarks/digits.py on a one-GPU machine with a fixed time budget: time one epoch of each method with
# every slot busy, then give every run of the full table the number of epochs that fits the budget.
#
#   BUDGET_S=480 JOBS=14 OUT=/tmp/out bash benchmarks/digits_gpu.sh
#
# Needs TRANSFERKIT_DATA (mnist/, usps/) and python with transferkit importable (PYTHONPATH=src).
# Results: $OUT/digits.jsonl (one line per finished run) and $OUT/digits.md (the log and the table).
set -u
BUDGET_S=${BUDGET_S:-480}
JOBS=${JOBS:-14}
MAX_EPOCHS=${MAX_EPOCHS:-110}   # the reference recipe: 50,000 steps of batch 128, about 110 epochs here
OUT=${OUT:-runs/digits-gpu}
METHODS=${METHODS:-none,dan,dann,cdan,mdd,mcc,cdan+e,bnm,jan,coral,afn,entropy,self-training}
RECIPE=(--optimizer sgd --lr mnist-usps=0.01,usps-mnist=0.1 --weight-decay 1e-3 --batch-size 128
        --bottleneck-dim 256 --jobs "$JOBS" --output-dir /tmp/digits-runs ${EXTRA:-})
PY=${PYTHON:-python3}
start=$(date +%s)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/digits.md"

# 1. calibration: one epoch of usps-mnist (the longer epoch) per method, JOBS runs at a time
"$PY" benchmarks/digits.py "${RECIPE[@]}" --tasks usps-mnist --methods "$METHODS" --seeds 100 --epochs 1 \
    --results-jsonl "$OUT/calibration.jsonl" >>"$OUT/digits.md" 2>&1
elapsed=$(( $(date +%s) - start ))
EPOCHS=$("$PY" - "$OUT/calibration.jsonl" "$BUDGET_S" "$elapsed" "$JOBS" "$METHODS" "$MAX_EPOCHS" <<'EOF'
import json, math, sys
path, budget, elapsed, jobs, methods, cap = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5], int(sys.argv[6])
rows = [json.loads(line) for line in open(path)]
epoch = sum(r["epoch_s"] for r in rows) / len(rows)            # seconds per epoch with every slot busy
fixed = max(r["seconds"] - r["epoch_s"] for r in rows)          # start-up, data, final scoring
runs = 2 * len(methods.split(",")) * 3
rounds = math.ceil(runs / jobs)
left = budget - elapsed - 30
print(max(1, min(cap, int((left / rounds - fixed) / epoch))))
print(f"calibration: {epoch:.2f} s/epoch, {fixed:.0f} s fixed per run, {rounds} rounds, {left} s left",
      file=sys.stderr)
EOF
)
echo "epochs per run: $EPOCHS" | tee -a "$OUT/digits.md"

# 2. the table: 2 tasks x methods x 3 seeds, each finished run appended to digits.jsonl at once
"$PY" benchmarks/digits.py "${RECIPE[@]}" --methods "$METHODS" --seeds 0,1,2 --epochs "$EPOCHS" \
    --results-jsonl "$OUT/digits.jsonl" >>"$OUT/digits.md" 2>&1
echo "total $(( $(date +%s) - start )) s" | tee -a "$OUT/digits.md"
