// OpenAI-shaped error bodies and the status mappings the gateway uses.
//
// Every error the gateway returns over HTTP has OpenAI's shape, so SDKs and IDE
// plugins show the message and pick the right exception class:
//   {"error":{"message":"...","type":"invalid_request_error","param":null,"code":null}}
// The type strings follow OpenAI's documented error codes: invalid_request_error
// for 4xx request problems (401 adds code "invalid_api_key"), rate_limit_error
// with code "rate_limit_exceeded" for 429, server_error for 500, and
// service_unavailable_error for 503.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace krasis::http {

// Content type of every JSON body the gateway sends.
inline constexpr std::string_view kJsonContentType = "application/json";

// {"error":{"message":..,"type":..,"param":..,"code":..}} with the keys in that
// order; an absent param or code is JSON null. Strings are JSON-escaped.
std::string OpenAiErrorJson(std::string message, std::string type,
                            std::optional<std::string> param = std::nullopt,
                            std::optional<std::string> code = std::nullopt);

// The OpenAI error type for an HTTP status: "invalid_request_error" for 4xx
// (but "rate_limit_error" for 429), "service_unavailable_error" for 503 and
// "server_error" for the other 5xx.
std::string_view OpenAiErrorType(int http_status);

// The default error code for an HTTP status: "invalid_api_key" for 401,
// "rate_limit_exceeded" for 429, none otherwise.
std::optional<std::string> DefaultOpenAiErrorCode(int http_status);

// OpenAiErrorJson with the type (and, unless given, the code) picked from the
// HTTP status.
std::string OpenAiErrorJsonForStatus(int http_status, std::string message,
                                     std::optional<std::string> param = std::nullopt,
                                     std::optional<std::string> code = std::nullopt);

// The HTTP status for an absl::Status code, following the project's conventions:
// OK 200, InvalidArgument/OutOfRange 400, Unauthenticated 401, PermissionDenied
// 403, NotFound 404, AlreadyExists/Aborted 409, ResourceExhausted 429 (full
// queue or cache: retry later), Cancelled 499 (the client went away),
// Unimplemented 501, FailedPrecondition ("model not loaded") and Unavailable 503,
// DeadlineExceeded 504, everything else 500.
int HttpStatusFromStatusCode(absl::StatusCode code);

// The OpenAI error body for a non-OK status: its message, the type of
// HttpStatusFromStatusCode(status.code()).
std::string OpenAiErrorJsonFromStatus(const absl::Status& status,
                                      std::optional<std::string> param = std::nullopt);

}  // namespace krasis::http
