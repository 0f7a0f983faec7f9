// UTF-8 encoding shared by the tokenizer and the chat-template engine.
#pragma once

#include <string>

namespace krasis {

// Appends code point `cp` to `out` as UTF-8 (1 to 4 bytes).
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace krasis
