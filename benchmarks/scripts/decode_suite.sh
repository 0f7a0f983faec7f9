#!/usr/bin/env bash
# decode_suite.sh: #6's decode benchmark in one go on the GPU host's CPU, for
# one device call. Makes each random-weight checkpoint in turn (the host's
# 64 GiB disk does not hold both: Qwen3-Coder-Next dims with 8 layers, then
# DeepSeek-V2-Lite in full), runs decode_bench on it with INT4 and INT8, and
# deletes it; before that, cpu_attention_bench for the MLA and GQA shapes
# (first, on a quiet host: checkpoint making loads every core). Logs go to
# OUT_DIR; each bench's table and batch-1 breakdown are also printed.
#
#   benchmarks/scripts/decode_suite.sh OUT_DIR [BIN_DIR] [SHAPES] [FORMATS]
#     SHAPES  default "qwen3-coder-next deepseek-v2-lite"
#     FORMATS default "int4 int8"
# CKPT_ARGS adds make_random_checkpoint.py arguments (e.g. "--layers 2
# --experts 8" for a quick trial). A warm device machine keeps /tmp between calls, so the checkpoints and
# caches this writes there are removed first and after.
set -euo pipefail
out=$1 bin=${2:-build/bin} shapes=${3:-"qwen3-coder-next deepseek-v2-lite"} formats=${4:-"int4 int8"}
mkdir -p "$out"
work=/tmp/krasis-decode-suite
rm -rf "$work"
trap 'rm -rf "$work"' EXIT
"$bin/cpu_attention_bench" --positions 128,512,4096,16384 --calls 30 | tee "$out/attention_mla.log"
"$bin/cpu_attention_bench" --heads 16 --kv-heads 2 --head-dim 256 --v-dim 256 --separate-v \
  --positions 128,512,4096,16384 --calls 30 | tee "$out/attention_gqa.log"
for shape in $shapes; do
  layers=()
  [[ $shape == qwen3-coder-next ]] && layers=(--layers 8)
  mkdir -p "$work"
  # shellcheck disable=SC2086  # CKPT_ARGS is split on purpose
  python3 tools/make_random_checkpoint.py --shape "$shape" "${layers[@]}" ${CKPT_ARGS:-} --out "$work/model" \
    > "$out/ckpt_$shape.log" 2>&1 || { tail -3 "$out/ckpt_$shape.log"; echo "decode_suite: making the $shape checkpoint failed (log: $out/ckpt_$shape.log)" >&2; exit 1; }
  for fmt in $formats; do
    log="$out/decode_${shape}_$fmt.log"
    "$bin/decode_bench" --model "$work/model" --format "$fmt" --batches 1,4,16 --steps 32 --repeats 3 \
      --cache-dir "$work/cache" > "$log" 2>&1 || { tail -3 "$log"; echo "decode_suite: decode_bench failed on $shape $fmt (log: $log)" >&2; exit 1; }
    echo "== $shape $fmt"
    grep -A4 "^ batch " "$log"
    grep -A16 "batch 1, per step" "$log"
  done
  rm -rf "$work"
done
