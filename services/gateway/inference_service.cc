// gRPC Inference service (see inference_service.h).
#include "services/gateway/inference_service.h"

#include <chrono>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "common/status.h"
#include "services/gateway/generation.h"
#include "services/gateway/request_plan.h"

namespace krasis::gateway {

namespace {

using ojson = nlohmann::ordered_json;

grpc::Status ToGrpc(const ApiError& e) {
  grpc::StatusCode code;
  switch (e.status) {
    case 401: code = grpc::StatusCode::UNAUTHENTICATED; break;
    case 404: code = grpc::StatusCode::NOT_FOUND; break;
    case 429: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case 503: code = grpc::StatusCode::UNAVAILABLE; break;
    default: code = e.status >= 500 ? grpc::StatusCode::INTERNAL : grpc::StatusCode::INVALID_ARGUMENT;
  }
  return grpc::Status(code, e.code ? StrCat(*e.code, ": ", e.message) : e.message);
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

ojson StructJson(const google::protobuf::Struct& s) {
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(s, &text).ok()) return ojson::object();
  return ojson::parse(text, nullptr, false);
}

// Sampling fields common to both requests (same field names in both protos).
template <typename Request>
void SamplingJson(const Request& r, ojson& j) {
  if (r.has_temperature()) j["temperature"] = r.temperature();
  if (r.has_top_p()) j["top_p"] = r.top_p();
  if (r.has_top_k()) j["top_k"] = r.top_k();
  if (r.has_min_p()) j["min_p"] = r.min_p();
  if (r.has_presence_penalty()) j["presence_penalty"] = r.presence_penalty();
  if (r.has_frequency_penalty()) j["frequency_penalty"] = r.frequency_penalty();
  if (r.has_repetition_penalty()) j["repetition_penalty"] = r.repetition_penalty();
  if (!r.logit_bias().empty()) {
    ojson bias = ojson::object();
    for (const auto& [token, value] : r.logit_bias()) bias[std::to_string(token)] = value;
    j["logit_bias"] = bias;
  }
  if (r.has_seed()) j["seed"] = r.seed();
  if (r.has_max_tokens()) j["max_tokens"] = r.max_tokens();
  if (r.n() != 0) j["n"] = r.n();
  if (!r.stop().empty()) j["stop"] = std::vector<std::string>(r.stop().begin(), r.stop().end());
  if (!r.stop_token_ids().empty()) {
    j["stop_token_ids"] = std::vector<int32_t>(r.stop_token_ids().begin(), r.stop_token_ids().end());
  }
  if (r.min_tokens() != 0) j["min_tokens"] = r.min_tokens();
  if (r.ignore_eos()) j["ignore_eos"] = true;
  if (r.has_skip_special_tokens()) j["skip_special_tokens"] = r.skip_special_tokens();
  if (r.include_stop_str_in_output()) j["include_stop_str_in_output"] = true;
  if (!r.user().empty()) j["user"] = r.user();
  j["stream"] = true;
  j["stream_options"] = {{"include_usage", r.stream_options().include_usage()}};
}

ojson MessageJson(const v1::ChatMessage& m) {
  ojson j = {{"role", m.role()}};
  switch (m.content_case()) {
    case v1::ChatMessage::kText: j["content"] = m.text(); break;
    case v1::ChatMessage::kParts: {
      ojson parts = ojson::array();
      for (const auto& p : m.parts().parts()) parts.push_back({{"type", p.type()}, {"text", p.text()}});
      j["content"] = parts;
      break;
    }
    default: j["content"] = nullptr;
  }
  if (!m.name().empty()) j["name"] = m.name();
  if (!m.tool_calls().empty()) {
    ojson calls = ojson::array();
    for (const auto& c : m.tool_calls()) {
      calls.push_back({{"id", c.id()},
                       {"type", c.type().empty() ? "function" : c.type()},
                       {"function", {{"name", c.function().name()}, {"arguments", c.function().arguments()}}}});
    }
    j["tool_calls"] = calls;
  }
  if (!m.tool_call_id().empty()) j["tool_call_id"] = m.tool_call_id();
  if (m.has_reasoning_content()) j["reasoning_content"] = m.reasoning_content();
  return j;
}

std::variant<ojson, ApiError> ToolsJson(const google::protobuf::RepeatedPtrField<v1::Tool>& tools) {
  ojson out = ojson::array();
  for (int i = 0; i < tools.size(); ++i) {
    const auto& t = tools[i];
    ojson fn = {{"name", t.function().name()}};
    if (!t.function().description().empty()) fn["description"] = t.function().description();
    if (!t.function().parameters().empty()) {
      ojson params = ojson::parse(t.function().parameters(), nullptr, false);
      if (params.is_discarded()) {
        return ApiError{400, StrCat("tools[", i, "].function.parameters is not valid JSON"), "invalid_request_error",
                        StrCat("tools[", i, "].function.parameters"), std::nullopt};
      }
      fn["parameters"] = params;
    }
    if (t.function().has_strict()) fn["strict"] = t.function().strict();
    out.push_back({{"type", t.type().empty() ? "function" : t.type()}, {"function", fn}});
  }
  return out;
}

v1::FinishReason FinishReasonOf(const std::string& reason) {
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  if (reason == "tool_calls") return v1::FINISH_REASON_TOOL_CALLS;
  if (reason == "cancelled") return v1::FINISH_REASON_CANCELLED;
  return v1::FINISH_REASON_STOP;
}

void FillUsage(const GenerationResult& r, v1::Usage* u) {
  u->set_prompt_tokens(static_cast<int32_t>(r.prompt_tokens));
  u->set_completion_tokens(static_cast<int32_t>(r.completion_tokens));
  u->set_total_tokens(static_cast<int32_t>(r.prompt_tokens + r.completion_tokens));
  u->set_cached_tokens(static_cast<int32_t>(r.cached_tokens));
}

void FillLogprobs(const std::vector<TokenLogprobs>& lps, google::protobuf::RepeatedPtrField<v1::TokenLogprob>* out) {
  for (const auto& lp : lps) {
    auto* t = out->Add();
    t->set_token(lp.token);
    t->set_token_bytes(lp.token);
    t->set_logprob(lp.logprob);
    for (const auto& [token, p] : lp.top) {
      auto* top = t->add_top_logprobs();
      top->set_token(token);
      top->set_token_bytes(token);
      top->set_logprob(p);
    }
  }
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The fields every chunk of one stream shares.
template <typename Chunk>
Chunk StreamHeader(const std::string& id, const char* object, const std::string& model) {
  Chunk c;
  c.set_id(id);
  c.set_object(object);
  c.set_created(Now());
  c.set_model(model);
  return c;
}

// The end of a generation stream: the error, or the chunk carrying the finish
// reason (`last`, choice 0) and, when asked, the usage-only chunk.
template <typename Chunk>
grpc::Status FinishStream(const absl::StatusOr<GenerationResult>& result, Chunk last, const Chunk& header,
                          bool include_usage, grpc::ServerWriter<Chunk>* writer) {
  if (!result.ok()) return ToGrpc(result.status());
  if (result->finish_reason == "cancelled") return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  last.mutable_choices(0)->set_finish_reason(FinishReasonOf(result->finish_reason));
  writer->Write(last);
  if (include_usage) {
    Chunk usage = header;
    FillUsage(*result, usage.mutable_usage());
    writer->Write(usage);
  }
  return grpc::Status::OK;
}

// Sets `cancelled` when the client cancels the call, until destroyed.
class CancelWatch {
 public:
  explicit CancelWatch(grpc::ServerContext* context)
      : thread_([this, context] {
          while (!done_.load()) {
            if (context->IsCancelled()) {
              cancelled_.store(true);
              return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          }
        }) {}
  ~CancelWatch() {
    done_.store(true);
    thread_.join();
  }
  const std::atomic<bool>& cancelled() const { return cancelled_; }
  void Cancel() { cancelled_.store(true); }

 private:
  std::atomic<bool> done_{false}, cancelled_{false};
  std::thread thread_;
};

// Holds an admitted slot of the backend.
struct Admission {
  explicit Admission(Backend& b) : backend(b) {}
  ~Admission() { backend.Release(); }
  Backend& backend;
};

}  // namespace

std::variant<ojson, ApiError> ChatRequestJson(const v1::ChatCompletionRequest& r) {
  ojson j = {{"model", r.model()}};
  ojson messages = ojson::array();
  for (const auto& m : r.messages()) messages.push_back(MessageJson(m));
  j["messages"] = messages;
  SamplingJson(r, j);
  if (r.has_max_completion_tokens()) j["max_completion_tokens"] = r.max_completion_tokens();
  if (r.logprobs()) j["logprobs"] = true;
  if (r.has_top_logprobs()) j["top_logprobs"] = r.top_logprobs();
  if (!r.tools().empty()) {
    auto tools = ToolsJson(r.tools());
    if (auto* e = std::get_if<ApiError>(&tools)) return *e;
    j["tools"] = std::get<ojson>(tools);
  }
  if (r.has_tool_choice()) {
    if (r.tool_choice().has_function_name()) {
      j["tool_choice"] = {{"type", "function"}, {"function", {{"name", r.tool_choice().function_name()}}}};
    } else {
      switch (r.tool_choice().mode()) {
        case v1::TOOL_CHOICE_MODE_NONE: j["tool_choice"] = "none"; break;
        case v1::TOOL_CHOICE_MODE_REQUIRED: j["tool_choice"] = "required"; break;
        case v1::TOOL_CHOICE_MODE_AUTO: j["tool_choice"] = "auto"; break;
        default: break;
      }
    }
  }
  if (r.has_parallel_tool_calls()) j["parallel_tool_calls"] = r.parallel_tool_calls();
  if (r.has_chat_template_kwargs()) j["chat_template_kwargs"] = StructJson(r.chat_template_kwargs());
  if (r.has_add_generation_prompt()) j["add_generation_prompt"] = r.add_generation_prompt();
  if (r.continue_final_message()) j["continue_final_message"] = true;
  return j;
}

ojson CompletionRequestJson(const v1::CompletionRequest& r) {
  ojson j = {{"model", r.model()}};
  if (r.prompt_size() == 1 && r.prompt(0).has_text()) {
    j["prompt"] = r.prompt(0).text();
  } else if (r.prompt_size() == 1 && r.prompt(0).has_token_ids()) {
    j["prompt"] = std::vector<int32_t>(r.prompt(0).token_ids().ids().begin(), r.prompt(0).token_ids().ids().end());
  } else if (r.prompt_size() > 1) {
    ojson batch = ojson::array();  // a batch of prompts: the parser says what it accepts
    for (const auto& p : r.prompt()) {
      if (p.has_text()) batch.push_back(p.text());
      else batch.push_back(std::vector<int32_t>(p.token_ids().ids().begin(), p.token_ids().ids().end()));
    }
    j["prompt"] = batch;
  }
  SamplingJson(r, j);
  if (r.has_logprobs()) j["logprobs"] = r.logprobs();
  if (r.echo()) j["echo"] = true;
  if (!r.suffix().empty()) j["suffix"] = r.suffix();
  return j;
}

grpc::Status InferenceService::ChatCompletion(grpc::ServerContext* context, const v1::ChatCompletionRequest* request,
                                              grpc::ServerWriter<v1::ChatCompletionChunk>* writer) {
  auto body = ChatRequestJson(*request);
  if (auto* e = std::get_if<ApiError>(&body)) return ToGrpc(*e);
  auto parsed = ParseChatRequest(std::get<ojson>(body).dump(), model_.generation_defaults());
  if (auto* e = std::get_if<ApiError>(&parsed)) return ToGrpc(*e);
  auto planned = PlanChat(model_, std::get<ChatRequest>(parsed),
                          request->request_id().empty() ? NewRequestId("chatcmpl-") : request->request_id());
  if (auto* e = std::get_if<ApiError>(&planned)) return ToGrpc(*e);
  if (!backend_.Admit()) return ToGrpc(QueueFullError());
  Admission admission(backend_);
  const GenerationSpec& spec = std::get<GenerationSpec>(planned);

  const auto header = StreamHeader<v1::ChatCompletionChunk>(spec.request_id, "chat.completion.chunk", model_.id());
  auto chunk = [&] {
    v1::ChatCompletionChunk c = header;
    c.add_choices()->set_index(0);
    return c;
  };
  CancelWatch watch(context);
  {
    v1::ChatCompletionChunk first = chunk();
    first.mutable_choices(0)->mutable_delta()->set_role("assistant");
    first.mutable_choices(0)->mutable_delta()->set_content("");
    if (!writer->Write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  auto on_delta = [&](const TextDelta& d) {
    v1::ChatCompletionChunk c = chunk();
    v1::ChatDelta* delta = c.mutable_choices(0)->mutable_delta();
    if (!d.content.empty()) delta->set_content(d.content);
    if (!d.reasoning.empty()) delta->set_reasoning_content(d.reasoning);
    for (const auto& t : d.tool_calls) {
      auto* tc = delta->add_tool_calls();
      tc->set_index(t.index);
      if (t.is_first()) {
        tc->set_id(t.id);
        tc->set_type("function");
        tc->set_function_name(t.name);
      }
      tc->set_function_arguments(t.arguments);
    }
    if (spec.options.logprobs) FillLogprobs(d.logprobs, c.mutable_choices(0)->mutable_logprobs()->mutable_content());
    if (!delta->has_content() && !delta->has_reasoning_content() && delta->tool_calls().empty() &&
        !c.choices(0).has_logprobs()) {
      return true;
    }
    if (writer->Write(c)) return true;
    watch.Cancel();
    return false;
  };
  auto result = RunGeneration(model_, backend_, spec, on_delta, watch.cancelled());
  v1::ChatCompletionChunk last = chunk();
  last.mutable_choices(0)->mutable_delta();
  return FinishStream(result, std::move(last), header, spec.options.include_usage, writer);
}

grpc::Status InferenceService::Completion(grpc::ServerContext* context, const v1::CompletionRequest* request,
                                          grpc::ServerWriter<v1::CompletionChunk>* writer) {
  auto parsed = ParseCompletionRequest(CompletionRequestJson(*request).dump(), model_.generation_defaults());
  if (auto* e = std::get_if<ApiError>(&parsed)) return ToGrpc(*e);
  std::string echo;
  auto planned = PlanCompletion(model_, std::get<CompletionRequest>(parsed),
                                request->request_id().empty() ? NewRequestId("cmpl-") : request->request_id(), &echo);
  if (auto* e = std::get_if<ApiError>(&planned)) return ToGrpc(*e);
  if (!backend_.Admit()) return ToGrpc(QueueFullError());
  Admission admission(backend_);
  const GenerationSpec& spec = std::get<GenerationSpec>(planned);

  const auto header = StreamHeader<v1::CompletionChunk>(spec.request_id, "text_completion", model_.id());
  auto chunk = [&](const std::string& text) {
    v1::CompletionChunk c = header;
    auto* choice = c.add_choices();
    choice->set_index(0);
    choice->set_text(text);
    return c;
  };
  CancelWatch watch(context);
  if (!echo.empty() && !writer->Write(chunk(echo))) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  int32_t text_offset = static_cast<int32_t>(echo.size());
  auto on_delta = [&](const TextDelta& d) {
    if (d.content.empty() && d.logprobs.empty()) return true;
    v1::CompletionChunk c = chunk(d.content);
    if (spec.options.logprobs) {
      v1::CompletionLogprobs* lp = c.mutable_choices(0)->mutable_logprobs();
      FillLogprobs(d.logprobs, lp->mutable_content());
      for (const auto& t : d.logprobs) {
        lp->add_text_offset(text_offset);
        text_offset += static_cast<int32_t>(t.token.size());
      }
    }
    if (writer->Write(c)) return true;
    watch.Cancel();
    return false;
  };
  auto result = RunGeneration(model_, backend_, spec, on_delta, watch.cancelled());
  return FinishStream(result, chunk(""), header, spec.options.include_usage, writer);
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                        v1::TokenizeResponse* response) {
  if (request->model() != model_.id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, StrCat("model_not_found: The model '", request->model(),
                                                             "' does not exist"));
  }
  std::vector<int32_t> tokens;
  if (request->has_chat()) {
    v1::ChatCompletionRequest chat;
    chat.set_model(request->model());
    *chat.mutable_messages() = request->chat().messages();
    *chat.mutable_tools() = request->chat().tools();
    if (request->chat().has_chat_template_kwargs()) {
      *chat.mutable_chat_template_kwargs() = request->chat().chat_template_kwargs();
    }
    auto body = ChatRequestJson(chat);
    if (auto* e = std::get_if<ApiError>(&body)) return ToGrpc(*e);
    auto parsed = ParseChatRequest(std::get<ojson>(body).dump(), nlohmann::json::object());
    if (auto* e = std::get_if<ApiError>(&parsed)) return ToGrpc(*e);
    const ChatRequest& req = std::get<ChatRequest>(parsed);
    auto text = model_.RenderChat(req.messages, req.tools, req.chat_template_kwargs);
    if (!text.ok()) return ToGrpc(text.status());
    tokens = model_.tokenizer().Encode(*text);
  } else if (request->has_prompt()) {
    tokens = model_.tokenizer().Encode(request->prompt());
  } else {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "give either prompt or chat to tokenize");
  }
  response->mutable_tokens()->Assign(tokens.begin(), tokens.end());
  response->set_count(static_cast<int32_t>(tokens.size()));
  response->set_max_model_len(static_cast<int32_t>(model_.context_length()));
  if (request->return_token_strs()) {
    for (int32_t t : tokens) response->add_token_strs(model_.tokenizer().Decode(std::vector<int32_t>{t}));
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                                          v1::DetokenizeResponse* response) {
  if (request->model() != model_.id()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, StrCat("model_not_found: The model '", request->model(),
                                                             "' does not exist"));
  }
  for (int32_t t : request->tokens()) {
    if (t < 0 || t >= model_.config().vocab_size) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          StrCat("token id ", t, " is out of the vocabulary (", model_.config().vocab_size, ")"));
    }
  }
  std::vector<int32_t> ids(request->tokens().begin(), request->tokens().end());
  response->set_text(model_.tokenizer().Decode(ids, request->has_skip_special_tokens() && request->skip_special_tokens()));
  return grpc::Status::OK;
}

grpc::Status InferenceService::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* response) {
  response->set_object("list");
  v1::Model* m = response->add_data();
  m->set_id(model_.id());
  m->set_object("model");
  m->set_owned_by("krasis");
  m->set_max_model_len(static_cast<int32_t>(model_.context_length()));
  v1::ModelInfo* info = m->mutable_info();
  info->set_id(model_.id());
  info->set_model_type(model_.config().model_type);
  if (!model_.config().architectures.empty()) info->set_architecture(model_.config().architectures.front());
  info->set_num_layers(static_cast<int32_t>(model_.config().num_hidden_layers));
  info->set_num_experts(static_cast<int32_t>(model_.config().num_experts));
  info->set_experts_per_token(static_cast<int32_t>(model_.config().num_experts_per_tok.value_or(0)));
  info->set_context_length(static_cast<int32_t>(model_.context_length()));
  return grpc::Status::OK;
}

}  // namespace krasis::gateway
