// The text pipeline of one generation (see generation.h).
#include "services/gateway/generation.h"

#include <chrono>

#include "common/status.h"
#include "common/tokenizer/streaming_detokenizer.h"
#include "services/gateway/parsers/reasoning_parser.h"
#include "services/gateway/parsers/stop_matcher.h"

namespace krasis::gateway {

absl::StatusOr<GenerationResult> RunGeneration(const ModelFrontend& model, Backend& backend,
                                               const GenerationSpec& spec,
                                               const std::function<bool(const TextDelta&)>& on_delta,
                                               const std::atomic<bool>& cancelled) {
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(spec.prompt.size());
  StreamingDetokenizer detok(model.tokenizer(), /*skip_special=*/true);
  StopMatcher stops(spec.options.stop);
  std::optional<ReasoningParser> reasoning;
  if (spec.parse_reasoning) reasoning.emplace(ReasoningOptions{spec.starts_in_reasoning, "<think>", "</think>"});
  std::optional<ToolCallParser> tools;
  if (spec.tool_format) tools.emplace(*spec.tool_format, spec.tools.is_array() ? spec.tools : nlohmann::json::array());
  bool stopped_by_string = false, client_gone = false;
  std::optional<v1::FinishReason> finish;

  // Text (after stop strings) -> reasoning -> tool calls -> delta.
  auto route_text = [&](const std::string& text, bool final_flush, TextDelta& d) {
    std::string content = text;
    if (reasoning) {
      ReasoningDelta r = reasoning->Push(text);
      if (final_flush) {
        ReasoningDelta f = reasoning->Finish();
        r.reasoning += f.reasoning;
        r.content += f.content;
      }
      d.reasoning += r.reasoning;
      content = r.content;
    }
    if (tools) {
      ToolCallParser::Delta t = tools->Push(content);
      if (final_flush) {
        ToolCallParser::Delta f = tools->Finish();
        t.content += f.content;
        t.tool_calls.insert(t.tool_calls.end(), f.tool_calls.begin(), f.tool_calls.end());
      }
      d.content += t.content;
      d.tool_calls.insert(d.tool_calls.end(), t.tool_calls.begin(), t.tool_calls.end());
    } else {
      d.content += content;
    }
  };
  auto emit = [&](TextDelta& d) {
    result.content += d.content;
    result.reasoning += d.reasoning;
    for (auto& l : d.logprobs) result.logprobs.push_back(l);
    for (const ToolCallDelta& t : d.tool_calls) {
      if (t.index >= static_cast<int>(result.tool_calls.size())) result.tool_calls.resize(t.index + 1);
      ToolCall& call = result.tool_calls[t.index];
      if (!t.id.empty()) call.id = t.id;
      if (!t.name.empty()) call.name = t.name;
      call.arguments += t.arguments;
    }
    if (d.empty()) return true;
    if (!on_delta(d)) {
      client_gone = true;
      return false;
    }
    return true;
  };

  auto on_event = [&](const v1::GenerateResponse& resp) -> bool {
    TextDelta d;
    for (const v1::GeneratedToken& t : resp.tokens()) {
      if (result.completion_tokens == 0) {
        result.ttft_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      }
      ++result.completion_tokens;
      if (spec.options.logprobs) {
        TokenLogprobs lp;
        lp.token = model.tokenizer().Decode(std::vector<int32_t>{t.token_id()});
        lp.logprob = t.logprob();
        for (const auto& top : t.top_logprobs()) {
          lp.top.emplace_back(model.tokenizer().Decode(std::vector<int32_t>{top.token_id()}), top.logprob());
        }
        d.logprobs.push_back(std::move(lp));
      }
      StopResult s = stops.Push(detok.Add(t.token_id()));
      route_text(s.emit, false, d);
      if (s.stopped) {
        stopped_by_string = true;
        break;
      }
    }
    if (resp.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      finish = resp.finish_reason();
      result.cached_tokens = resp.usage().cached_tokens();
    }
    if (!emit(d)) return false;
    return !stopped_by_string;
  };
  absl::Status s = backend.Generate(spec.request_id, spec.prompt, spec.options.sampling, on_event, cancelled,
                                    &result.route);
  if (client_gone || cancelled.load()) {
    result.finish_reason = "cancelled";
    return result;
  }
  if (!s.ok()) return s;
  // Flush what was held back (partial UTF-8, a possible stop-string prefix, tags).
  TextDelta tail;
  if (!stopped_by_string) {
    StopResult sr = stops.Push(detok.Flush());
    std::string rest = sr.emit + (sr.stopped ? "" : stops.Finish());
    route_text(rest, true, tail);
  } else {
    route_text("", true, tail);
  }
  emit(tail);
  if (stopped_by_string) {
    result.finish_reason = "stop";
  } else if (finish == v1::FINISH_REASON_LENGTH) {
    result.finish_reason = "length";
  } else if (finish == v1::FINISH_REASON_ERROR) {
    return absl::InternalError("the decode worker failed during generation");
  } else {
    result.finish_reason = result.tool_calls.empty() ? "stop" : "tool_calls";
  }
  result.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return result;
}

}  // namespace krasis::gateway
