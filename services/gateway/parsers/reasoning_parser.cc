// <think> reasoning splitter (see reasoning_parser.h): a three-state machine
// (deciding whether the output opens with a start tag, inside the reasoning,
// content) over a buffer of not-yet-decided text.
#include "services/gateway/parsers/reasoning_parser.h"

#include <utility>

#include "services/gateway/parsers/text_scan.h"

namespace krasis::gateway {

ReasoningParser::ReasoningParser(ReasoningOptions options) : options_(std::move(options)) {}

ReasoningDelta ReasoningParser::Push(std::string_view chunk) {
  ReasoningDelta out;
  if (state_ == State::kFinished) return out;
  pending_.append(chunk);
  Process(&out);
  return out;
}

void ReasoningParser::Process(ReasoningDelta* out) {
  const std::string& start = options_.start_tag;
  const std::string& end = options_.end_tag;
  for (;;) {
    switch (state_) {
      case State::kStart: {
        // Decide whether the output opens with the start tag (after whitespace).
        std::string_view rest = std::string_view(pending_).substr(LeadingSpace(pending_));
        if (!start.empty() && rest.starts_with(start)) {
          pending_.erase(0, pending_.size() - rest.size() + start.size());
          state_ = State::kReasoning;
          continue;
        }
        if (!start.empty() && rest.size() < start.size() &&
            std::string_view(start).starts_with(rest)) {
          return;  // still undecided: whitespace and/or a partial start tag
        }
        state_ = options_.starts_in_reasoning ? State::kReasoning : State::kContent;
        continue;
      }
      case State::kReasoning: {
        size_t pos = end.empty() ? std::string::npos : pending_.find(end);
        if (pos != std::string::npos) {
          out->reasoning.append(pending_, 0, pos);
          pending_.erase(0, pos + end.size());
          state_ = State::kContent;
          continue;
        }
        size_t emit = pending_.size() - PartialSuffix(pending_, end);
        emit = Utf8Floor(pending_, emit - IncompleteUtf8Tail(std::string_view(pending_).substr(0, emit)));
        out->reasoning.append(pending_, 0, emit);
        pending_.erase(0, emit);
        return;
      }
      case State::kContent: {
        size_t emit = pending_.size() - IncompleteUtf8Tail(pending_);
        out->content.append(pending_, 0, emit);
        pending_.erase(0, emit);
        return;
      }
      case State::kFinished:
        return;
    }
  }
}

ReasoningDelta ReasoningParser::Finish() {
  ReasoningDelta out;
  if (state_ == State::kFinished) return out;
  Process(&out);
  bool to_reasoning = state_ == State::kReasoning ||
                      (state_ == State::kStart && options_.starts_in_reasoning);
  (to_reasoning ? out.reasoning : out.content).append(pending_);
  pending_.clear();
  state_ = State::kFinished;
  return out;
}

ReasoningDelta ReasoningParser::Parse(std::string_view text, const ReasoningOptions& options) {
  ReasoningDelta out;
  std::string_view body;
  std::string_view rest = text.substr(LeadingSpace(text));
  if (!options.start_tag.empty() && rest.starts_with(options.start_tag)) {
    body = rest.substr(options.start_tag.size());
  } else if (options.starts_in_reasoning) {
    body = text;
  } else {
    out.content = std::string(text);
    return out;
  }
  size_t pos = options.end_tag.empty() ? std::string_view::npos : body.find(options.end_tag);
  if (pos == std::string_view::npos) {
    out.reasoning = std::string(body);
  } else {
    out.reasoning = std::string(body.substr(0, pos));
    out.content = std::string(body.substr(pos + options.end_tag.size()));
  }
  return out;
}

}  // namespace krasis::gateway
