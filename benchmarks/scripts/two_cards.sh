#!/usr/bin/env bash
# two_cards.sh: one card against two (NCCL, routed experts split) on the same
# model and per-card VRAM budget -- everything resident, then a budget of
# FRACTION (default 1/3) of the model's BF16 routed-expert bytes with BF16, INT8
# and INT4 experts. Each block of output is prefill_bench's.
#
#   benchmarks/scripts/two_cards.sh MODEL_DIR CACHE_DIR [TOKENS] [FRACTION] [BIN_DIR] [FORMATS]
set -euo pipefail
model=$1 cache=$2 tokens=${3:-4096,16384} fraction=${4:-0.333} bin=${5:-build/bin} formats=${6:-bf16 int8 int4}
run() { echo "== $*"; "$bin/prefill_bench" --model "$model" --tokens "$tokens" "$@"; echo; }
for fmt in $formats; do
  for devices in 0 0,1; do
    run --experts "$fmt" --cache-dir "$cache" --budget-expert-fraction "$fraction" --devices "$devices"
  done
done
