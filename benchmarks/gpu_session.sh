#!/usr/bin/env bash
# The GPU measurements of the engine's small-model path, in one device budget (about 10 minutes of commands):
#   1. benchmarks/step_overhead.py on the GPU: ms per DANN step of LeNet under each input / read-back / compile
#      variant, ratios against the DataLoader path that reads every step back (the engine before these changes);
#   2. benchmarks/digits_gpu.sh with what step 1 found faster (COMPILE=reduce-overhead unless it lost), the
#      referenced methods only, 3 seeds, as many epochs as the rest of the budget allows (the reference: 110).
#
#   TRANSFERKIT_DATA=... OUT=$OUT BUDGET_S=560 bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-runs/gpu-session}
BUDGET_S=${BUDGET_S:-560}
PY=${PYTHON:-python3}
export PYTHONPATH=${PYTHONPATH:-src}
start=$(date +%s)
mkdir -p "$OUT"
"$PY" benchmarks/step_overhead.py --device cuda --steps 200 --repeats 2 2>&1 | grep -v Warning | tee "$OUT/step_overhead.md"
# the compiled variant's ratio against the eager variant that reads back every 50 steps
COMPILE=$(awk -F'|' '/read-every-50/ {e=$3} /^\| compiled/ {c=$3} END {print (c ~ /[0-9]/ && c + 0 < e + 0) ? "reduce-overhead" : "off"}' \
          "$OUT/step_overhead.md")
left=$(( BUDGET_S - ($(date +%s) - start) ))
echo "compile: $COMPILE; $left s left for the table" | tee -a "$OUT/step_overhead.md"
COMPILE=$COMPILE BUDGET_S=$left OUT=$OUT METHODS=${METHODS:-none,dan,dann,cdan,mdd,mcc} PYTHON=$PY \
    bash benchmarks/digits_gpu.sh
