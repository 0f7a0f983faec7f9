// Chunked prefill with per-layer KV output (see prefill_engine.h).
#include "services/prefill/prefill_engine.h"

#include <chrono>

#include "common/logging.h"
#include "common/status.h"

namespace krasis {

PrefixKv PrefillEngine::EmptyPrefix() const {
  PrefixKv p;
  p.rows.resize(static_cast<size_t>(num_layers()));
  SequenceState seq;
  model_->InitSequence(seq);
  p.linear = seq.linear;
  return p;
}

absl::StatusOr<PrefillResult> PrefillEngine::Run(std::span<const int32_t> tokens, const PrefixKv& prefix,
                                                 const KvOutput& out, int64_t chunk_tokens, int64_t align,
                                                 const std::atomic<bool>* cancelled) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return InvalidArgumentError("prefill of an empty prompt");
  if (prefix.num_tokens < 0 || prefix.num_tokens >= n) {
    return InvalidArgumentError("cached prefix of ", prefix.num_tokens, " tokens must be shorter than the ",
                                n, "-token prompt");
  }
  if (align < 1) align = 1;
  chunk_tokens = std::max(align, (backend_->ForwardTokens(chunk_tokens) / align) * align);
  std::lock_guard<std::mutex> lock(run_mu_);
  auto t0 = std::chrono::steady_clock::now();

  const int64_t block_size = 16;
  auto cache = model_->MakeCache((n + block_size - 1) / block_size, block_size, kv_dtype_);
  SequenceState seq;
  model_->InitSequence(seq);
  RETURN_IF_ERROR(seq.Reserve(*cache, n));
  // Seed with the cached prefix.
  if (prefix.num_tokens > 0) {
    if (static_cast<int>(prefix.rows.size()) != num_layers() ||
        static_cast<int>(prefix.linear.size()) != num_layers()) {
      return InvalidArgumentError("cached prefix has ", prefix.rows.size(), " layers, the model ",
                                  num_layers());
    }
    for (int l = 0; l < num_layers(); ++l) {
      if (LayerFloats(l) == 0) {
        if (prefix.linear[l].conv.size() != seq.linear[l].conv.size() ||
            prefix.linear[l].recurrent.size() != seq.linear[l].recurrent.size()) {
          return InvalidArgumentError("cached prefix: linear-attention state of layer ", l, " has the wrong size");
        }
        seq.linear[l] = prefix.linear[l];
        continue;
      }
      if (static_cast<int64_t>(prefix.rows[l].size()) != prefix.num_tokens * LayerFloats(l)) {
        return InvalidArgumentError("cached prefix: layer ", l, " has ", prefix.rows[l].size(),
                                    " floats, expected ", prefix.num_tokens * LayerFloats(l));
      }
      seq.WriteRows(*cache, l, 0, prefix.num_tokens, prefix.rows[l].data());
    }
    seq.num_tokens = prefix.num_tokens;
  }

  RETURN_IF_ERROR(backend_->Begin(seq, *cache, n));
  PrefillResult result;
  std::vector<float> rows;
  for (int64_t first = prefix.num_tokens; first < n;) {
    if (cancelled != nullptr && cancelled->load()) return absl::CancelledError("prefill cancelled");
    const int64_t count = std::min(chunk_tokens, n - first);
    absl::Status sent;
    std::vector<float> logits;
    int layers_out = 0;
    auto on_layer = [&](int layer) {
      ++layers_out;
      if (!sent.ok() || LayerFloats(layer) == 0) return;
      rows.resize(static_cast<size_t>(count * LayerFloats(layer)));
      seq.ReadRows(*cache, layer, first, count, rows.data());
      sent = out.rows(layer, first, count, rows);
    };
    absl::Status s = backend_->Forward(tokens.subspan(static_cast<size_t>(first), static_cast<size_t>(count)), seq,
                                       *cache, first + count == n ? &logits : nullptr, false, on_layer);
    if (s.code() == absl::StatusCode::kResourceExhausted && layers_out == 0 && count > align) {
      // Out of (GPU) memory before any of the chunk's rows went out: the same
      // tokens again in smaller chunks (still whole blocks of `align`).
      chunk_tokens = std::max(align, (count / 2) / align * align);
      ++result.smaller_chunk_retries;
      KLOG_WARN("prefill chunk of {} tokens ran out of memory ({}); retrying with {}", count,
                std::string(s.message()), chunk_tokens);
      continue;
    }
    RETURN_IF_ERROR(s);
    RETURN_IF_ERROR(sent);
    result.computed_tokens += count;
    if (first + count == n) result.last_logits = std::move(logits);
    first += count;
  }
  for (int l = 0; l < num_layers(); ++l) {
    if (LayerFloats(l) == 0) RETURN_IF_ERROR(out.linear(l, seq.linear[l]));
  }
  result.compute_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace krasis
