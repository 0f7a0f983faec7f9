// Incremental detokenization for streamed generation: feed token ids one at a
// time and get back only text that is complete. A character whose UTF-8 bytes
// span several tokens (byte-level BPE splits emoji and CJK this way) is held
// back until its last byte arrives, so no chunk is ever invalid UTF-8; bytes
// that can never form a character come out as U+FFFD. The concatenation of
// every Add() and the final Flush() equals Tokenizer::Decode() of the ids.
#pragma once

#include <cstdint>
#include <string>

#include "common/tokenizer/tokenizer.h"

namespace krasis {

class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special);

  // Returns the text completed by `id` (possibly empty).
  std::string Add(int32_t id);
  // Returns whatever is held back (an incomplete sequence becomes U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  size_t index_ = 0;     // tokens decoded so far (decoders treat the first specially)
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

}  // namespace krasis
