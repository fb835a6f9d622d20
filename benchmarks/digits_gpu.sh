#!/usr/bin/env bash
# benchmarks/digits.py on a one-GPU machine with a fixed time budget: time CAL_EPOCHS epochs of each method with
# every slot busy, then give every run of the full table the number of epochs that fits the budget.
#
#   BUDGET_S=480 JOBS=14 OUT=/tmp/out bash benchmarks/digits_gpu.sh
#   COMPILE=reduce-overhead METHODS=none,dan,dann,cdan,mdd,mcc BUDGET_S=480 bash benchmarks/digits_gpu.sh
#
# COMPILE=reduce-overhead captures each run's model step in CUDA graphs (train.compile); the calibration then runs
# CAL_EPOCHS=2 epochs and times the second (the first holds the compilation, counted with the fixed cost).
# Every run feeds its batches from the GPU's memory and reads its numbers back every 50 steps (the engine's GPU
# defaults). The table reaches the reference length when calibration finds MAX_EPOCHS fits the budget.
#
# Needs TRANSFERKIT_DATA (mnist/, usps/) and python with transferkit importable (PYTHONPATH=src).
# Results: $OUT/digits.jsonl (one line per finished run) and $OUT/digits.md (the log and the table).
set -u
BUDGET_S=${BUDGET_S:-480}
JOBS=${JOBS:-14}
MAX_EPOCHS=${MAX_EPOCHS:-110}   # the reference recipe: 50,000 steps of batch 128, about 110 epochs here
OUT=${OUT:-runs/digits-gpu}
METHODS=${METHODS:-none,dan,dann,cdan,mdd,mcc,cdan+e,bnm,jan,coral,afn,entropy,self-training}
COMPILE=${COMPILE:-off}
CAL_EPOCHS=${CAL_EPOCHS:-$([ "$COMPILE" = off ] && echo 1 || echo 2)}
RECIPE=(--optimizer sgd --lr mnist-usps=0.01,usps-mnist=0.1 --weight-decay 1e-3 --batch-size 128
        --bottleneck-dim 256 --jobs "$JOBS" --output-dir /tmp/digits-runs --compile "$COMPILE" ${EXTRA:-})
PY=${PYTHON:-python3}
start=$(date +%s)
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/digits.md"

# 1. calibration: CAL_EPOCHS epochs of usps-mnist (the longer epoch) per method, JOBS runs at a time
"$PY" benchmarks/digits.py "${RECIPE[@]}" --tasks usps-mnist --methods "$METHODS" --seeds 100 --epochs "$CAL_EPOCHS" \
    --results-jsonl "$OUT/calibration.jsonl" >>"$OUT/digits.md" 2>&1
elapsed=$(( $(date +%s) - start ))
EPOCHS=$("$PY" - "$OUT/calibration.jsonl" "$BUDGET_S" "$elapsed" "$JOBS" "$METHODS" "$MAX_EPOCHS" "$CAL_EPOCHS" <<'EOF'
import json, math, sys
path, budget, elapsed, jobs, methods, cap = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5], int(sys.argv[6])
cal_epochs = int(sys.argv[7])
rows = [json.loads(line) for line in open(path)]
epoch = sum(r["epoch_s"] for r in rows) / len(rows)            # seconds per epoch with every slot busy
# start-up, data, compilation (the first epoch's excess), final scoring: a run of N epochs takes fixed + N * epoch
fixed = max(r["seconds"] - cal_epochs * r["epoch_s"] for r in rows)
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
