// The Parser class shared by parser.cc (statements) and parser_expr.cc
// (expressions). Internal to the chat-template library.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/chat_template/ast.h"
#include "common/chat_template/lexer.h"

namespace krasis::chat_template {

class Parser {
 public:
  Parser(std::vector<Token> tokens, std::string name)
      : tokens_(std::move(tokens)), name_(std::move(name)) {}

  absl::StatusOr<Body> ParseTemplate();

 private:
  // Token stream.
  const Token& Cur() const { return tokens_[pos_]; }
  const Token& Peek(size_t n = 1) const {
    return tokens_[std::min(pos_ + n, tokens_.size() - 1)];
  }
  void Advance() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(std::string_view op) const {
    return Cur().type == TokenType::kOperator && Cur().value == op;
  }
  bool IsName(std::string_view name) const {
    return Cur().type == TokenType::kName && Cur().value == name;
  }
  bool SkipOp(std::string_view op);
  bool SkipName(std::string_view name);
  absl::Status ExpectOp(std::string_view op);
  absl::Status ExpectType(TokenType type, std::string_view what);
  absl::StatusOr<std::string> ExpectNameToken();
  absl::Status ErrorAt(const Token& t, std::string_view message) const;
  absl::Status Unexpected(std::string_view expected) const;
  Pos PosOf(const Token& t) const { return Pos{t.line, t.column}; }

  // Statements (parser.cc).
  absl::StatusOr<Body> ParseBody(const std::vector<std::string_view>& end_tags);
  absl::StatusOr<Body> ParseStatements(const std::vector<std::string_view>& end_tags,
                                       bool drop_needle);
  absl::StatusOr<StmtPtr> ParseStatement();
  absl::StatusOr<StmtPtr> ParseIf();
  absl::StatusOr<StmtPtr> ParseFor();
  absl::StatusOr<StmtPtr> ParseSet();
  absl::StatusOr<StmtPtr> ParseMacro();
  absl::StatusOr<StmtPtr> ParseCallBlock();
  absl::StatusOr<StmtPtr> ParseFilterBlock();
  absl::StatusOr<StmtPtr> ParseWith();
  absl::StatusOr<StmtPtr> ParsePrintStatement();
  absl::Status ParseSignature(MacroDef* macro);
  absl::StatusOr<Target> ParseTarget(bool with_tuple, bool with_namespace,
                                     const std::vector<std::string_view>& extra_end);
  absl::StatusOr<Target> ParseTargetPrimary();

  // Expressions (parser_expr.cc).
 public:
  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr = true);
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr = true,
                                     const std::vector<std::string_view>& extra_end = {},
                                     bool explicit_parentheses = false);
  absl::StatusOr<ExprPtr> ParseFilter(ExprPtr node, bool start_inline);

 private:
  bool IsTupleEnd(const std::vector<std::string_view>& extra_end) const;
  absl::StatusOr<ExprPtr> ParseCondExpr();
  absl::StatusOr<ExprPtr> ParseOr();
  absl::StatusOr<ExprPtr> ParseAnd();
  absl::StatusOr<ExprPtr> ParseNot();
  absl::StatusOr<ExprPtr> ParseCompare();
  absl::StatusOr<ExprPtr> ParseMath1();
  absl::StatusOr<ExprPtr> ParseConcat();
  absl::StatusOr<ExprPtr> ParseMath2();
  absl::StatusOr<ExprPtr> ParsePow();
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter);
  absl::StatusOr<ExprPtr> ParsePrimary();
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseSubscribed();
  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node);
  absl::StatusOr<ExprPtr> ParseCall(ExprPtr node);
  absl::Status ParseCallArgs(Expr* call);
  absl::StatusOr<ExprPtr> ParseList();
  absl::StatusOr<ExprPtr> ParseDict();

  std::vector<Token> tokens_;
  std::string name_;
  size_t pos_ = 0;
  int loop_depth_ = 0;
  std::vector<std::string> open_blocks_;  // for error messages
};

ExprPtr MakeExpr(Expr::Kind kind, Pos pos);

}  // namespace krasis::chat_template
