// Expression parsing: jinja2's precedence ladder, literals, postfix access, calls,
// filters and tests (see parser.h).
#include "common/chat_template/builtins.h"
#include "common/chat_template/parser_internal.h"
#include "common/status.h"

namespace krasis::chat_template {

ExprPtr MakeExpr(Expr::Kind kind, Pos pos) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->pos = pos;
  return e;
}

bool Parser::SkipOp(std::string_view op) {
  if (!IsOp(op)) return false;
  Advance();
  return true;
}

bool Parser::SkipName(std::string_view name) {
  if (!IsName(name)) return false;
  Advance();
  return true;
}

absl::Status Parser::ErrorAt(const Token& t, std::string_view message) const {
  return InvalidArgumentError(name_, ":", t.line, ":", t.column, ": ", message);
}

absl::Status Parser::Unexpected(std::string_view expected) const {
  if (Cur().type == TokenType::kEof) {
    std::string msg = StrCat("unexpected end of template, expected '", expected, "'");
    if (!open_blocks_.empty()) {
      msg += StrCat(" (the innermost open block is '", open_blocks_.back(), "')");
    }
    return ErrorAt(Cur(), msg);
  }
  return ErrorAt(Cur(), StrCat("expected '", expected, "', got '", DescribeToken(Cur()), "'"));
}

absl::Status Parser::ExpectOp(std::string_view op) {
  if (SkipOp(op)) return absl::OkStatus();
  return Unexpected(op);
}

absl::Status Parser::ExpectType(TokenType type, std::string_view what) {
  if (Cur().type != type) return Unexpected(what);
  Advance();
  return absl::OkStatus();
}

absl::StatusOr<std::string> Parser::ExpectNameToken() {
  if (Cur().type != TokenType::kName) return Unexpected("name");
  std::string v = Cur().value;
  Advance();
  return v;
}

bool Parser::IsTupleEnd(const std::vector<std::string_view>& extra_end) const {
  if (Cur().type == TokenType::kVariableEnd || Cur().type == TokenType::kBlockEnd ||
      IsOp(")")) {
    return true;
  }
  for (std::string_view n : extra_end) {
    if (IsName(n)) return true;
  }
  return false;
}

absl::StatusOr<ExprPtr> Parser::ParseExpression(bool with_condexpr) {
  if (with_condexpr) return ParseCondExpr();
  return ParseOr();
}

absl::StatusOr<ExprPtr> Parser::ParseTuple(bool with_condexpr,
                                           const std::vector<std::string_view>& extra_end,
                                           bool explicit_parentheses) {
  const Pos pos = PosOf(Cur());
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) RETURN_IF_ERROR(ExpectOp(","));
    if (IsTupleEnd(extra_end)) break;
    ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(with_condexpr));
    items.push_back(std::move(item));
    if (IsOp(",")) {
      is_tuple = true;
    } else {
      break;
    }
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parentheses) {
      return ErrorAt(Cur(), StrCat("expected an expression, got '", DescribeToken(Cur()), "'"));
    }
  }
  ExprPtr t = MakeExpr(Expr::Kind::kTuple, pos);
  t->operands = std::move(items);
  return t;
}

absl::StatusOr<ExprPtr> Parser::ParseCondExpr() {
  ASSIGN_OR_RETURN(ExprPtr expr1, ParseOr());
  while (IsName("if")) {
    const Pos pos = PosOf(Cur());
    Advance();
    ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
    ExprPtr node = MakeExpr(Expr::Kind::kCondExpr, pos);
    node->operands.push_back(std::move(expr1));
    node->operands.push_back(std::move(cond));
    if (SkipName("else")) {
      ASSIGN_OR_RETURN(ExprPtr expr3, ParseCondExpr());
      node->operands.push_back(std::move(expr3));
    }
    expr1 = std::move(node);
  }
  return expr1;
}

namespace {

ExprPtr Binary(std::string op, Pos pos, ExprPtr a, ExprPtr b) {
  ExprPtr node = MakeExpr(Expr::Kind::kBinary, pos);
  node->name = std::move(op);
  node->operands.push_back(std::move(a));
  node->operands.push_back(std::move(b));
  return node;
}

}  // namespace

absl::StatusOr<ExprPtr> Parser::ParseOr() {
  ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
  while (IsName("or")) {
    const Pos pos = PosOf(Cur());
    Advance();
    ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
    left = Binary("or", pos, std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseAnd() {
  ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
  while (IsName("and")) {
    const Pos pos = PosOf(Cur());
    Advance();
    ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
    left = Binary("and", pos, std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseNot() {
  if (IsName("not")) {
    const Pos pos = PosOf(Cur());
    Advance();
    ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
    ExprPtr node = MakeExpr(Expr::Kind::kUnary, pos);
    node->name = "not";
    node->operands.push_back(std::move(operand));
    return node;
  }
  return ParseCompare();
}

absl::StatusOr<ExprPtr> Parser::ParseCompare() {
  const Pos pos = PosOf(Cur());
  ASSIGN_OR_RETURN(ExprPtr expr, ParseMath1());
  ExprPtr node;
  while (true) {
    std::string op;
    if (Cur().type == TokenType::kOperator &&
        (Cur().value == "==" || Cur().value == "!=" || Cur().value == "<" ||
         Cur().value == "<=" || Cur().value == ">" || Cur().value == ">=")) {
      op = Cur().value;
      Advance();
    } else if (IsName("in")) {
      op = "in";
      Advance();
    } else if (IsName("not") && Peek().type == TokenType::kName && Peek().value == "in") {
      op = "notin";
      Advance();
      Advance();
    } else {
      break;
    }
    if (node == nullptr) {
      node = MakeExpr(Expr::Kind::kCompare, pos);
      node->operands.push_back(std::move(expr));
    }
    ASSIGN_OR_RETURN(ExprPtr rhs, ParseMath1());
    node->compare_ops.push_back(op);
    node->operands.push_back(std::move(rhs));
  }
  if (node == nullptr) return expr;
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParseMath1() {
  ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
  while (IsOp("+") || IsOp("-")) {
    const Pos pos = PosOf(Cur());
    std::string op = Cur().value;
    Advance();
    ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
    left = Binary(op, pos, std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseConcat() {
  ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
  while (IsOp("~")) {
    const Pos pos = PosOf(Cur());
    Advance();
    ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
    left = Binary("~", pos, std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseMath2() {
  ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
  while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
    const Pos pos = PosOf(Cur());
    std::string op = Cur().value;
    Advance();
    ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
    left = Binary(op, pos, std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParsePow() {
  ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
  while (IsOp("**")) {  // left-associative in jinja2
    const Pos pos = PosOf(Cur());
    Advance();
    ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
    left = Binary("**", pos, std::move(left), std::move(right));
  }
  return left;
}

absl::StatusOr<ExprPtr> Parser::ParseUnary(bool with_filter) {
  ExprPtr node;
  if (IsOp("-") || IsOp("+")) {
    const Pos pos = PosOf(Cur());
    std::string op = Cur().value;
    Advance();
    ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
    node = MakeExpr(Expr::Kind::kUnary, pos);
    node->name = op;
    node->operands.push_back(std::move(operand));
  } else {
    ASSIGN_OR_RETURN(node, ParsePrimary());
  }
  ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
  if (with_filter) {
    ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
  }
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParsePrimary() {
  const Token& t = Cur();
  const Pos pos = PosOf(t);
  ExprPtr node;
  switch (t.type) {
    case TokenType::kName:
      node = MakeExpr(Expr::Kind::kConst, pos);
      if (t.value == "true" || t.value == "True") {
        node->value = Value::Bool(true);
      } else if (t.value == "false" || t.value == "False") {
        node->value = Value::Bool(false);
      } else if (t.value == "none" || t.value == "None") {
        node->value = Value::None();
      } else {
        node->kind = Expr::Kind::kName;
        node->name = t.value;
      }
      Advance();
      return node;
    case TokenType::kString: {
      std::string s;
      while (Cur().type == TokenType::kString) {  // adjacent literals concatenate
        s += Cur().value;
        Advance();
      }
      node = MakeExpr(Expr::Kind::kConst, pos);
      node->value = Value::String(std::move(s));
      return node;
    }
    case TokenType::kInteger:
      node = MakeExpr(Expr::Kind::kConst, pos);
      node->value = Value::Int(t.int_value);
      Advance();
      return node;
    case TokenType::kFloat:
      node = MakeExpr(Expr::Kind::kConst, pos);
      node->value = Value::Float(t.float_value);
      Advance();
      return node;
    default:
      break;
  }
  if (IsOp("(")) {
    Advance();
    ASSIGN_OR_RETURN(node, ParseTuple(true, {}, true));
    RETURN_IF_ERROR(ExpectOp(")"));
    return node;
  }
  if (IsOp("[")) return ParseList();
  if (IsOp("{")) return ParseDict();
  if (t.type == TokenType::kEof) return Unexpected("expression");
  return ErrorAt(t, StrCat("unexpected '", DescribeToken(t), "'"));
}

absl::StatusOr<ExprPtr> Parser::ParseList() {
  ExprPtr node = MakeExpr(Expr::Kind::kList, PosOf(Cur()));
  Advance();  // [
  while (!IsOp("]")) {
    if (!node->operands.empty()) RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp("]")) break;
    ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
    node->operands.push_back(std::move(item));
  }
  RETURN_IF_ERROR(ExpectOp("]"));
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParseDict() {
  ExprPtr node = MakeExpr(Expr::Kind::kDict, PosOf(Cur()));
  Advance();  // {
  while (!IsOp("}")) {
    if (!node->operands.empty()) RETURN_IF_ERROR(ExpectOp(","));
    if (IsOp("}")) break;
    ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
    RETURN_IF_ERROR(ExpectOp(":"));
    ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
    node->operands.push_back(std::move(key));
    node->operands.push_back(std::move(value));
  }
  RETURN_IF_ERROR(ExpectOp("}"));
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParsePostfix(ExprPtr node) {
  while (true) {
    if (IsOp(".") || IsOp("[")) {
      ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
    } else if (IsOp("(")) {
      ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
    } else {
      return node;
    }
  }
}

absl::StatusOr<ExprPtr> Parser::ParseFilterExpr(ExprPtr node) {
  while (true) {
    if (IsOp("|")) {
      ASSIGN_OR_RETURN(node, ParseFilter(std::move(node), false));
    } else if (IsName("is")) {
      ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
    } else if (IsOp("(")) {
      ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
    } else {
      return node;
    }
  }
}

absl::StatusOr<ExprPtr> Parser::ParseSubscript(ExprPtr node) {
  const Token& t = Cur();
  const Pos pos = PosOf(t);
  if (IsOp(".")) {
    Advance();
    const Token& attr = Cur();
    if (attr.type == TokenType::kName) {
      ExprPtr g = MakeExpr(Expr::Kind::kGetAttr, pos);
      g->name = attr.value;
      g->operands.push_back(std::move(node));
      Advance();
      return g;
    }
    if (attr.type != TokenType::kInteger) return ErrorAt(attr, "expected name or number");
    ExprPtr g = MakeExpr(Expr::Kind::kGetItem, pos);
    ExprPtr key = MakeExpr(Expr::Kind::kConst, PosOf(attr));
    key->value = Value::Int(attr.int_value);
    g->operands.push_back(std::move(node));
    g->operands.push_back(std::move(key));
    Advance();
    return g;
  }
  Advance();  // [
  std::vector<ExprPtr> args;
  while (!IsOp("]")) {
    if (!args.empty()) RETURN_IF_ERROR(ExpectOp(","));
    ASSIGN_OR_RETURN(ExprPtr arg, ParseSubscribed());
    args.push_back(std::move(arg));
  }
  RETURN_IF_ERROR(ExpectOp("]"));
  if (args.empty()) return ErrorAt(t, "expected subscript expression");
  if (args.size() == 1 && args[0]->kind == Expr::Kind::kSlice) {
    args[0]->operands.insert(args[0]->operands.begin(), std::move(node));
    return std::move(args[0]);
  }
  ExprPtr g = MakeExpr(Expr::Kind::kGetItem, pos);
  g->operands.push_back(std::move(node));
  if (args.size() == 1) {
    g->operands.push_back(std::move(args[0]));
  } else {
    ExprPtr tuple = MakeExpr(Expr::Kind::kTuple, pos);
    for (auto& a : args) {
      if (a->kind == Expr::Kind::kSlice) return ErrorAt(t, "slices inside tuples are not supported");
      tuple->operands.push_back(std::move(a));
    }
    g->operands.push_back(std::move(tuple));
  }
  return g;
}

absl::StatusOr<ExprPtr> Parser::ParseSubscribed() {
  const Pos pos = PosOf(Cur());
  ExprPtr parts[3];
  if (IsOp(":")) {
    Advance();
  } else {
    ASSIGN_OR_RETURN(ExprPtr node, ParseExpression());
    if (!IsOp(":")) return node;
    Advance();
    parts[0] = std::move(node);
  }
  if (!IsOp(":") && !IsOp("]") && !IsOp(",")) {
    ASSIGN_OR_RETURN(parts[1], ParseExpression());
  }
  if (IsOp(":")) {
    Advance();
    if (!IsOp("]") && !IsOp(",")) {
      ASSIGN_OR_RETURN(parts[2], ParseExpression());
    }
  }
  ExprPtr slice = MakeExpr(Expr::Kind::kSlice, pos);
  for (int i = 0; i < 3; ++i) slice->slice_parts[i] = std::move(parts[i]);
  return slice;
}

absl::StatusOr<ExprPtr> Parser::ParseCall(ExprPtr node) {
  ExprPtr call = MakeExpr(Expr::Kind::kCall, PosOf(Cur()));
  call->operands.push_back(std::move(node));
  RETURN_IF_ERROR(ParseCallArgs(call.get()));
  return call;
}

absl::Status Parser::ParseCallArgs(Expr* call) {
  const Token open = Cur();
  RETURN_IF_ERROR(ExpectOp("("));
  bool require_comma = false;
  auto invalid = [&]() { return ErrorAt(open, "invalid syntax for function call expression"); };
  while (!IsOp(")")) {
    if (require_comma) {
      RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;  // trailing comma
    }
    if (IsOp("*")) {
      if (call->star_args || call->star_kwargs) return invalid();
      Advance();
      ASSIGN_OR_RETURN(call->star_args, ParseExpression());
    } else if (IsOp("**")) {
      if (call->star_kwargs) return invalid();
      Advance();
      ASSIGN_OR_RETURN(call->star_kwargs, ParseExpression());
    } else if (Cur().type == TokenType::kName && Peek().type == TokenType::kOperator &&
               Peek().value == "=") {
      if (call->star_kwargs) return invalid();
      std::string key = Cur().value;
      Advance();
      Advance();
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
      call->kwargs.emplace_back(std::move(key), std::move(value));
    } else {
      if (call->star_args || call->star_kwargs || !call->kwargs.empty()) return invalid();
      ASSIGN_OR_RETURN(ExprPtr arg, ParseExpression());
      call->args.push_back(std::move(arg));
    }
    require_comma = true;
  }
  return ExpectOp(")");
}

absl::StatusOr<ExprPtr> Parser::ParseFilter(ExprPtr node, bool start_inline) {
  while (IsOp("|") || start_inline) {
    if (!start_inline) Advance();
    start_inline = false;
    const Token name_token = Cur();
    ASSIGN_OR_RETURN(std::string name, ExpectNameToken());
    while (IsOp(".")) {
      Advance();
      ASSIGN_OR_RETURN(std::string part, ExpectNameToken());
      name += "." + part;
    }
    ExprPtr f = MakeExpr(Expr::Kind::kFilter, PosOf(name_token));
    f->name = name;
    f->filter = FindFilter(name);
    if (f->filter == nullptr) return ErrorAt(name_token, StrCat("no filter named '", name, "'"));
    if (node) f->operands.push_back(std::move(node));
    if (IsOp("(")) RETURN_IF_ERROR(ParseCallArgs(f.get()));
    node = std::move(f);
  }
  return node;
}

absl::StatusOr<ExprPtr> Parser::ParseTest(ExprPtr node) {
  const Pos pos = PosOf(Cur());
  Advance();  // is
  const bool negated = SkipName("not");
  const Token name_token = Cur();
  ASSIGN_OR_RETURN(std::string name, ExpectNameToken());
  while (IsOp(".")) {
    Advance();
    ASSIGN_OR_RETURN(std::string part, ExpectNameToken());
    name += "." + part;
  }
  ExprPtr t = MakeExpr(Expr::Kind::kTest, pos);
  t->name = name;
  t->test = FindTest(name);
  if (t->test == nullptr) return ErrorAt(name_token, StrCat("no test named '", name, "'"));
  t->operands.push_back(std::move(node));
  if (IsOp("(")) {
    RETURN_IF_ERROR(ParseCallArgs(t.get()));
  } else if ((Cur().type == TokenType::kName || Cur().type == TokenType::kString ||
              Cur().type == TokenType::kInteger || Cur().type == TokenType::kFloat ||
              IsOp("(") || IsOp("[") || IsOp("{")) &&
             !IsName("else") && !IsName("or") && !IsName("and")) {
    if (IsName("is")) return ErrorAt(Cur(), "you cannot chain multiple tests with is");
    ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
    ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
    t->args.push_back(std::move(arg));
  }
  if (!negated) return t;
  ExprPtr n = MakeExpr(Expr::Kind::kUnary, pos);
  n->name = "not";
  n->operands.push_back(std::move(t));
  return n;
}

}  // namespace krasis::chat_template
