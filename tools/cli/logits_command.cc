// `krasis-cli logits` (see logits_command.h).
#include "tools/cli/logits_command.h"

#include <algorithm>
#include <charconv>

#include "common/models/model.h"
#include "common/models/quantize_experts.h"
#include "common/models/prefill_backend.h"
#include "common/status.h"

namespace krasis {

absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text) {
  std::vector<int32_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    int32_t v = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || v < 0) {
      return InvalidArgumentError("--tokens: '", item, "' is not a token id (expected e.g. 1,2,3)");
    }
    out.push_back(v);
    start = end + 1;
  }
  return out;
}

absl::StatusOr<LogitsResult> RunLogits(const LogitsRequest& request) {
  if (request.tokens.empty()) return InvalidArgumentError("--tokens is empty");
  if (request.greedy < 0) return InvalidArgumentError("--greedy must be >= 0");
  ASSIGN_OR_RETURN(auto model, LoadModel(request.model_dir));
  RETURN_IF_ERROR(QuantizeExperts(*model, request.model_dir, request.experts, 128, request.cache_dir));
  RETURN_IF_ERROR(SetWeightFormats(*model, request.weights));
  const int64_t vocab = model->config().vocab_size;
  const int64_t total = static_cast<int64_t>(request.tokens.size()) + request.greedy;
  const int64_t block_size = 16;
  auto cache = model->MakeCache((total + block_size - 1) / block_size + 1, block_size, request.kv_dtype);
  SequenceState seq;
  model->InitSequence(seq);
  if (request.backend != "cpu" && request.backend != "cuda") {
    return InvalidArgumentError("--backend must be cpu or cuda, not '", request.backend, "'");
  }
  BackendChoice choice;
  choice.name = request.backend;
  ASSIGN_OR_RETURN(auto backend, MakePrefillBackend(*model, choice));
  RETURN_IF_ERROR(backend->Begin(seq, *cache, static_cast<int64_t>(request.tokens.size())));
  std::vector<std::vector<float>> logits(1);
  RETURN_IF_ERROR(backend->Forward(request.tokens, seq, *cache, &logits[0], true, nullptr));
  LogitsResult result;
  auto argmax = [&](const float* v) {
    return static_cast<int32_t>(std::max_element(v, v + vocab) - v);
  };
  for (size_t p = 0; p < request.tokens.size(); ++p) result.argmax.push_back(argmax(&logits[0][p * vocab]));
  result.last_logits.assign(logits[0].end() - vocab, logits[0].end());
  int32_t next = result.argmax.back();
  for (int i = 0; i < request.greedy; ++i) {
    result.greedy.push_back(next);
    if (i + 1 == request.greedy) break;
    BatchItem step{&seq, {next}, false};
    RETURN_IF_ERROR(model->Forward(std::span(&step, 1), *cache, &logits));
    next = argmax(logits[0].data());
  }
  return result;
}

}  // namespace krasis
