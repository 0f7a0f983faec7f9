// CORS (preflight and the allow-origin field on every response) and API keys
// (401 in OpenAI's shape for a missing or wrong key, /health open) for the
// gateway's HTTP server, plus the constant-time key check on its own.
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "services/gateway/http/auth.h"
#include "services/gateway/http/http_server.h"
#include "tests/gateway_http/test_client.h"

namespace krasis::http {
namespace {

using testing::MakeRequest;
using testing::RoundTrip;

void AddRoutes(HttpServer& server) {
  server.Handle("GET", "/health", [](const Request&, ResponderPtr r) {
    r->Send(200, "text/plain", "ok");
  });
  server.Handle("GET", "/v1/models", [](const Request&, ResponderPtr r) {
    r->SendJson(200, R"({"object":"list","data":[]})");
  });
  server.Handle("POST", "/v1/chat/completions", [](const Request&, ResponderPtr r) {
    r->SendJson(200, "{}");
  });
}

TEST(HttpCorsTest, PreflightGets204WithAllowFields) {
  HttpServer server;
  AddRoutes(server);
  ASSERT_TRUE(server.Start().ok());
  auto response = RoundTrip(
      server.port(),
      MakeRequest("OPTIONS", "/v1/chat/completions", "",
                  {"Origin: http://localhost:3000", "Access-Control-Request-Method: POST",
                   "Access-Control-Request-Headers: authorization, content-type, x-stainless-os"}));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 204);
  EXPECT_EQ(response->Header("Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(response->Header("Access-Control-Allow-Methods"), "POST, OPTIONS");
  std::string allow_headers = response->Header("Access-Control-Allow-Headers");
  EXPECT_NE(allow_headers.find("Authorization"), std::string::npos);
  EXPECT_NE(allow_headers.find("Content-Type"), std::string::npos);
  EXPECT_NE(allow_headers.find("x-stainless-os"), std::string::npos);
  EXPECT_EQ(response->Header("Access-Control-Max-Age"), "86400");
  EXPECT_FALSE(response->HasHeader("Content-Length"));
  EXPECT_TRUE(response->body.empty());

  auto unknown = RoundTrip(server.port(), MakeRequest("OPTIONS", "/nope"));
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 404);
}

TEST(HttpCorsTest, EveryResponseCarriesTheConfiguredOrigin) {
  HttpServerOptions options;
  options.cors_origin = "https://chat.example";
  HttpServer server(options);
  AddRoutes(server);
  ASSERT_TRUE(server.Start().ok());
  for (const std::string& request :
       {MakeRequest("GET", "/v1/models"), MakeRequest("GET", "/missing"),
        MakeRequest("DELETE", "/v1/models"), MakeRequest("OPTIONS", "/v1/models")}) {
    auto response = RoundTrip(server.port(), request);
    ASSERT_TRUE(response) << request;
    EXPECT_EQ(response->Header("Access-Control-Allow-Origin"), "https://chat.example") << request;
  }
}

TEST(HttpCorsTest, EmptyOriginDisablesCors) {
  HttpServerOptions options;
  options.cors_origin = "";
  HttpServer server(options);
  AddRoutes(server);
  ASSERT_TRUE(server.Start().ok());
  auto response = RoundTrip(server.port(), MakeRequest("GET", "/v1/models"));
  ASSERT_TRUE(response);
  EXPECT_FALSE(response->HasHeader("Access-Control-Allow-Origin"));
}

class HttpApiKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpServerOptions options;
    options.api_keys = {"sk-first", "sk-second"};
    server_ = std::make_unique<HttpServer>(options);
    AddRoutes(*server_);
    ASSERT_TRUE(server_->Start().ok());
  }
  std::optional<testing::RawResponse> Get(const std::string& path,
                                          std::vector<std::string> headers = {}) {
    return RoundTrip(server_->port(), MakeRequest("GET", path, "", headers));
  }
  static void ExpectInvalidApiKey(const testing::RawResponse& response) {
    EXPECT_EQ(response.status, 401);
    auto body = nlohmann::json::parse(response.body, nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << response.body;
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_EQ(body["error"]["code"], "invalid_api_key");
    EXPECT_TRUE(body["error"]["param"].is_null());
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_EQ(response.Header("WWW-Authenticate"), "Bearer");
  }
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpApiKeyTest, MissingOrWrongKeyGets401) {
  auto missing = Get("/v1/models");
  ASSERT_TRUE(missing);
  ExpectInvalidApiKey(*missing);
  auto wrong = Get("/v1/models", {"Authorization: Bearer sk-wrong"});
  ASSERT_TRUE(wrong);
  ExpectInvalidApiKey(*wrong);
  EXPECT_NE(wrong->body.find("Incorrect API key provided"), std::string::npos);
  auto prefix = Get("/v1/models", {"Authorization: Bearer sk-firs"});
  ASSERT_TRUE(prefix);
  ExpectInvalidApiKey(*prefix);
  auto basic = Get("/v1/models", {"Authorization: Basic c2stZmlyc3Q="});
  ASSERT_TRUE(basic);
  ExpectInvalidApiKey(*basic);
  // Unknown paths need a key too (nothing is revealed without one).
  auto unknown = Get("/v2/secret");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 401);
}

TEST_F(HttpApiKeyTest, RightKeyGets200AndHealthIsOpen) {
  for (const char* header : {"Authorization: Bearer sk-first", "Authorization: bearer sk-second",
                             "authorization:   Bearer   sk-first  "}) {
    auto response = Get("/v1/models", {header});
    ASSERT_TRUE(response) << header;
    EXPECT_EQ(response->status, 200) << header;
  }
  auto health = Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // Preflights carry no credentials and are answered without a key.
  auto preflight =
      RoundTrip(server_->port(), MakeRequest("OPTIONS", "/v1/models", "", {"Origin: http://x"}));
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
}

TEST(ApiKeyAuthTest, ChecksBearerKeys) {
  ApiKeyAuth disabled;
  EXPECT_FALSE(disabled.enabled());
  EXPECT_EQ(disabled.Check(std::nullopt), ApiKeyAuth::Result::kOk);

  ApiKeyAuth auth({"", "key-1"});
  EXPECT_TRUE(auth.enabled());
  EXPECT_EQ(auth.Check(std::nullopt), ApiKeyAuth::Result::kMissing);
  EXPECT_EQ(auth.Check(""), ApiKeyAuth::Result::kMissing);
  EXPECT_EQ(auth.Check("Bearer "), ApiKeyAuth::Result::kMissing);
  EXPECT_EQ(auth.Check("Bearer key-1"), ApiKeyAuth::Result::kOk);
  EXPECT_EQ(auth.Check("BEARER key-1"), ApiKeyAuth::Result::kOk);
  EXPECT_EQ(auth.Check("Bearer key-2"), ApiKeyAuth::Result::kInvalid);
  EXPECT_EQ(auth.Check("Bearerkey-1"), ApiKeyAuth::Result::kInvalid);
  EXPECT_EQ(auth.Check("key-1"), ApiKeyAuth::Result::kInvalid);
  EXPECT_EQ(auth.Check("Bearer"), ApiKeyAuth::Result::kMissing);

  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace krasis::http
