// ToolCallParser (see tool_call_parser.h): a small state machine over the
// generated text -- content, inside a DeepSeek call section, inside one call --
// that holds back partial markers and hands each call body to its format's
// CallBodyParser (tool_call_formats.h). ParseComplete() applies the same rules
// with plain searches over the whole text.
#include "services/gateway/parsers/tool_call_parser.h"

#include <algorithm>
#include <cctype>
#include <random>
#include <utility>

#include "common/status.h"
#include "services/gateway/parsers/text_scan.h"

namespace krasis::gateway {
namespace {

constexpr size_t kNpos = std::string_view::npos;

bool Contains(std::string_view text, std::string_view what) {
  return text.find(what) != kNpos;
}

// Feeds a body parser, turning an (unexpected) exception into "malformed".
BodyUpdate SafeFeed(CallBodyParser& parser, std::string_view body, bool complete) {
  try {
    return parser.Feed(body, complete);
  } catch (...) {
    BodyUpdate update;
    update.malformed = complete;
    return update;
  }
}

}  // namespace

std::optional<ToolCallFormat> ToolCallFormatFor(std::string_view hint) {
  if (Contains(hint, "<function=")) return ToolCallFormat::kQwen3Coder;
  if (Contains(hint, "<arg_key>")) return ToolCallFormat::kGlm45;
  if (Contains(hint, "tool▁calls▁begin") || Contains(hint, "tool▁call▁begin")) {
    return Contains(hint, "```json") ? ToolCallFormat::kDeepseekV3
                                     : ToolCallFormat::kDeepseekV31;
  }
  if (Contains(hint, "<tool_call>")) return ToolCallFormat::kHermes;

  std::string type(TrimSpace(hint));
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (std::string_view t : {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next"}) {
    if (type == t) return ToolCallFormat::kHermes;
  }
  for (std::string_view t : {"qwen3_5", "qwen3_5_moe", "qwen3_coder"}) {
    if (type == t) return ToolCallFormat::kQwen3Coder;
  }
  if (type == "glm4_moe" || type == "glm4") return ToolCallFormat::kGlm45;
  if (type == "deepseek_v3" || type == "deepseek_v32") return ToolCallFormat::kDeepseekV31;
  return std::nullopt;
}

std::string_view ToolCallFormatName(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes: return "hermes";
    case ToolCallFormat::kQwen3Coder: return "qwen3_coder";
    case ToolCallFormat::kGlm45: return "glm45";
    case ToolCallFormat::kDeepseekV3: return "deepseek_v3";
    case ToolCallFormat::kDeepseekV31: return "deepseek_v31";
  }
  return "unknown";
}

absl::StatusOr<ToolCallFormat> ToolCallFormatFromName(std::string_view name) {
  for (ToolCallFormat f : {ToolCallFormat::kHermes, ToolCallFormat::kQwen3Coder,
                           ToolCallFormat::kGlm45, ToolCallFormat::kDeepseekV3,
                           ToolCallFormat::kDeepseekV31}) {
    if (name == ToolCallFormatName(f)) return f;
  }
  return InvalidArgumentError("unknown tool-call format \"", name,
                              "\" (expected hermes, qwen3_coder, glm45, deepseek_v3 or "
                              "deepseek_v31)");
}

std::string RandomToolCallId() {
  static constexpr std::string_view kAlnum =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, kAlnum.size() - 1);
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kAlnum[pick(rng)];
  return id;
}

nlohmann::json ToolCall::ToJson() const {
  return {{"id", id},
          {"type", "function"},
          {"function", {{"name", name}, {"arguments", arguments}}}};
}

nlohmann::json ToolCallDelta::ToJson() const {
  if (is_first()) {
    return {{"index", index},
            {"id", id},
            {"type", "function"},
            {"function", {{"name", name}, {"arguments", arguments}}}};
  }
  return {{"index", index}, {"function", {{"arguments", arguments}}}};
}

ToolCallParser::ToolCallParser(ToolCallFormat format, nlohmann::json tools,
                               ToolCallIdGenerator make_id)
    : format_(format),
      spec_(SpecFor(format)),
      schemas_(tools),
      make_id_(make_id ? std::move(make_id) : ToolCallIdGenerator(RandomToolCallId)) {
  if (!spec_.section_begin.empty()) triggers_.push_back(spec_.section_begin);
  for (const CallMarkers& call : spec_.calls) {
    triggers_.push_back(call.begin);
    section_markers_.push_back(call.begin);
  }
  section_markers_.push_back(spec_.section_end);  // last: leaves the section
}

ToolCallParser::~ToolCallParser() = default;

ToolCallParser::Delta ToolCallParser::Push(std::string_view chunk) {
  Delta out;
  if (state_ == State::kFinished) return out;
  buf_.append(chunk);
  Process(&out);
  return out;
}

ToolCallParser::Delta ToolCallParser::Finish() {
  Delta out;
  if (state_ == State::kFinished) return out;
  Process(&out);
  switch (state_) {
    case State::kContent:
      if (!(after_call_ && AllSpace(buf_))) EmitContent(buf_, &out);
      break;
    case State::kSection:
      if (!AllSpace(buf_)) EmitContent(buf_, &out);  // e.g. a cut-off marker
      break;
    case State::kCall:
      FeedCall(buf_, /*complete=*/true, /*closed=*/false, &out);
      break;
    case State::kFinished:
      break;
  }
  buf_.clear();
  body_.reset();
  state_ = State::kFinished;
  return out;
}

void ToolCallParser::Process(Delta* out) {
  for (;;) {
    bool progressed = false;
    switch (state_) {
      case State::kContent: progressed = StepContent(out); break;
      case State::kSection: progressed = StepSection(out); break;
      case State::kCall: progressed = StepCall(out); break;
      case State::kFinished: return;
    }
    if (!progressed) return;
  }
}

bool ToolCallParser::StepContent(Delta* out) {
  size_t ws = after_call_ ? LeadingSpace(buf_) : 0;
  if (after_call_ && ws == buf_.size()) return false;  // only whitespace so far
  MarkerHit hit = FindFirst(buf_, triggers_, ws);
  if (hit.found()) {
    // After a call, whitespace right before the next marker only separates calls.
    if (!(after_call_ && hit.pos == ws)) EmitContent(std::string_view(buf_).substr(0, hit.pos), out);
    after_call_ = false;
    buf_.erase(0, hit.pos + triggers_[hit.which].size());
    bool sectioned = !spec_.section_begin.empty();
    if (sectioned && hit.which == 0) {
      state_ = State::kSection;
      in_section_ = true;
    } else {
      BeginCall(hit.which - (sectioned ? 1 : 0));
    }
    return true;
  }
  size_t keep = std::max(PartialSuffix(buf_, triggers_), IncompleteUtf8Tail(buf_));
  size_t emit = buf_.size() - keep;
  if (after_call_ && emit <= ws) return false;  // whitespace, then maybe a marker
  EmitContent(std::string_view(buf_).substr(0, emit), out);
  buf_.erase(0, emit);
  after_call_ = false;
  return false;
}

bool ToolCallParser::StepSection(Delta* /*out*/) {
  size_t ws = LeadingSpace(buf_);
  if (ws == buf_.size()) return false;
  std::string_view rest = std::string_view(buf_).substr(ws);
  for (size_t k = 0; k < section_markers_.size(); ++k) {
    if (!rest.starts_with(section_markers_[k])) continue;
    buf_.erase(0, ws + section_markers_[k].size());
    if (k + 1 == section_markers_.size()) {  // the section's end marker
      in_section_ = false;
      state_ = State::kContent;
      after_call_ = true;
    } else {
      BeginCall(k);
    }
    return true;
  }
  for (std::string_view marker : section_markers_) {
    if (rest.size() < marker.size() && marker.starts_with(rest)) return false;  // undecided
  }
  // Stray text: the section is over; the text (and whitespace before it) is content.
  in_section_ = false;
  state_ = State::kContent;
  after_call_ = true;
  return true;
}

void ToolCallParser::BeginCall(size_t kind) {
  state_ = State::kCall;
  call_kind_ = kind;
  end_scan_ = 0;
  call_announced_ = false;
  body_ = NewCallBodyParser(format_, kind, schemas_);
}

bool ToolCallParser::StepCall(Delta* out) {
  std::string_view end = spec_.calls[call_kind_].end;
  size_t pos = buf_.find(end, end_scan_);
  if (pos != std::string::npos) {
    FeedCall(std::string_view(buf_).substr(0, pos), /*complete=*/true, /*closed=*/true, out);
    buf_.erase(0, pos + end.size());
    state_ = in_section_ ? State::kSection : State::kContent;
    return true;
  }
  if (buf_.size() + 1 > end.size()) end_scan_ = buf_.size() + 1 - end.size();
  size_t hold = PartialSuffix(buf_, end);
  FeedCall(std::string_view(buf_).substr(0, buf_.size() - hold), /*complete=*/false,
           /*closed=*/false, out);
  return false;
}

void ToolCallParser::FeedCall(std::string_view body, bool complete, bool closed, Delta* out) {
  BodyUpdate update = SafeFeed(*body_, body, complete);
  if (!call_announced_) {
    if (complete && (update.malformed || !update.name)) {
      std::string raw(spec_.calls[call_kind_].begin);
      raw += body;
      if (closed) raw += spec_.calls[call_kind_].end;
      EmitContent(raw, out);
      after_call_ = false;
      return;
    }
    if (update.name) {
      ToolCallDelta first;
      first.index = next_index_++;
      first.id = make_id_();
      first.name = std::move(*update.name);
      out->tool_calls.push_back(std::move(first));
      call_announced_ = true;
    }
  }
  if (call_announced_ && !update.arguments.empty()) {
    int index = next_index_ - 1;
    if (!out->tool_calls.empty() && out->tool_calls.back().index == index &&
        !out->tool_calls.back().is_first()) {
      out->tool_calls.back().arguments += update.arguments;
    } else {
      ToolCallDelta more;
      more.index = index;
      more.arguments = std::move(update.arguments);
      out->tool_calls.push_back(std::move(more));
    }
  }
  if (complete) after_call_ = true;
}

void ToolCallParser::EmitContent(std::string_view text, Delta* out) {
  out->content.append(text);
}

ToolCallParser::Result ToolCallParser::ParseComplete(std::string_view text) const {
  Result result;
  const bool sectioned = !spec_.section_begin.empty();
  size_t pos = 0;
  bool after_call = false;
  bool in_section = false;
  auto segment = [&](std::string_view seg) {
    if (!(after_call && AllSpace(seg))) result.content.append(seg);
  };
  for (;;) {
    size_t kind = 0;
    if (!in_section) {
      MarkerHit hit = FindFirst(text, triggers_, pos);
      if (!hit.found()) {
        segment(text.substr(pos));
        break;
      }
      segment(text.substr(pos, hit.pos - pos));
      after_call = false;
      pos = hit.pos + triggers_[hit.which].size();
      if (sectioned && hit.which == 0) {
        in_section = true;
        continue;
      }
      kind = hit.which - (sectioned ? 1 : 0);
    } else {
      size_t at = pos + LeadingSpace(text.substr(pos));
      std::string_view rest = text.substr(at);
      auto marker = std::find_if(section_markers_.begin(), section_markers_.end(),
                                 [&](std::string_view m) { return rest.starts_with(m); });
      if (marker == section_markers_.end() || marker + 1 == section_markers_.end()) {
        // Stray text or the section's end marker: back to content.
        if (marker != section_markers_.end()) pos = at + marker->size();
        in_section = false;
        after_call = true;
        continue;
      }
      pos = at + marker->size();
      kind = static_cast<size_t>(marker - section_markers_.begin());
    }
    // One call, from its body to its end marker (or the end of the text).
    const CallMarkers& markers = spec_.calls[kind];
    size_t end = text.find(markers.end, pos);
    bool closed = end != kNpos;
    std::string_view body = text.substr(pos, (closed ? end : text.size()) - pos);
    std::unique_ptr<CallBodyParser> parser = NewCallBodyParser(format_, kind, schemas_);
    BodyUpdate update = SafeFeed(*parser, body, /*complete=*/true);
    if (update.malformed || !update.name) {
      result.content += markers.begin;
      result.content += body;
      if (closed) result.content += markers.end;
      after_call = false;
    } else {
      result.tool_calls.push_back(ToolCall{make_id_(), *update.name, update.arguments});
      after_call = true;
    }
    pos = closed ? end + markers.end.size() : text.size();
  }
  return result;
}

}  // namespace krasis::gateway
