// PCRE2 wrapper for tokenizer.json patterns (see regex.h).
#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/status.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

pcre2_code* Code(void* p) { return static_cast<pcre2_code*>(p); }

// Per-thread matching state: one match data block (group 0 only) and a JIT
// stack big enough for long whitespace or letter runs.
struct ThreadMatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  pcre2_match_context* context = [this] {
    pcre2_match_context* c = pcre2_match_context_create(nullptr);
    pcre2_jit_stack_assign(c, nullptr, stack);
    return c;
  }();
  ~ThreadMatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

std::string EscapeLiteral(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ ").find(c) != std::string_view::npos) {
      out += '\\';
    }
    out += c;
  }
  return out;
}

}  // namespace

namespace {

// Escapes whose meaning differs between Oniguruma (Unicode, Ruby syntax) and
// PCRE2 with UCP, and what PCRE2 must see instead, inside a character class and
// outside one (nullptr: a negated class cannot be nested; left unchanged).
struct EscapeRewrite {
  char name;
  const char* in_class;
  const char* outside;
};
constexpr EscapeRewrite kEscapeRewrites[] = {
    {'s', "\\s\\x{85}", "[\\s\\x{85}]"},  // Onig's \s also matches U+0085 (NEL)
    {'S', nullptr, "[^\\s\\x{85}]"},
    {'w', "\\p{L}\\p{M}\\p{N}\\p{Pc}", "[\\p{L}\\p{M}\\p{N}\\p{Pc}]"},  // marks too
    {'W', nullptr, "[^\\p{L}\\p{M}\\p{N}\\p{Pc}]"},
    {'h', "0-9a-fA-F", "[0-9a-fA-F]"},  // Onig's \h is a hex digit, not a blank
    {'H', nullptr, "[^0-9a-fA-F]"},
    {'v', "\\x{0B}", "\\x{0B}"},  // Onig's \v is only the vertical tab
};

}  // namespace

std::string TranslatePattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char n = pattern[++i];
      const char* rewrite = nullptr;
      for (const EscapeRewrite& e : kEscapeRewrites) {
        if (e.name == n) rewrite = in_class ? e.in_class : e.outside;
      }
      if (rewrite != nullptr) {
        out += rewrite;
      } else {
        out += '\\';
        out += n;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // POSIX class [:alpha:] inside a class: copy through its closing ']'.
      const size_t end = pattern.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(pattern.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  const std::string translated = TranslatePattern(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error, buffer, sizeof(buffer));
    return InvalidArgumentError("cannot compile regex '", pattern, "' at offset ", offset, ": ",
                                reinterpret_cast<const char*>(buffer));
  }
  std::unique_ptr<Regex> regex(new Regex());
  // JIT is an optimisation: when unavailable pcre2_match interprets instead.
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  regex->pattern_ = std::string(pattern);
  regex->code_ = code;
  return regex;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Literal(std::string_view literal) {
  // An empty literal matches nothing (as in Hugging Face tokenizers).
  ASSIGN_OR_RETURN(auto regex, Compile(literal.empty() ? "(*FAIL)" : EscapeLiteral(literal)));
  regex->pattern_ = std::string(literal);
  return regex;
}

absl::StatusOr<std::unique_ptr<Regex>> PatternFromJson(const Json& j, std::string_view what) {
  if (j.is_object() && j.size() == 1) {
    if (auto it = j.find("String"); it != j.end() && it->is_string()) {
      return Regex::Literal(it->get<std::string>());
    }
    if (auto it = j.find("Regex"); it != j.end() && it->is_string()) {
      auto regex = Regex::Compile(it->get<std::string>());
      if (!regex.ok()) return Annotate(regex.status(), what);
      return regex;
    }
  }
  return InvalidArgumentError(what, ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

Regex::~Regex() { pcre2_code_free(Code(code_)); }

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  ThreadMatchState& state = MatchState();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = jit_ ? pcre2_jit_match(Code(code_), subject, text.size(), start, 0, state.data,
                                          state.context)
                        : pcre2_match(Code(code_), subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                                      state.data, state.context);
    if (rc < 0) break;  // no match (or a resource limit: treat the rest as unmatched)
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const size_t b = ovector[0], e = ovector[1];
    matches->emplace_back(b, e);
    if (e > b) {
      start = e;
    } else {
      if (b >= text.size()) break;
      start = b + Utf8SeqLen(static_cast<unsigned char>(text[b]));
    }
  }
}

}  // namespace krasis::tokenizer
