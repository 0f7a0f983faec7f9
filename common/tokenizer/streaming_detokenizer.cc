// Incremental detokenization (see streaming_detokenizer.h).
#include "common/tokenizer/streaming_detokenizer.h"

#include "common/tokenizer/utf8.h"

namespace krasis {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamingDetokenizer::Add(int32_t id) {
  if (!tokenizer_.Decodes(id, skip_special_)) return {};
  tokenizer_.AppendTokenBytes(id, index_++, &pending_);
  std::string out;
  const size_t used = tokenizer::AppendValidUtf8(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out = tokenizer::ToValidUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace krasis
