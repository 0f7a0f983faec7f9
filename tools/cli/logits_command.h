// `krasis-cli logits`: runs a model directory on given token ids (the prompt on
// the CPU or CUDA prefill backend) and prints the last position's logits, the argmax at every
// prompt position and an optional greedy continuation -- so anyone can check a
// model (and the tests check the engine) from the command line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/models/model.h"

namespace krasis {

struct LogitsRequest {
  std::string model_dir;
  std::vector<int32_t> tokens;
  int greedy = 0;  // tokens to generate greedily after the prompt
  ExpertFormat experts = ExpertFormat::kBf16;  // routed experts as stored (bf16) or quantized
  // Conversion cache root for quantized experts (built there when missing,
  // mapped when present); empty: quantize in memory.
  std::string cache_dir;
  WeightFormats weights;  // lm_head, dense MLP, shared experts
  DType kv_dtype = DType::kF32;  // what the KV cache stores (F32: the exact reference)
  // Where the prompt is computed: "cpu" or "cuda" (the greedy continuation
  // always decodes on the CPU, as the decode worker does, from the KV the
  // prompt's backend wrote).
  std::string backend = "cpu";
};

struct LogitsResult {
  std::vector<float> last_logits;
  std::vector<int32_t> argmax;  // one per prompt position
  std::vector<int32_t> greedy;
};

absl::StatusOr<LogitsResult> RunLogits(const LogitsRequest& request);

// "1,2,3" -> {1, 2, 3}; errors name the bad item.
absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text);

}  // namespace krasis
