// Parser of the chat-template interpreter: tokens to the syntax tree (ast.h).
//
// A recursive-descent port of jinja2's parser with its operator precedence
// (condexpr < or < and < not < compare < +,- < ~ < *,/,//,% < ** < unary < filters
// and tests < postfix), its statements (if/elif/else, for/else with inline if and
// recursive, set and block set, macro, call, filter, with, print) plus the
// extensions transformers enables (break/continue, generation). Filters and tests
// are resolved here, so an unknown one fails at Parse time as it does in jinja2.
// Errors read "<name>:<line>:<column>: <message>".
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/chat_template/ast.h"

namespace krasis::chat_template {

absl::StatusOr<std::unique_ptr<Program>> ParseProgram(std::string_view source, std::string name);

}  // namespace krasis::chat_template
