// OpenAI REST handlers (see openai_api.h).
#include "services/gateway/openai_api.h"

#include <chrono>
#include <thread>

#include "common/logging.h"
#include "common/status.h"
#include "services/gateway/generation.h"
#include "services/gateway/openai_request.h"
#include "services/gateway/request_plan.h"

namespace krasis::gateway {

namespace {

using json = nlohmann::json;

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json LogprobsJson(const std::vector<TokenLogprobs>& lps) {
  json content = json::array();
  for (const auto& lp : lps) {
    json top = json::array();
    for (const auto& [tok, p] : lp.top) {
      top.push_back({{"token", tok}, {"logprob", p}, {"bytes", std::vector<unsigned char>(tok.begin(), tok.end())}});
    }
    content.push_back({{"token", lp.token},
                       {"logprob", lp.logprob},
                       {"bytes", std::vector<unsigned char>(lp.token.begin(), lp.token.end())},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// The legacy completions logprobs object: tokens, token_logprobs, top_logprobs
// (token -> logprob) and text_offset (byte offset of each token in the choice's
// text, continuing from `*offset`, which is advanced).
json CompletionLogprobsJson(const std::vector<TokenLogprobs>& lps, size_t* offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (const auto& lp : lps) {
    tokens.push_back(lp.token);
    token_logprobs.push_back(lp.logprob);
    json alternatives = json::object();
    for (const auto& [tok, p] : lp.top) alternatives[tok] = p;
    top.push_back(alternatives);
    offsets.push_back(*offset);
    *offset += lp.token.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json UsageJson(const GenerationResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_tokens}}}};
}

json TimingJson(const GenerationResult& r) {
  double decode_ms = r.total_ms - r.ttft_ms;
  return {{"ttft_ms", r.ttft_ms},
          {"total_ms", r.total_ms},
          {"decode_tokens_per_second", decode_ms > 0 && r.completion_tokens > 1
                                           ? (r.completion_tokens - 1) * 1000.0 / decode_ms
                                           : 0.0},
          {"cached_tokens", r.cached_tokens},
          {"decode_worker", r.route.decode_address},
          {"prefilled_remotely", r.route.prefilled_remotely}};
}

int StatusFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return 400;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kFailedPrecondition: return 400;
    default: return 500;
  }
}

}  // namespace

OpenAiApi::OpenAiApi(const ModelFrontend& model, Backend& backend)
    : model_(model),
      backend_(backend),
      requests_(metrics_.AddCounter("krasis_requests_total", "HTTP requests by endpoint and status",
                                    {"endpoint", "status"})),
      prompt_tokens_(metrics_.AddCounter("krasis_prompt_tokens_total", "Prompt tokens of finished requests")),
      generated_tokens_(metrics_.AddCounter("krasis_generated_tokens_total", "Tokens generated")),
      ttft_(metrics_.AddHistogram("krasis_time_to_first_token_seconds", "Time to first token",
                                  http::MetricsRegistry::ExponentialBuckets(0.005, 2, 14))),
      itl_(metrics_.AddHistogram("krasis_inter_token_latency_seconds", "Time between streamed tokens",
                                 http::MetricsRegistry::ExponentialBuckets(0.001, 2, 14))),
      queue_depth_(metrics_.AddGauge("krasis_queue_depth", "Requests in flight in the gateway")),
      kv_used_(metrics_.AddGauge("krasis_kv_cache_usage_ratio", "KV cache blocks in use / total, per decode worker",
                                 {"worker"})) {}

OpenAiApi::~OpenAiApi() {
  while (threads_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

void OpenAiApi::Register(http::HttpServer& server) {
  server.Handle("POST", "/v1/chat/completions", [this](const http::Request& r, http::ResponderPtr p) { Chat(r, p); });
  server.Handle("POST", "/v1/completions", [this](const http::Request& r, http::ResponderPtr p) { Completions(r, p); });
  server.Handle("GET", "/v1/models", [this](const http::Request&, http::ResponderPtr p) { Models(p); });
  server.Handle("GET", "/health", [this](const http::Request&, http::ResponderPtr p) { Health(p); });
  server.Handle("GET", "/metrics", [this](const http::Request&, http::ResponderPtr p) { Metrics(p); });
  server.Handle("POST", "/v1/timing", [this](const http::Request& r, http::ResponderPtr p) { Timing(r, p); });
}

void OpenAiApi::Launch(http::ResponderPtr responder, std::function<void(const std::atomic<bool>&)> body) {
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  responder->OnClose([cancelled] { cancelled->store(true); });
  threads_.fetch_add(1);
  queue_depth_.Get().Increment();
  std::thread([this, cancelled, body = std::move(body)] {
    body(*cancelled);
    backend_.Release();
    queue_depth_.Get().Decrement();
    threads_.fetch_sub(1);
  }).detach();
}

void OpenAiApi::Chat(const http::Request& request, http::ResponderPtr responder) {
  auto fail = [&](const ApiError& e) {
    requests_.WithLabels({"chat", std::to_string(e.status)}).Increment();
    responder->SendJson(e.status, ErrorBody(e));
  };
  auto parsed = ParseChatRequest(request.body, model_.generation_defaults());
  if (auto* e = std::get_if<ApiError>(&parsed)) return fail(*e);
  auto planned = PlanChat(model_, std::get<ChatRequest>(parsed), NewRequestId("chatcmpl-"));
  if (auto* e = std::get_if<ApiError>(&planned)) return fail(*e);
  if (!backend_.Admit()) return fail(QueueFullError());
  GenerationSpec spec = std::move(std::get<GenerationSpec>(planned));
  Launch(responder, [this, responder, spec = std::move(spec)](const std::atomic<bool>& cancelled) {
    const std::string id = spec.request_id;
    const int64_t created = Now();
    auto chunk = [&](json delta, json finish, json logprobs) {
      json c = {{"id", id},
                {"object", "chat.completion.chunk"},
                {"created", created},
                {"model", model_.id()},
                {"system_fingerprint", nullptr},
                {"choices", json::array({{{"index", 0}, {"delta", delta}, {"logprobs", logprobs}, {"finish_reason", finish}}})}};
      if (spec.options.include_usage) c["usage"] = nullptr;
      return c;
    };
    auto last_token = std::chrono::steady_clock::now();
    bool first = true;
    if (spec.options.stream) {
      responder->StartEventStream();
      responder->SendEvent(chunk({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr).dump());
    }
    auto on_delta = [&](const TextDelta& d) {
      auto now = std::chrono::steady_clock::now();
      if (!first) itl_.Get().Observe(std::chrono::duration<double>(now - last_token).count());
      first = false;
      last_token = now;
      if (!spec.options.stream) return !responder->ClientGone();
      json delta = json::object();
      if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
      if (!d.content.empty()) delta["content"] = d.content;
      if (!d.tool_calls.empty()) {
        json calls = json::array();
        for (const auto& t : d.tool_calls) calls.push_back(t.ToJson());
        delta["tool_calls"] = calls;
      }
      if (delta.empty() && d.logprobs.empty()) return true;
      return responder->SendEvent(
          chunk(delta, nullptr, spec.options.logprobs ? LogprobsJson(d.logprobs) : json(nullptr)).dump());
    };
    auto result = RunGeneration(model_, backend_, spec, on_delta, cancelled);
    if (!result.ok()) {
      int status = StatusFor(result.status());
      requests_.WithLabels({"chat", std::to_string(status)}).Increment();
      if (spec.options.stream) {
        ApiError e{status, std::string(result.status().message()), status == 503 ? "server_error" : "server_error",
                   std::nullopt, std::nullopt};
        responder->SendEvent(ErrorBody(e));
        responder->Finish();
      } else {
        responder->SendError(status, std::string(result.status().message()));
      }
      return;
    }
    if (result->finish_reason == "cancelled") {
      requests_.WithLabels({"chat", "499"}).Increment();
      responder->Finish();
      return;
    }
    requests_.WithLabels({"chat", "200"}).Increment();
    prompt_tokens_.Get().Increment(static_cast<double>(result->prompt_tokens));
    generated_tokens_.Get().Increment(static_cast<double>(result->completion_tokens));
    if (result->completion_tokens > 0) ttft_.Get().Observe(result->ttft_ms / 1000.0);
    if (spec.options.stream) {
      responder->SendEvent(chunk(json::object(), result->finish_reason, nullptr).dump());
      if (spec.options.include_usage) {
        json u = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model_.id()},
                  {"system_fingerprint", nullptr}, {"choices", json::array()}, {"usage", UsageJson(*result)}};
        if (timing_.load()) u["timing"] = TimingJson(*result);
        responder->SendEvent(u.dump());
      }
      responder->SendEvent("[DONE]");
      responder->Finish();
      return;
    }
    json message = {{"role", "assistant"}, {"content", result->content}};
    if (!result->reasoning.empty()) message["reasoning_content"] = result->reasoning;
    if (!result->tool_calls.empty()) {
      json calls = json::array();
      for (const auto& c : result->tool_calls) calls.push_back(c.ToJson());
      message["tool_calls"] = calls;
      if (result->content.empty()) message["content"] = nullptr;
    }
    json body = {{"id", id},
                 {"object", "chat.completion"},
                 {"created", created},
                 {"model", model_.id()},
                 {"system_fingerprint", nullptr},
                 {"choices", json::array({{{"index", 0},
                                           {"message", message},
                                           {"logprobs", spec.options.logprobs ? LogprobsJson(result->logprobs) : json(nullptr)},
                                           {"finish_reason", result->finish_reason}}})},
                 {"usage", UsageJson(*result)}};
    if (timing_.load()) body["timing"] = TimingJson(*result);
    responder->SendJson(200, body.dump());
  });
}

void OpenAiApi::Completions(const http::Request& request, http::ResponderPtr responder) {
  auto fail = [&](const ApiError& e) {
    requests_.WithLabels({"completions", std::to_string(e.status)}).Increment();
    responder->SendJson(e.status, ErrorBody(e));
  };
  auto parsed = ParseCompletionRequest(request.body, model_.generation_defaults());
  if (auto* e = std::get_if<ApiError>(&parsed)) return fail(*e);
  std::string echo;
  auto planned = PlanCompletion(model_, std::get<CompletionRequest>(parsed), NewRequestId("cmpl-"), &echo);
  if (auto* e = std::get_if<ApiError>(&planned)) return fail(*e);
  if (!backend_.Admit()) return fail(QueueFullError());
  GenerationSpec spec = std::move(std::get<GenerationSpec>(planned));
  Launch(responder, [this, responder, spec = std::move(spec), echo](const std::atomic<bool>& cancelled) {
    const std::string id = spec.request_id;
    const int64_t created = Now();
    size_t text_offset = echo.size();
    auto chunk = [&](const std::string& text, json finish, json logprobs = nullptr) {
      json c = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model_.id()},
                {"system_fingerprint", nullptr},
                {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}}})}};
      if (spec.options.include_usage) c["usage"] = nullptr;
      return c;
    };
    if (spec.options.stream) {
      responder->StartEventStream();
      if (!echo.empty()) responder->SendEvent(chunk(echo, nullptr).dump());
    }
    auto on_delta = [&](const TextDelta& d) {
      if (!spec.options.stream) return !responder->ClientGone();
      if (d.content.empty() && d.logprobs.empty()) return true;
      json logprobs = spec.options.logprobs ? CompletionLogprobsJson(d.logprobs, &text_offset) : json(nullptr);
      return responder->SendEvent(chunk(d.content, nullptr, logprobs).dump());
    };
    auto result = RunGeneration(model_, backend_, spec, on_delta, cancelled);
    if (!result.ok()) {
      int status = StatusFor(result.status());
      requests_.WithLabels({"completions", std::to_string(status)}).Increment();
      if (spec.options.stream) {
        responder->SendEvent(ErrorBody({status, std::string(result.status().message()), "server_error", std::nullopt, std::nullopt}));
        responder->Finish();
      } else {
        responder->SendError(status, std::string(result.status().message()));
      }
      return;
    }
    if (result->finish_reason == "cancelled") {
      requests_.WithLabels({"completions", "499"}).Increment();
      responder->Finish();
      return;
    }
    requests_.WithLabels({"completions", "200"}).Increment();
    prompt_tokens_.Get().Increment(static_cast<double>(result->prompt_tokens));
    generated_tokens_.Get().Increment(static_cast<double>(result->completion_tokens));
    if (result->completion_tokens > 0) ttft_.Get().Observe(result->ttft_ms / 1000.0);
    if (spec.options.stream) {
      responder->SendEvent(chunk("", result->finish_reason).dump());
      if (spec.options.include_usage) {
        responder->SendEvent(json({{"id", id}, {"object", "text_completion"}, {"created", created},
                                   {"model", model_.id()}, {"choices", json::array()}, {"usage", UsageJson(*result)}})
                                 .dump());
      }
      responder->SendEvent("[DONE]");
      responder->Finish();
      return;
    }
    json body = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model_.id()},
                 {"system_fingerprint", nullptr},
                 {"choices", json::array({{{"index", 0}, {"text", echo + result->content},
                                           {"logprobs", spec.options.logprobs
                                                            ? CompletionLogprobsJson(result->logprobs, &text_offset)
                                                            : json(nullptr)},
                                           {"finish_reason", result->finish_reason}}})},
                 {"usage", UsageJson(*result)}};
    if (timing_.load()) body["timing"] = TimingJson(*result);
    responder->SendJson(200, body.dump());
  });
}

void OpenAiApi::Models(http::ResponderPtr responder) {
  json body = {{"object", "list"},
               {"data", json::array({{{"id", model_.id()},
                                      {"object", "model"},
                                      {"created", 0},
                                      {"owned_by", "krasis"},
                                      {"max_model_len", model_.context_length()}}})}};
  responder->SendJson(200, body.dump());
}

void OpenAiApi::Health(http::ResponderPtr responder) {
  auto stats = backend_.DecodeStats();
  if (stats.empty()) {
    responder->SendJson(503, json({{"status", "unavailable"}, {"reason", "no decode worker answers"}}).dump());
    return;
  }
  responder->SendJson(200, json({{"status", "ok"}, {"model", model_.id()}, {"decode_workers", stats.size()}}).dump());
}

void OpenAiApi::Metrics(http::ResponderPtr responder) {
  for (const auto& s : backend_.DecodeStats()) {
    double used = s.kv_blocks_total() > 0 ? static_cast<double>(s.kv_blocks_used()) / s.kv_blocks_total() : 0.0;
    kv_used_.WithLabels({s.model_id()}).Set(used);
  }
  responder->Send(200, "text/plain; version=0.0.4; charset=utf-8", metrics_.Render());
}

void OpenAiApi::Timing(const http::Request& request, http::ResponderPtr responder) {
  json body = json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("enabled") || !body["enabled"].is_boolean()) {
    responder->SendJson(400, ErrorBody({400, "expected {\"enabled\": true|false}", "invalid_request_error", "enabled",
                                        std::nullopt}));
    return;
  }
  timing_.store(body["enabled"].get<bool>());
  responder->SendJson(200, json({{"enabled", timing_.load()}}).dump());
}

}  // namespace krasis::gateway
