// Statement parsing: template body, block tags and assignment targets (see parser.h).
#include "common/chat_template/parser.h"

#include <functional>

#include "common/chat_template/parser_internal.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

bool Contains(const std::vector<std::string_view>& v, std::string_view s) {
  for (std::string_view x : v) {
    if (x == s) return true;
  }
  return false;
}

std::string Quoted(const std::vector<std::string_view>& tags) {
  std::string out;
  for (size_t i = 0; i < tags.size(); ++i) {
    if (i > 0) out += (i + 1 == tags.size()) ? " or " : ", ";
    out += StrCat("'", tags[i], "'");
  }
  return out;
}

// Walks expressions and statements, calling `fn` on every expression node.
void VisitExprs(const Expr* e, const std::function<void(const Expr&)>& fn);
void VisitBody(const Body& body, const std::function<void(const Expr&)>& fn);

void VisitExprs(const Expr* e, const std::function<void(const Expr&)>& fn) {
  if (e == nullptr) return;
  fn(*e);
  for (const auto& o : e->operands) VisitExprs(o.get(), fn);
  for (const auto& s : e->slice_parts) VisitExprs(s.get(), fn);
  for (const auto& a : e->args) VisitExprs(a.get(), fn);
  for (const auto& [k, v] : e->kwargs) VisitExprs(v.get(), fn);
  VisitExprs(e->star_args.get(), fn);
  VisitExprs(e->star_kwargs.get(), fn);
}

void VisitBody(const Body& body, const std::function<void(const Expr&)>& fn) {
  for (const auto& s : body) {
    VisitExprs(s->expr.get(), fn);
    VisitExprs(s->filter.get(), fn);
    for (const auto& v : s->values) VisitExprs(v.get(), fn);
    for (const auto& c : s->conditions) VisitExprs(c.get(), fn);
    for (const auto& b : s->bodies) VisitBody(b, fn);
    VisitBody(s->body, fn);
    VisitBody(s->else_body, fn);
    if (s->macro && s->kind == Stmt::Kind::kCallBlock) {
      for (const auto& d : s->macro->defaults) VisitExprs(d.get(), fn);
      VisitBody(s->macro->body, fn);
    }
  }
}

void NoteSpecialNames(MacroDef* m) {
  VisitBody(m->body, [m](const Expr& e) {
    if (e.kind != Expr::Kind::kName) return;
    if (e.name == "caller") m->uses_caller = true;
    if (e.name == "varargs") m->uses_varargs = true;
    if (e.name == "kwargs") m->uses_kwargs = true;
  });
}

StmtPtr MakeStmt(Stmt::Kind kind, Pos pos) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->pos = pos;
  return s;
}

}  // namespace

absl::StatusOr<Body> Parser::ParseTemplate() { return ParseBody({}); }

absl::StatusOr<Body> Parser::ParseBody(const std::vector<std::string_view>& end_tags) {
  Body body;
  while (true) {
    const Token& t = Cur();
    switch (t.type) {
      case TokenType::kData: {
        StmtPtr s = MakeStmt(Stmt::Kind::kOutput, PosOf(t));
        s->text = t.value;
        body.push_back(std::move(s));
        Advance();
        break;
      }
      case TokenType::kVariableBegin: {
        StmtPtr s = MakeStmt(Stmt::Kind::kPrint, PosOf(t));
        Advance();
        ASSIGN_OR_RETURN(s->expr, ParseTuple());
        RETURN_IF_ERROR(ExpectType(TokenType::kVariableEnd, "end of print statement"));
        body.push_back(std::move(s));
        break;
      }
      case TokenType::kBlockBegin: {
        Advance();
        if (Cur().type == TokenType::kName && Contains(end_tags, Cur().value)) return body;
        ASSIGN_OR_RETURN(StmtPtr s, ParseStatement());
        RETURN_IF_ERROR(ExpectType(TokenType::kBlockEnd, "end of statement block"));
        body.push_back(std::move(s));
        break;
      }
      case TokenType::kEof:
        if (!end_tags.empty()) {
          std::string msg = StrCat("unexpected end of template, expected ", Quoted(end_tags));
          if (!open_blocks_.empty()) {
            msg += StrCat(" to close '", open_blocks_.back(), "'");
          }
          return ErrorAt(t, msg);
        }
        return body;
      default:
        return ErrorAt(t, StrCat("unexpected '", DescribeToken(t), "'"));
    }
  }
}

absl::StatusOr<Body> Parser::ParseStatements(const std::vector<std::string_view>& end_tags,
                                             bool drop_needle) {
  SkipOp(":");
  RETURN_IF_ERROR(ExpectType(TokenType::kBlockEnd, "end of statement block"));
  ASSIGN_OR_RETURN(Body body, ParseBody(end_tags));
  if (drop_needle) Advance();
  return body;
}

absl::StatusOr<StmtPtr> Parser::ParseStatement() {
  const Token& t = Cur();
  if (t.type != TokenType::kName) return ErrorAt(t, "tag name expected");
  const std::string tag = t.value;
  open_blocks_.push_back(tag);
  absl::StatusOr<StmtPtr> result;
  if (tag == "if") {
    result = ParseIf();
  } else if (tag == "for") {
    result = ParseFor();
  } else if (tag == "set") {
    result = ParseSet();
  } else if (tag == "macro") {
    result = ParseMacro();
  } else if (tag == "call") {
    result = ParseCallBlock();
  } else if (tag == "filter") {
    result = ParseFilterBlock();
  } else if (tag == "with") {
    result = ParseWith();
  } else if (tag == "print") {
    result = ParsePrintStatement();
  } else if (tag == "break" || tag == "continue") {
    if (loop_depth_ == 0) {
      result = ErrorAt(t, StrCat("'", tag, "' outside of a loop"));
    } else {
      result = MakeStmt(tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, PosOf(t));
      Advance();
    }
  } else if (tag == "generation") {
    StmtPtr s = MakeStmt(Stmt::Kind::kGeneration, PosOf(t));
    Advance();
    auto body = ParseStatements({"endgeneration"}, true);
    if (body.ok()) {
      s->body = std::move(*body);
      result = std::move(s);
    } else {
      result = body.status();
    }
  } else if (tag == "include" || tag == "extends" || tag == "import" || tag == "from" ||
             tag == "block" || tag == "autoescape") {
    result = ErrorAt(t, StrCat("tag '", tag, "' is not supported in chat templates"));
  } else {
    std::string msg = StrCat("unexpected token '", tag, "'");
    open_blocks_.pop_back();
    if (!open_blocks_.empty()) {
      msg += StrCat(" (the innermost open block is '", open_blocks_.back(), "')");
    }
    return ErrorAt(t, msg);
  }
  open_blocks_.pop_back();
  return result;
}

absl::StatusOr<StmtPtr> Parser::ParseIf() {
  StmtPtr s = MakeStmt(Stmt::Kind::kIf, PosOf(Cur()));
  Advance();  // if
  while (true) {
    ASSIGN_OR_RETURN(ExprPtr cond, ParseTuple(false));
    ASSIGN_OR_RETURN(Body body, ParseStatements({"elif", "else", "endif"}, false));
    s->conditions.push_back(std::move(cond));
    s->bodies.push_back(std::move(body));
    const std::string tag = Cur().value;
    Advance();
    if (tag == "elif") continue;
    if (tag == "else") {
      ASSIGN_OR_RETURN(s->else_body, ParseStatements({"endif"}, true));
    }
    return s;
  }
}

absl::StatusOr<StmtPtr> Parser::ParseFor() {
  StmtPtr s = MakeStmt(Stmt::Kind::kFor, PosOf(Cur()));
  Advance();  // for
  ASSIGN_OR_RETURN(s->target, ParseTarget(true, false, {"in"}));
  if (!SkipName("in")) return Unexpected("in");
  ASSIGN_OR_RETURN(s->expr, ParseTuple(false, {"recursive"}));
  if (SkipName("if")) {
    ASSIGN_OR_RETURN(s->filter, ParseExpression());
  }
  s->recursive = SkipName("recursive");
  ++loop_depth_;
  auto body = ParseStatements({"endfor", "else"}, false);
  --loop_depth_;
  if (!body.ok()) return body.status();
  s->body = std::move(*body);
  const std::string tag = Cur().value;
  Advance();
  if (tag == "else") {
    ASSIGN_OR_RETURN(s->else_body, ParseStatements({"endfor"}, true));
  }
  return s;
}

absl::StatusOr<StmtPtr> Parser::ParseSet() {
  const Pos pos = PosOf(Cur());
  Advance();  // set
  ASSIGN_OR_RETURN(Target target, ParseTarget(true, true, {}));
  if (SkipOp("=")) {
    StmtPtr s = MakeStmt(Stmt::Kind::kSet, pos);
    s->target = std::move(target);
    ASSIGN_OR_RETURN(s->expr, ParseTuple());
    return s;
  }
  StmtPtr s = MakeStmt(Stmt::Kind::kSetBlock, pos);
  s->target = std::move(target);
  if (IsOp("|")) {
    ASSIGN_OR_RETURN(s->expr, ParseFilter(nullptr, false));
  }
  ASSIGN_OR_RETURN(s->body, ParseStatements({"endset"}, true));
  return s;
}

absl::Status Parser::ParseSignature(MacroDef* macro) {
  RETURN_IF_ERROR(ExpectOp("("));
  while (!IsOp(")")) {
    if (!macro->params.empty()) RETURN_IF_ERROR(ExpectOp(","));
    const Token name_token = Cur();
    ASSIGN_OR_RETURN(std::string param, ExpectNameToken());
    if (SkipOp("=")) {
      ASSIGN_OR_RETURN(ExprPtr def, ParseExpression());
      macro->defaults.push_back(std::move(def));
    } else if (!macro->defaults.empty()) {
      return ErrorAt(name_token, "non-default argument follows default argument");
    }
    macro->params.push_back(std::move(param));
  }
  return ExpectOp(")");
}

absl::StatusOr<StmtPtr> Parser::ParseMacro() {
  StmtPtr s = MakeStmt(Stmt::Kind::kMacro, PosOf(Cur()));
  Advance();  // macro
  s->macro = std::make_shared<MacroDef>();
  ASSIGN_OR_RETURN(s->macro->name, ExpectNameToken());
  RETURN_IF_ERROR(ParseSignature(s->macro.get()));
  const int saved_depth = loop_depth_;
  loop_depth_ = 0;
  auto body = ParseStatements({"endmacro"}, true);
  loop_depth_ = saved_depth;
  if (!body.ok()) return body.status();
  s->macro->body = std::move(*body);
  NoteSpecialNames(s->macro.get());
  return s;
}

absl::StatusOr<StmtPtr> Parser::ParseCallBlock() {
  StmtPtr s = MakeStmt(Stmt::Kind::kCallBlock, PosOf(Cur()));
  Advance();  // call
  s->macro = std::make_shared<MacroDef>();
  s->macro->name = "caller";
  if (IsOp("(")) RETURN_IF_ERROR(ParseSignature(s->macro.get()));
  const Token call_token = Cur();
  ASSIGN_OR_RETURN(s->expr, ParseExpression());
  if (s->expr->kind != Expr::Kind::kCall) return ErrorAt(call_token, "expected call");
  const int saved_depth = loop_depth_;
  loop_depth_ = 0;
  auto body = ParseStatements({"endcall"}, true);
  loop_depth_ = saved_depth;
  if (!body.ok()) return body.status();
  s->macro->body = std::move(*body);
  NoteSpecialNames(s->macro.get());
  return s;
}

absl::StatusOr<StmtPtr> Parser::ParseFilterBlock() {
  StmtPtr s = MakeStmt(Stmt::Kind::kFilterBlock, PosOf(Cur()));
  Advance();  // filter
  ASSIGN_OR_RETURN(s->expr, ParseFilter(nullptr, true));
  ASSIGN_OR_RETURN(s->body, ParseStatements({"endfilter"}, true));
  return s;
}

absl::StatusOr<StmtPtr> Parser::ParseWith() {
  StmtPtr s = MakeStmt(Stmt::Kind::kWith, PosOf(Cur()));
  Advance();  // with
  while (Cur().type != TokenType::kBlockEnd) {
    if (!s->targets.empty()) RETURN_IF_ERROR(ExpectOp(","));
    ASSIGN_OR_RETURN(Target target, ParseTarget(false, false, {}));
    RETURN_IF_ERROR(ExpectOp("="));
    ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
    s->targets.push_back(std::move(target));
    s->values.push_back(std::move(value));
  }
  ASSIGN_OR_RETURN(s->body, ParseStatements({"endwith"}, true));
  return s;
}

absl::StatusOr<StmtPtr> Parser::ParsePrintStatement() {
  StmtPtr s = MakeStmt(Stmt::Kind::kPrint, PosOf(Cur()));
  Advance();  // print: each comma-separated expression is printed in turn
  while (Cur().type != TokenType::kBlockEnd) {
    if (!s->values.empty()) RETURN_IF_ERROR(ExpectOp(","));
    ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
    s->values.push_back(std::move(value));
  }
  return s;
}

absl::StatusOr<Target> Parser::ParseTargetPrimary() {
  const Token& t = Cur();
  if (t.type == TokenType::kName) {
    Target target;
    target.kind = Target::Kind::kName;
    target.pos = PosOf(t);
    target.name = t.value;
    Advance();
    return target;
  }
  if (IsOp("(")) {
    Advance();
    ASSIGN_OR_RETURN(Target target, ParseTarget(true, false, {}));
    RETURN_IF_ERROR(ExpectOp(")"));
    return target;
  }
  return ErrorAt(t, StrCat("can't assign to '", DescribeToken(t), "'"));
}

absl::StatusOr<Target> Parser::ParseTarget(bool with_tuple, bool with_namespace,
                                           const std::vector<std::string_view>& extra_end) {
  const Token& t = Cur();
  if (with_namespace && t.type == TokenType::kName && Peek().type == TokenType::kOperator &&
      Peek().value == ".") {
    Target target;
    target.kind = Target::Kind::kNamespaceAttr;
    target.pos = PosOf(t);
    target.name = t.value;
    Advance();
    Advance();
    ASSIGN_OR_RETURN(target.attr, ExpectNameToken());
    return target;
  }
  if (!with_tuple) return ParseTargetPrimary();
  Target tuple;
  tuple.kind = Target::Kind::kTuple;
  tuple.pos = PosOf(t);
  bool is_tuple = false;
  while (true) {
    if (!tuple.items.empty()) RETURN_IF_ERROR(ExpectOp(","));
    if (IsTupleEnd(extra_end) || IsOp("=")) break;
    ASSIGN_OR_RETURN(Target item, ParseTargetPrimary());
    tuple.items.push_back(std::move(item));
    if (IsOp(",")) {
      is_tuple = true;
    } else {
      break;
    }
  }
  if (!is_tuple) {
    if (tuple.items.empty()) return ErrorAt(t, "expected an assignment target");
    return std::move(tuple.items[0]);
  }
  return tuple;
}

absl::StatusOr<std::unique_ptr<Program>> ParseProgram(std::string_view source, std::string name) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source, name));
  Parser parser(std::move(tokens), name);
  ASSIGN_OR_RETURN(Body body, parser.ParseTemplate());
  auto program = std::make_unique<Program>();
  program->name = std::move(name);
  program->body = std::move(body);
  return program;
}

}  // namespace krasis::chat_template
