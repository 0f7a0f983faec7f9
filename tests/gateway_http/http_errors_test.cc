// OpenAI-shaped error bodies, the status mappings, and the small HTTP helpers
// (header lists, query parameters, reason phrases, head serialization).
#include "services/gateway/http/openai_errors.h"

#include <gtest/gtest.h>

#include "services/gateway/http/http_types.h"

namespace krasis::http {
namespace {

TEST(OpenAiErrorsTest, ExactJsonShape) {
  EXPECT_EQ(OpenAiErrorJson("Incorrect API key provided.", "invalid_request_error", std::nullopt,
                            "invalid_api_key"),
            R"({"error":{"message":"Incorrect API key provided.","type":"invalid_request_error",)"
            R"("param":null,"code":"invalid_api_key"}})");
  EXPECT_EQ(OpenAiErrorJson("bad \"temperature\"\n", "invalid_request_error", "temperature"),
            R"({"error":{"message":"bad \"temperature\"\n","type":"invalid_request_error",)"
            R"("param":"temperature","code":null}})");
  // Invalid UTF-8 in a message does not throw.
  EXPECT_FALSE(OpenAiErrorJson("\xff\xfe", "server_error").empty());
}

TEST(OpenAiErrorsTest, TypesAndCodesByStatus) {
  EXPECT_EQ(OpenAiErrorType(400), "invalid_request_error");
  EXPECT_EQ(OpenAiErrorType(401), "invalid_request_error");
  EXPECT_EQ(OpenAiErrorType(404), "invalid_request_error");
  EXPECT_EQ(OpenAiErrorType(413), "invalid_request_error");
  EXPECT_EQ(OpenAiErrorType(429), "rate_limit_error");
  EXPECT_EQ(OpenAiErrorType(500), "server_error");
  EXPECT_EQ(OpenAiErrorType(503), "service_unavailable_error");
  EXPECT_EQ(DefaultOpenAiErrorCode(401), "invalid_api_key");
  EXPECT_EQ(DefaultOpenAiErrorCode(429), "rate_limit_exceeded");
  EXPECT_EQ(DefaultOpenAiErrorCode(400), std::nullopt);
  EXPECT_EQ(OpenAiErrorJsonForStatus(429, "Slow down."),
            R"({"error":{"message":"Slow down.","type":"rate_limit_error","param":null,)"
            R"("code":"rate_limit_exceeded"}})");
}

TEST(OpenAiErrorsTest, AbslStatusMapping) {
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kOutOfRange), 400);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kFailedPrecondition), 503);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFromStatusCode(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(OpenAiErrorJsonFromStatus(absl::InvalidArgumentError("max_tokens must be > 0"),
                                      "max_tokens"),
            R"({"error":{"message":"max_tokens must be > 0","type":"invalid_request_error",)"
            R"("param":"max_tokens","code":null}})");
  EXPECT_EQ(OpenAiErrorJsonFromStatus(absl::UnavailableError("")),
            R"({"error":{"message":"UNAVAILABLE","type":"service_unavailable_error",)"
            R"("param":null,"code":null}})");
}

TEST(HttpTypesTest, HeadersAreCaseInsensitive) {
  Headers headers{{"Content-Type", "text/plain"}};
  headers.Add("X-A", "1");
  headers.Add("x-a", "2");
  EXPECT_EQ(headers.Get("content-type"), "text/plain");
  EXPECT_EQ(headers.Get("X-A"), "1");
  headers.Set("X-a", "3");
  EXPECT_EQ(headers.Get("x-A"), "3");
  EXPECT_EQ(headers.size(), 2u);
  headers.Remove("CONTENT-TYPE");
  EXPECT_FALSE(headers.Has("Content-Type"));
}

TEST(HttpTypesTest, QueryParamsAndDecoding) {
  Request request;
  request.query = "a=1&b=x%2Fy+z&flag&a=2&bad=%zz";
  EXPECT_EQ(request.QueryParam("a"), "1");
  EXPECT_EQ(request.QueryParam("b"), "x/y z");
  EXPECT_EQ(request.QueryParam("flag"), "");
  EXPECT_EQ(request.QueryParam("bad"), "%zz");
  EXPECT_EQ(request.QueryParam("missing"), std::nullopt);
  EXPECT_EQ(PercentDecode("100%", false), "100%");
  EXPECT_EQ(PercentDecode("a+b", false), "a+b");
}

TEST(HttpTypesTest, ResponseHeadDropsUnsafeFields) {
  Headers headers;
  headers.Add("Content-Type", "text/plain");
  headers.Add("X-Evil", "a\r\nSet-Cookie: x");
  headers.Add("Bad Name", "v");
  EXPECT_EQ(SerializeResponseHead(404, headers),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n");
  EXPECT_EQ(StatusReason(413), "Payload Too Large");
  EXPECT_EQ(StatusReason(799), "Unknown");
}

}  // namespace
}  // namespace krasis::http
