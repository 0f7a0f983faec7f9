#!/usr/bin/env bash
# prefill_matrix.sh: the GPU prefill benchmark matrix of one model directory --
# everything resident, then a VRAM budget of FRACTION (default 1/3) of the
# model's BF16 routed-expert bytes with BF16, INT8 and INT4 experts (the INT
# ones from the conversion cache under CACHE_DIR, built on first use) and both
# ways of pinning what streams. Each line of output is prefill_bench's.
#
#   benchmarks/scripts/prefill_matrix.sh MODEL_DIR CACHE_DIR [TOKENS] [FRACTION] [BIN_DIR]
set -euo pipefail
model=$1 cache=$2 tokens=${3:-512,4096,16384} fraction=${4:-0.333} bin=${5:-build/bin}
run() { echo "== $*"; "$bin/prefill_bench" --model "$model" --tokens "$tokens" "$@"; echo; }
run --experts bf16
run --experts bf16 --budget-expert-fraction "$fraction" --pinning register
run --experts bf16 --budget-expert-fraction "$fraction" --pinning ring
for fmt in int8 int4; do
  run --experts "$fmt" --cache-dir "$cache" --budget-expert-fraction "$fraction" --pinning register
done
run --experts int4 --cache-dir "$cache"
