// OpenAI request parsing and validation (see openai_request.h). Ranges follow
// OpenAI's API reference; vLLM's extensions (top_k, min_p, repetition_penalty,
// min_tokens, ignore_eos, chat_template_kwargs) are accepted too.
#include "services/gateway/openai_request.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace krasis::gateway {

namespace {

using json = nlohmann::ordered_json;

ApiError Bad(std::string message, std::string param) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::nullopt};
}

// Reads optional number `key` into `out` if present, checking [lo, hi].
std::optional<ApiError> Number(const json& body, const char* key, double lo, double hi,
                               std::optional<double>* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const json& v = body[key];
  if (!v.is_number()) return Bad(StrCat("'", key, "' must be a number"), key);
  double d = v.get<double>();
  if (!std::isfinite(d) || d < lo || d > hi) {
    return Bad(StrCat(d, " is not a valid value for '", key, "': it must be between ", lo, " and ", hi), key);
  }
  *out = d;
  return std::nullopt;
}

std::optional<ApiError> Integer(const json& body, const char* key, int64_t lo, int64_t hi,
                                std::optional<int64_t>* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const json& v = body[key];
  if (!v.is_number_integer()) return Bad(StrCat("'", key, "' must be an integer"), key);
  int64_t i = v.get<int64_t>();
  if (i < lo || i > hi) {
    return Bad(StrCat(i, " is not a valid value for '", key, "': it must be between ", lo, " and ", hi), key);
  }
  *out = i;
  return std::nullopt;
}

std::optional<ApiError> Boolean(const json& body, const char* key, bool* out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  if (!body[key].is_boolean()) return Bad(StrCat("'", key, "' must be a boolean"), key);
  *out = body[key].get<bool>();
  return std::nullopt;
}

#define KRASIS_CHECK_API(expr) \
  if (auto krasis_api_error_ = (expr)) return *krasis_api_error_

std::optional<ApiError> ParseOptions(const json& body, const nlohmann::json& defaults, bool chat,
                                     GenerationOptions* o) {
  v1::SamplingParams& s = o->sampling;
  std::optional<double> d;
  std::optional<int64_t> i;
  auto def = [&](const char* key) -> std::optional<double> {
    if (defaults.is_object() && defaults.contains(key) && defaults[key].is_number()) return defaults[key].get<double>();
    return std::nullopt;
  };
  KRASIS_CHECK_API(Number(body, "temperature", 0.0, 2.0, &d));
  if (d || def("temperature")) s.set_temperature(static_cast<float>(d ? *d : *def("temperature")));
  d.reset();
  KRASIS_CHECK_API(Number(body, "top_p", 0.0, 1.0, &d));
  if (d && *d == 0.0) return Bad("0 is not a valid value for 'top_p': it must be above 0", "top_p");
  if (d || def("top_p")) s.set_top_p(static_cast<float>(d ? *d : *def("top_p")));
  KRASIS_CHECK_API(Integer(body, "top_k", -1, 1 << 30, &i));
  if (i) s.set_top_k(static_cast<int32_t>(*i));
  else if (def("top_k")) s.set_top_k(static_cast<int32_t>(*def("top_k")));
  d.reset();
  KRASIS_CHECK_API(Number(body, "min_p", 0.0, 1.0, &d));
  if (d) s.set_min_p(static_cast<float>(*d));
  d.reset();
  KRASIS_CHECK_API(Number(body, "presence_penalty", -2.0, 2.0, &d));
  if (d) s.set_presence_penalty(static_cast<float>(*d));
  d.reset();
  KRASIS_CHECK_API(Number(body, "frequency_penalty", -2.0, 2.0, &d));
  if (d) s.set_frequency_penalty(static_cast<float>(*d));
  d.reset();
  KRASIS_CHECK_API(Number(body, "repetition_penalty", 1e-6, 100.0, &d));
  if (d) s.set_repetition_penalty(static_cast<float>(*d));
  i.reset();
  KRASIS_CHECK_API(Integer(body, "seed", INT64_MIN, INT64_MAX, &i));
  if (i) s.set_seed(static_cast<uint64_t>(*i));
  std::optional<int64_t> max_tokens, max_completion;
  KRASIS_CHECK_API(Integer(body, "max_tokens", 1, 1 << 30, &max_tokens));
  KRASIS_CHECK_API(Integer(body, "max_completion_tokens", 1, 1 << 30, &max_completion));
  if (max_completion) s.set_max_tokens(static_cast<int32_t>(*max_completion));
  else if (max_tokens) s.set_max_tokens(static_cast<int32_t>(*max_tokens));
  else if (!chat) s.set_max_tokens(16);  // OpenAI's default for completions
  i.reset();
  KRASIS_CHECK_API(Integer(body, "min_tokens", 0, 1 << 30, &i));
  if (i) s.set_min_tokens(static_cast<int32_t>(*i));
  if (body.contains("stop_token_ids") && !body["stop_token_ids"].is_null()) {  // vLLM's extension
    const json& ids = body["stop_token_ids"];
    if (!ids.is_array()) return Bad("'stop_token_ids' must be an array of token ids", "stop_token_ids");
    for (const auto& x : ids) {
      if (!x.is_number_integer()) return Bad("every entry of 'stop_token_ids' must be a token id", "stop_token_ids");
      s.add_stop_token_ids(static_cast<int32_t>(std::clamp<int64_t>(x.get<int64_t>(), -1, INT32_MAX)));
    }
  }
  bool ignore_eos = false;
  KRASIS_CHECK_API(Boolean(body, "ignore_eos", &ignore_eos));
  s.set_ignore_eos(ignore_eos);
  i.reset();
  KRASIS_CHECK_API(Integer(body, "n", 1, 128, &i));
  if (i && *i != 1) return Bad("only n = 1 is supported", "n");
  KRASIS_CHECK_API(Boolean(body, "stream", &o->stream));
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) return Bad("'stream_options' must be an object", "stream_options");
    if (!o->stream) return Bad("'stream_options' is only allowed when 'stream' is true", "stream_options");
    KRASIS_CHECK_API(Boolean(so, "include_usage", &o->include_usage));
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const json& st = body["stop"];
    if (st.is_string()) {
      o->stop.push_back(st.get<std::string>());
    } else if (st.is_array()) {
      if (st.size() > 4) return Bad("'stop' may hold at most 4 sequences", "stop");
      for (const auto& x : st) {
        if (!x.is_string()) return Bad("every entry of 'stop' must be a string", "stop");
        o->stop.push_back(x.get<std::string>());
      }
    } else {
      return Bad("'stop' must be a string or an array of strings", "stop");
    }
    for (const auto& x : o->stop) {
      if (x.empty()) return Bad("stop sequences must not be empty", "stop");
    }
  }
  if (body.contains("logit_bias") && !body["logit_bias"].is_null()) {
    const json& lb = body["logit_bias"];
    if (!lb.is_object()) return Bad("'logit_bias' must be an object of token id -> bias", "logit_bias");
    for (auto it = lb.begin(); it != lb.end(); ++it) {
      char* end = nullptr;
      long id = std::strtol(it.key().c_str(), &end, 10);
      if (it.key().empty() || *end != '\0' || id < 0 || id > INT32_MAX) {
        return Bad(StrCat("'logit_bias' key '", it.key(), "' is not a token id"), "logit_bias");
      }
      if (!it.value().is_number() || std::fabs(it.value().get<double>()) > 100.0) {
        return Bad("'logit_bias' values must be numbers between -100 and 100", "logit_bias");
      }
      (*s.mutable_logit_bias())[static_cast<int32_t>(id)] = it.value().get<float>();
    }
  }
  if (chat) {
    KRASIS_CHECK_API(Boolean(body, "logprobs", &o->logprobs));
    i.reset();
    KRASIS_CHECK_API(Integer(body, "top_logprobs", 0, 20, &i));
    if (i) {
      if (!o->logprobs) return Bad("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
      o->top_logprobs = static_cast<int32_t>(*i);
    }
  } else if (body.contains("logprobs") && !body["logprobs"].is_null()) {
    i.reset();
    KRASIS_CHECK_API(Integer(body, "logprobs", 0, 20, &i));
    o->logprobs = true;
    o->top_logprobs = static_cast<int32_t>(*i);
  }
  s.set_logprobs(o->logprobs);
  s.set_top_logprobs(o->top_logprobs);
  return std::nullopt;
}

std::optional<ApiError> ParseModel(const json& body, std::string* model) {
  if (!body.contains("model")) return Bad("you must provide a model parameter", "model");
  if (!body["model"].is_string()) return Bad("'model' must be a string", "model");
  *model = body["model"].get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> ParseBody(const std::string& text, json* body) {
  *body = json::parse(text, nullptr, false);
  if (body->is_discarded()) {
    return ApiError{400, "We could not parse the JSON body of your request. The request body must be valid JSON.",
                    "invalid_request_error", std::nullopt, std::nullopt};
  }
  if (!body->is_object()) return Bad("the request body must be a JSON object", "body");
  return std::nullopt;
}

// Text of a message content: a string, or an array of {"type": "text", "text"}.
std::optional<ApiError> ContentText(const json& content, size_t index, json* out) {
  std::string param = StrCat("messages[", index, "].content");
  if (content.is_null()) {
    *out = nullptr;
    return std::nullopt;
  }
  if (content.is_string()) {
    *out = content;
    return std::nullopt;
  }
  if (!content.is_array()) return Bad("message content must be a string or an array of content parts", param);
  std::string text;
  for (size_t p = 0; p < content.size(); ++p) {
    const json& part = content[p];
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return Bad("each content part must be an object with a 'type'", param);
    }
    std::string type = part["type"].get<std::string>();
    if (type != "text") {
      return Bad(StrCat("content parts of type '", type, "' are not supported (this model reads text only)"), param);
    }
    if (!part.contains("text") || !part["text"].is_string()) return Bad("a text part needs a string 'text'", param);
    if (!text.empty()) text += "\n";
    text += part["text"].get<std::string>();
  }
  *out = text;
  return std::nullopt;
}

std::optional<ApiError> ParseTools(const json& body, ChatRequest* r) {
  r->tools = nullptr;
  std::vector<std::string> names;
  if (body.contains("tools") && !body["tools"].is_null()) {
    const json& tools = body["tools"];
    if (!tools.is_array()) return Bad("'tools' must be an array", "tools");
    for (size_t t = 0; t < tools.size(); ++t) {
      const json& tool = tools[t];
      std::string param = StrCat("tools[", t, "]");
      if (!tool.is_object() || tool.value("type", "") != "function" || !tool.contains("function") ||
          !tool["function"].is_object()) {
        return Bad("each tool must be {\"type\": \"function\", \"function\": {...}}", param);
      }
      const json& f = tool["function"];
      if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty()) {
        return Bad("each function needs a non-empty string 'name'", param + ".function.name");
      }
      if (f.contains("parameters") && !f["parameters"].is_object()) {
        return Bad("function 'parameters' must be a JSON Schema object", param + ".function.parameters");
      }
      names.push_back(f["name"].get<std::string>());
    }
    if (!tools.empty()) r->tools = tools;
  }
  if (body.contains("tool_choice") && !body["tool_choice"].is_null()) {
    const json& tc = body["tool_choice"];
    if (tc.is_string()) {
      std::string v = tc.get<std::string>();
      if (v != "none" && v != "auto" && v != "required") {
        return Bad("'tool_choice' must be 'none', 'auto', 'required' or a function", "tool_choice");
      }
      r->tool_choice = v;
    } else if (tc.is_object() && tc.contains("function") && tc["function"].is_object() &&
               tc["function"].contains("name") && tc["function"]["name"].is_string()) {
      std::string name = tc["function"]["name"].get<std::string>();
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        return Bad(StrCat("'tool_choice' names function '", name, "', which is not in 'tools'"), "tool_choice");
      }
      r->tool_choice = name;
    } else {
      return Bad("'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", ...}", "tool_choice");
    }
    if (r->tool_choice != "none" && r->tools.is_null()) {
      return Bad("'tool_choice' is set but no 'tools' were given", "tool_choice");
    }
  }
  // "none": the template still sees no tools, and the output is plain content.
  if (r->tool_choice == "none") r->tools = nullptr;
  return std::nullopt;
}

}  // namespace

std::variant<ChatRequest, ApiError> ParseChatRequest(const std::string& text, const nlohmann::json& defaults) {
  json body;
  ChatRequest r;
  KRASIS_CHECK_API(ParseBody(text, &body));
  KRASIS_CHECK_API(ParseModel(body, &r.model));
  if (!body.contains("messages")) return Bad("'messages' is required", "messages");
  const json& messages = body["messages"];
  if (!messages.is_array() || messages.empty()) return Bad("'messages' must be a non-empty array", "messages");
  r.messages = json::array();
  for (size_t m = 0; m < messages.size(); ++m) {
    const json& msg = messages[m];
    std::string param = StrCat("messages[", m, "]");
    if (!msg.is_object()) return Bad("each message must be an object", param);
    if (!msg.contains("role") || !msg["role"].is_string()) return Bad("each message needs a string 'role'", param + ".role");
    std::string role = msg["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "tool" && role != "developer") {
      return Bad(StrCat("invalid role '", role, "' (expected system, developer, user, assistant or tool)"),
                 param + ".role");
    }
    json out = json::object();
    out["role"] = role == "developer" ? "system" : role;
    json content;
    if (!msg.contains("content") && role != "assistant") return Bad("message content is required", param + ".content");
    KRASIS_CHECK_API(ContentText(msg.value("content", json()), m, &content));
    if (content.is_null() && role != "assistant") return Bad("message content must not be null", param + ".content");
    out["content"] = content.is_null() ? json("") : content;
    if (msg.contains("name")) {
      if (!msg["name"].is_string()) return Bad("'name' must be a string", param + ".name");
      out["name"] = msg["name"];
    }
    if (role == "tool") {
      if (!msg.contains("tool_call_id") || !msg["tool_call_id"].is_string()) {
        return Bad("tool messages need a string 'tool_call_id'", param + ".tool_call_id");
      }
      out["tool_call_id"] = msg["tool_call_id"];
    }
    if (role == "assistant" && msg.contains("reasoning_content") && msg["reasoning_content"].is_string()) {
      out["reasoning_content"] = msg["reasoning_content"];
    }
    if (role == "assistant" && msg.contains("tool_calls") && !msg["tool_calls"].is_null()) {
      const json& calls = msg["tool_calls"];
      if (!calls.is_array()) return Bad("'tool_calls' must be an array", param + ".tool_calls");
      json out_calls = json::array();
      for (const json& c : calls) {
        if (!c.is_object() || !c.contains("function") || !c["function"].is_object() ||
            !c["function"].contains("name") || !c["function"]["name"].is_string()) {
          return Bad("each tool call needs a function with a name", param + ".tool_calls");
        }
        json call = c;
        // Templates expect arguments as an object (transformers and vLLM parse them).
        if (call["function"].contains("arguments") && call["function"]["arguments"].is_string()) {
          json args = json::parse(call["function"]["arguments"].get<std::string>(), nullptr, false);
          if (args.is_discarded()) {
            return Bad("tool call arguments must be a JSON object string", param + ".tool_calls");
          }
          call["function"]["arguments"] = args;
        }
        out_calls.push_back(call);
      }
      out["tool_calls"] = out_calls;
    }
    r.messages.push_back(out);
  }
  KRASIS_CHECK_API(ParseTools(body, &r));
  if (body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()) {
    if (!body["chat_template_kwargs"].is_object()) {
      return Bad("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    }
    r.chat_template_kwargs = body["chat_template_kwargs"];
  }
  if (body.contains("response_format") && !body["response_format"].is_null()) {
    const json& rf = body["response_format"];
    if (!rf.is_object() || rf.value("type", "") != "text") {
      return Bad("only response_format {\"type\": \"text\"} is supported", "response_format");
    }
  }
  KRASIS_CHECK_API(ParseOptions(body, defaults, /*chat=*/true, &r.options));
  return r;
}

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(const std::string& text,
                                                                 const nlohmann::json& defaults) {
  json body;
  CompletionRequest r;
  KRASIS_CHECK_API(ParseBody(text, &body));
  KRASIS_CHECK_API(ParseModel(body, &r.model));
  if (!body.contains("prompt")) return Bad("'prompt' is required", "prompt");
  const json& p = body["prompt"];
  if (p.is_string()) {
    r.prompt_text = p.get<std::string>();
  } else if (p.is_array() && !p.empty() && p.size() == 1 && p[0].is_string()) {
    r.prompt_text = p[0].get<std::string>();
  } else if (p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const json& x) { return x.is_number_integer(); })) {
    for (const auto& x : p) {
      if (x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) return Bad("token ids must be non-negative", "prompt");
      r.prompt_tokens.push_back(x.get<int32_t>());
    }
  } else if (p.is_array() && p.size() == 1 && p[0].is_array() && !p[0].empty() &&
             std::all_of(p[0].begin(), p[0].end(), [](const json& x) { return x.is_number_integer(); })) {
    // A batch of one token-id prompt.
    for (const auto& x : p[0]) {
      if (x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX) return Bad("token ids must be non-negative", "prompt");
      r.prompt_tokens.push_back(x.get<int32_t>());
    }
  } else if (p.is_array() && p.size() > 1 && (p[0].is_string() || p[0].is_array())) {
    return Bad("batched prompts are not supported: send one prompt per request", "prompt");
  } else {
    return Bad("'prompt' must be a string or an array of token ids", "prompt");
  }
  if (r.prompt_text && r.prompt_text->empty()) return Bad("'prompt' must not be empty", "prompt");
  KRASIS_CHECK_API(Boolean(body, "echo", &r.echo));
  if (body.contains("suffix") && !body["suffix"].is_null()) return Bad("'suffix' is not supported", "suffix");
  if (body.contains("best_of") && !body["best_of"].is_null() && body["best_of"] != 1) {
    return Bad("only best_of = 1 is supported", "best_of");
  }
  KRASIS_CHECK_API(ParseOptions(body, defaults, /*chat=*/false, &r.options));
  return r;
}

std::string ErrorBody(const ApiError& e) {
  json j = {{"error",
             {{"message", e.message},
              {"type", e.type},
              {"param", e.param ? json(*e.param) : json(nullptr)},
              {"code", e.code ? json(*e.code) : json(nullptr)}}}};
  return j.dump();
}

}  // namespace krasis::gateway
