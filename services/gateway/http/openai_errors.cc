// OpenAI-shaped error bodies and status mappings (see openai_errors.h).
#include "services/gateway/http/openai_errors.h"

#include <utility>

#include "nlohmann/json.hpp"

namespace krasis::http {

std::string OpenAiErrorJson(std::string message, std::string type,
                            std::optional<std::string> param,
                            std::optional<std::string> code) {
  // ordered_json keeps OpenAI's key order (message, type, param, code).
  nlohmann::ordered_json error;
  error["message"] = std::move(message);
  error["type"] = std::move(type);
  error["param"] = param ? nlohmann::ordered_json(std::move(*param)) : nullptr;
  error["code"] = code ? nlohmann::ordered_json(std::move(*code)) : nullptr;
  nlohmann::ordered_json body;
  body["error"] = std::move(error);
  // Replace invalid UTF-8 instead of throwing: messages may quote user input.
  return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string_view OpenAiErrorType(int http_status) {
  if (http_status == 429) return "rate_limit_error";
  if (http_status == 503) return "service_unavailable_error";
  if (http_status >= 500) return "server_error";
  return "invalid_request_error";
}

std::optional<std::string> DefaultOpenAiErrorCode(int http_status) {
  switch (http_status) {
    case 401: return "invalid_api_key";
    case 429: return "rate_limit_exceeded";
    default: return std::nullopt;
  }
}

std::string OpenAiErrorJsonForStatus(int http_status, std::string message,
                                     std::optional<std::string> param,
                                     std::optional<std::string> code) {
  if (!code) code = DefaultOpenAiErrorCode(http_status);
  return OpenAiErrorJson(std::move(message), std::string(OpenAiErrorType(http_status)),
                         std::move(param), std::move(code));
}

int HttpStatusFromStatusCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

std::string OpenAiErrorJsonFromStatus(const absl::Status& status,
                                      std::optional<std::string> param) {
  int http_status = HttpStatusFromStatusCode(status.code());
  std::string message(status.message().data(), status.message().size());
  if (message.empty()) message = std::string(absl::StatusCodeToString(status.code()));
  return OpenAiErrorJsonForStatus(http_status, std::move(message), std::move(param));
}

}  // namespace krasis::http
