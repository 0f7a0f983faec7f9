// Lexer of the chat-template interpreter: template source to tokens.
//
// Follows jinja2's lexer as transformers configures it (trim_blocks=True,
// lstrip_blocks=True, keep_trailing_newline=False): newlines are normalised to
// "\n" and one trailing newline is dropped; text between tags becomes data tokens
// after whitespace control ({%- -%} {{- -}} {#- -#}, "+" to keep) and the trim /
// lstrip rules; comments vanish; {% raw %} bodies become data; inside tags come
// names, strings (Python escapes decoded), integers, floats and operators. Every
// token records its line and column (1-based, in code points) for error messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace krasis::chat_template {

enum class TokenType {
  kData, kVariableBegin, kVariableEnd, kBlockBegin, kBlockEnd, kName, kString,
  kInteger, kFloat, kOperator, kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string value;  // data text, name, decoded string, operator
  int64_t int_value = 0;
  double float_value = 0;
  int line = 0;
  int column = 0;
};

// "block end" style description of a token for error messages.
std::string DescribeToken(const Token& token);

// Tokenizes `source`; errors read "<name>:<line>:<column>: <message>".
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, const std::string& name);

}  // namespace krasis::chat_template
