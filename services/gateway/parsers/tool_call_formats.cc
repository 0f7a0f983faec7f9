// Per-format markers and call-body parsers (see tool_call_formats.h).
#include "services/gateway/parsers/tool_call_formats.h"

#include <algorithm>
#include <initializer_list>

#include "services/gateway/parsers/text_scan.h"

namespace krasis::gateway {
namespace {

using ordered_json = nlohmann::ordered_json;
constexpr size_t kNpos = std::string_view::npos;

// Earliest of `markers` in body at or after *scan. When none is there, *scan moves
// to the first position where a marker could still start once more text arrives,
// so a growing body is searched once, not once per Feed().
MarkerHit FindFrom(std::string_view body, std::initializer_list<std::string_view> markers,
                   size_t* scan) {
  std::span<const std::string_view> list(markers.begin(), markers.size());
  MarkerHit hit = FindFirst(body, list, std::min(*scan, body.size()));
  if (!hit.found()) {
    size_t longest = 0;
    for (std::string_view m : markers) longest = std::max(longest, m.size());
    if (body.size() + 1 > longest) *scan = std::max(*scan, body.size() + 1 - longest);
  }
  return hit;
}

// Drops a Markdown code fence around JSON ("```json\n{...}\n```").
std::string_view StripFences(std::string_view text) {
  text = TrimSpace(text);
  if (text.starts_with("```")) {
    size_t nl = text.find('\n');
    text = nl == kNpos ? std::string_view() : text.substr(nl + 1);
    text = TrimSpace(text);
    if (text.ends_with("```")) text = TrimSpace(text.substr(0, text.size() - 3));
  }
  return text;
}

// A JSON arguments value: an object, or a string holding one.
std::optional<std::string> ArgumentsFromJson(const ordered_json& args) {
  if (args.is_object()) return DumpJson(args);
  if (args.is_string()) {
    ordered_json inner = ParseJsonOrDiscard(args.get_ref<const std::string&>());
    if (!inner.is_discarded() && inner.is_object()) return DumpJson(inner);
  }
  return std::nullopt;
}

struct JsonCall {
  std::string name;
  std::string arguments;
};

// {"name": "f", "arguments": {...}} ("parameters" accepted for "arguments").
std::optional<JsonCall> ParseHermes(std::string_view body) {
  ordered_json call = ParseJsonOrDiscard(StripFences(body));
  if (call.is_discarded() || !call.is_object()) return std::nullopt;
  auto name = call.find("name");
  if (name == call.end() || !name->is_string()) return std::nullopt;
  const std::string& fn = name->get_ref<const std::string&>();
  if (!IsValidFunctionName(fn)) return std::nullopt;
  auto args = call.find("arguments");
  if (args == call.end()) args = call.find("parameters");
  if (args == call.end()) return JsonCall{fn, "{}"};
  std::optional<std::string> text = ArgumentsFromJson(*args);
  if (!text) return std::nullopt;
  return JsonCall{fn, *text};
}

constexpr std::string_view kDeepseekSep = "<｜tool▁sep｜>";

// V3:   TYPE<｜tool▁sep｜>NAME\n```json\n{...}\n```
// V3.1: NAME<｜tool▁sep｜>{...}
std::optional<JsonCall> ParseDeepseek(std::string_view body, bool v31) {
  size_t sep = body.find(kDeepseekSep);
  if (sep == kNpos) return std::nullopt;
  std::string_view before = body.substr(0, sep);
  std::string_view after = body.substr(sep + kDeepseekSep.size());
  std::string_view name;
  std::string_view args;
  if (v31) {
    name = TrimSpace(before);
    args = after;
  } else {
    size_t nl = after.find('\n');
    if (nl == kNpos) return std::nullopt;
    name = TrimSpace(after.substr(0, nl));
    args = after.substr(nl + 1);
  }
  if (!IsValidFunctionName(name)) return std::nullopt;
  ordered_json parsed = ParseJsonOrDiscard(StripFences(args));
  if (parsed.is_discarded()) return std::nullopt;
  std::optional<std::string> text = ArgumentsFromJson(parsed);
  if (!text) return std::nullopt;
  return JsonCall{std::string(name), *text};
}

// Hermes and DeepSeek: the whole body is needed to validate the JSON.
class JsonBodyParser final : public CallBodyParser {
 public:
  explicit JsonBodyParser(ToolCallFormat format) : format_(format) {}

  BodyUpdate Feed(std::string_view body, bool complete) override {
    BodyUpdate update;
    if (!complete) return update;
    std::optional<JsonCall> call =
        format_ == ToolCallFormat::kHermes
            ? ParseHermes(body)
            : ParseDeepseek(body, format_ == ToolCallFormat::kDeepseekV31);
    if (!call) {
      update.malformed = true;
      return update;
    }
    update.name = std::move(call->name);
    update.arguments = std::move(call->arguments);
    return update;
  }

 private:
  ToolCallFormat format_;
};

// Shared by the XML formats: builds the arguments object one member at a time,
// so "{" + member + "," + member + "}" equals the compact dump of the object.
class XmlBodyParser : public CallBodyParser {
 public:
  explicit XmlBodyParser(const ToolSchemas& schemas) : schemas_(schemas) {}

  BodyUpdate Feed(std::string_view body, bool complete) final {
    BodyUpdate update;
    if (name_.empty()) {
      if (!ReadName(body, complete, &update.malformed)) return update;
      update.name = name_;
    }
    ReadArguments(body, complete, &update.arguments);
    if (complete && !closed_) {
      update.arguments += members_ == 0 ? "{}" : "}";
      closed_ = true;
    }
    return update;
  }

 protected:
  // Sets name_ (and the scan position) once the name is complete and valid.
  // Sets *malformed when complete and there is no valid name.
  virtual bool ReadName(std::string_view body, bool complete, bool* malformed) = 0;
  // Appends the members that completed since the last call.
  virtual void ReadArguments(std::string_view body, bool complete, std::string* out) = 0;

  void AddMember(std::string_view key, std::string_view raw, std::string* out) {
    ordered_json value = TypedValue(raw, schemas_.Param(name_, key));
    *out += members_ == 0 ? "{" : ",";
    *out += DumpJson(ordered_json(std::string(key)));
    *out += ":";
    *out += DumpJson(value);
    ++members_;
  }

  std::string name_;
  size_t scan_ = 0;

 private:
  const ToolSchemas& schemas_;
  size_t members_ = 0;
  bool closed_ = false;
};

// <function=NAME>\n<parameter=K>\nV\n</parameter>...</function>. A value ends at
// </parameter>, or (leniently, as vLLM) at the next <parameter= or </function>,
// or at the end of the body; one newline on each side of it is template framing.
class Qwen3CoderBodyParser final : public XmlBodyParser {
 public:
  Qwen3CoderBodyParser(const ToolSchemas& schemas, bool bare)
      : XmlBodyParser(schemas), bare_(bare) {}

 private:
  static constexpr std::string_view kFunctionOpen = "<function=";
  static constexpr std::string_view kFunctionClose = "</function>";
  static constexpr std::string_view kParamOpen = "<parameter=";
  static constexpr std::string_view kParamClose = "</parameter>";

  bool ReadName(std::string_view body, bool complete, bool* malformed) override {
    size_t start = 0;
    if (!bare_) {  // the body after <tool_call>: whitespace, then <function=
      start = LeadingSpace(body);
      if (!body.substr(start).starts_with(kFunctionOpen)) {
        *malformed = complete;
        return false;
      }
      start += kFunctionOpen.size();
    }
    size_t gt = body.find('>', start);
    std::string_view name =
        gt == kNpos ? std::string_view() : TrimSpace(body.substr(start, gt - start));
    if (!IsValidFunctionName(name)) {
      *malformed = complete;
      return false;
    }
    name_ = std::string(name);
    scan_ = gt + 1;
    return true;
  }

  void ReadArguments(std::string_view body, bool complete, std::string* out) override {
    while (!done_) {
      if (!in_value_) {
        MarkerHit hit = FindFrom(body, {kParamOpen, kFunctionClose}, &scan_);
        if (!hit.found()) return;
        if (hit.which == 1) {
          done_ = true;
          return;
        }
        size_t gt = body.find('>', hit.pos + kParamOpen.size());
        if (gt == kNpos) {
          scan_ = hit.pos;  // the parameter name is still arriving
          return;
        }
        key_ = std::string(TrimSpace(body.substr(hit.pos + kParamOpen.size(),
                                                 gt - hit.pos - kParamOpen.size())));
        value_start_ = scan_ = gt + 1;
        in_value_ = true;
      }
      MarkerHit end = FindFrom(body, {kParamClose, kParamOpen, kFunctionClose}, &scan_);
      if (!end.found() && !complete) return;
      size_t value_end = end.found() ? end.pos : body.size();
      std::string_view value = body.substr(value_start_, value_end - value_start_);
      if (value.starts_with('\n')) value.remove_prefix(1);
      if (value.ends_with('\n')) value.remove_suffix(1);
      AddMember(key_, value, out);
      in_value_ = false;
      if (!end.found()) {
        done_ = true;
        return;
      }
      scan_ = end.which == 0 ? end.pos + kParamClose.size() : end.pos;
    }
  }

  bool bare_;
  bool in_value_ = false;
  bool done_ = false;
  std::string key_;
  size_t value_start_ = 0;
};

// NAME<arg_key>K</arg_key><arg_value>V</arg_value>... with any whitespace
// between the pieces; keys and values are trimmed (as vLLM); a pair missing any
// of its four tags when the body ends is dropped.
class GlmBodyParser final : public XmlBodyParser {
 public:
  explicit GlmBodyParser(const ToolSchemas& schemas) : XmlBodyParser(schemas) {}

 private:
  bool ReadName(std::string_view body, bool complete, bool* malformed) override {
    size_t start = LeadingSpace(body);
    size_t end = start;
    while (end < body.size() && !IsSpace(body[end]) && body[end] != '<') ++end;
    if (end == body.size() && !complete) return false;  // the name may go on
    std::string_view name = body.substr(start, end - start);
    if (!IsValidFunctionName(name)) {
      *malformed = complete;
      return false;
    }
    name_ = std::string(name);
    scan_ = end;
    return true;
  }

  void ReadArguments(std::string_view body, bool /*complete*/, std::string* out) override {
    static constexpr std::string_view kTags[] = {"<arg_key>", "</arg_key>", "<arg_value>",
                                                 "</arg_value>"};
    for (;;) {
      MarkerHit hit = FindFrom(body, {kTags[step_]}, &scan_);
      if (!hit.found()) return;
      size_t after = hit.pos + kTags[step_].size();
      switch (step_) {
        case 0: key_start_ = after; break;
        case 1: key_ = std::string(TrimSpace(body.substr(key_start_, hit.pos - key_start_))); break;
        case 2: value_start_ = after; break;
        case 3: AddMember(key_, TrimSpace(body.substr(value_start_, hit.pos - value_start_)), out);
      }
      scan_ = after;
      step_ = (step_ + 1) % 4;
    }
  }

  size_t step_ = 0;  // index of the tag looked for next
  size_t key_start_ = 0;
  size_t value_start_ = 0;
  std::string key_;
};

}  // namespace

const FormatSpec& SpecFor(ToolCallFormat format) {
  static const FormatSpec kHermes{"", "", {{"<tool_call>", "</tool_call>"}}};
  static const FormatSpec kQwen3Coder{
      "", "", {{"<tool_call>", "</tool_call>"}, {"<function=", "</function>"}}};
  static const FormatSpec kDeepseek{"<｜tool▁calls▁begin｜>",
                                    "<｜tool▁calls▁end｜>",
                                    {{"<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>"}}};
  switch (format) {
    case ToolCallFormat::kHermes:
    case ToolCallFormat::kGlm45:
      return kHermes;  // the same markers; the bodies differ
    case ToolCallFormat::kQwen3Coder:
      return kQwen3Coder;
    case ToolCallFormat::kDeepseekV3:
    case ToolCallFormat::kDeepseekV31:
      return kDeepseek;
  }
  return kHermes;
}

std::unique_ptr<CallBodyParser> NewCallBodyParser(ToolCallFormat format, size_t call_kind,
                                                  const ToolSchemas& schemas) {
  switch (format) {
    case ToolCallFormat::kQwen3Coder:
      return std::make_unique<Qwen3CoderBodyParser>(schemas, /*bare=*/call_kind == 1);
    case ToolCallFormat::kGlm45:
      return std::make_unique<GlmBodyParser>(schemas);
    case ToolCallFormat::kHermes:
    case ToolCallFormat::kDeepseekV3:
    case ToolCallFormat::kDeepseekV31:
      break;
  }
  return std::make_unique<JsonBodyParser>(format);
}

bool IsValidFunctionName(std::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  for (char c : name) {
    auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte == 0x7F) return false;
    if (std::string_view("<>{}\"'`,").find(c) != kNpos) return false;
  }
  return true;
}

}  // namespace krasis::gateway
