#!/usr/bin/env bash
# worker_pss.sh: resident memory of the two workers of one host serving one
# model. Starts krasis-decode (every quantizable weight in FORMAT, routed experts
# mapped from the conversion cache) and krasis-prefill on MODEL (backend
# $PREFILL_BACKEND, default cpu; routed experts $PREFILL_EXPERTS, default bf16
# -- FORMAT makes it map the same cache files as the decode worker), waits
# until both listen (the CUDA backend has uploaded its weights by then), and
# prints each one's PSS and RSS (from /proc/PID/smaps_rollup), their sum, and
# the sizes of the checkpoint and of the cache files, in MB.
#
#   [PREFILL_BACKEND=cuda] [PREFILL_EXPERTS=int4] \
#     benchmarks/scripts/worker_pss.sh MODEL_DIR int4|int8 CACHE_DIR [BIN_DIR]
set -euo pipefail
model=$1 fmt=$2 cache=$3 bin=${4:-build/bin}
tmp=$(mktemp -d)
cleanup() { kill "${dpid:-}" "${ppid_:-}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"$bin/krasis-decode" --model "$model" --experts "$fmt" --attention "$fmt" --lm-head "$fmt" --dense-mlp "$fmt" \
  --shared-experts "$fmt" --cache-dir "$cache" --ready-file "$tmp/decode.json" --log-level warn &
dpid=$!
pbackend=${PREFILL_BACKEND:-cpu} pexperts=${PREFILL_EXPERTS:-bf16}
"$bin/krasis-prefill" --model "$model" --backend "$pbackend" --experts "$pexperts" --cache-dir "$cache" \
  --ready-file "$tmp/prefill.json" --log-level info &
ppid_=$!
for _ in $(seq 1800); do
  [[ -f $tmp/decode.json && -f $tmp/prefill.json ]] && break
  kill -0 "$dpid" && kill -0 "$ppid_" || { echo "worker_pss: a worker exited before listening" >&2; exit 1; }
  sleep 1
done
field() { awk -v f="$2:" '$1 == f {print int($2 / 1024)}' "/proc/$1/smaps_rollup"; }
dpss=$(field "$dpid" Pss) drss=$(field "$dpid" Rss) ppss=$(field "$ppid_" Pss) prss=$(field "$ppid_" Rss)
model_mb=$(du -sm --apparent-size "$model" | cut -f1)
cache_mb=$(du -sm --apparent-size "$cache" | cut -f1)
printf '%-22s %10s %10s\n' "" "PSS MB" "RSS MB"
printf '%-22s %10d %10d\n' "decode worker ($fmt)" "$dpss" "$drss" "prefill ($pbackend, $pexperts)" "$ppss" "$prss"
printf '%-22s %10d\n' "both" $((dpss + ppss))
printf 'checkpoint (BF16) %d MB; conversion cache %d MB\n' "$model_mb" "$cache_mb"
