// Tests for the gateway's HTTP server over real loopback sockets (port 0): plain
// requests, keep-alive and pipelining, concurrency, limits and malformed input,
// 404/405 JSON errors, asynchronous handlers, timeouts and shutdown.
#include "services/gateway/http/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "nlohmann/json.hpp"
#include "tests/gateway_http/test_client.h"

namespace krasis::http {
namespace {

using namespace std::chrono_literals;
using testing::MakeRequest;
using testing::RawResponse;
using testing::RoundTrip;
using testing::TestClient;

// Expects an OpenAI-shaped error body and returns its "error" object.
nlohmann::json ExpectOpenAiError(const RawResponse& response) {
  EXPECT_EQ(response.Header("Content-Type"), "application/json");
  auto body = nlohmann::json::parse(response.body, nullptr, false);
  EXPECT_FALSE(body.is_discarded()) << response.body;
  if (body.is_discarded() || !body.contains("error")) return {};
  const auto& error = body["error"];
  EXPECT_TRUE(error.contains("message") && error["message"].is_string());
  EXPECT_TRUE(error.contains("type") && error["type"].is_string());
  EXPECT_TRUE(error.contains("param"));
  EXPECT_TRUE(error.contains("code"));
  return error;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions options = {}) {
    server_ = std::make_unique<HttpServer>(std::move(options));
    server_->Handle("GET", "/health", [](const Request&, ResponderPtr r) {
      r->Send(200, "text/plain", "ok\n");
    });
    server_->Handle("POST", "/echo", [](const Request& request, ResponderPtr r) {
      Headers headers;
      headers.Add("X-Path", request.path);
      headers.Add("X-Query", request.QueryParam("name").value_or("<none>"));
      headers.Add("X-Trace", std::string(request.Header("x-TRACE-id").value_or("<none>")));
      headers.Add("X-Remote", request.remote_address);
      r->Send(200, "application/octet-stream", request.body, headers);
    });
    server_->Handle("GET", "/v1/models", [](const Request&, ResponderPtr r) {
      r->SendJson(200, R"({"object":"list","data":[]})");
    });
    server_->HandlePrefix("GET", "/v1/models/", [](const Request& request, ResponderPtr r) {
      r->SendJson(200, nlohmann::json{{"id", request.path.substr(11)}}.dump());
    });
    server_->Handle("GET", "/later", [](const Request&, ResponderPtr r) {
      std::thread([r] {
        std::this_thread::sleep_for(50ms);
        r->Send(200, "text/plain", "later");
      }).detach();
    });
    server_->Handle("GET", "/dropped", [](const Request&, ResponderPtr) {});
    server_->Handle("GET", "/throws", [](const Request&, ResponderPtr) -> void {
      throw std::runtime_error("boom");
    });
    for (auto& [method, path, handler] : extra_routes_) server_->Handle(method, path, handler);
    ASSERT_TRUE(server_->Start().ok());
    port_ = server_->port();
  }

  std::vector<std::tuple<std::string, std::string, Handler>> extra_routes_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpServerTest, ReportsBoundPortAndAddress) {
  StartServer();
  EXPECT_GT(port_, 0);
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(port_));
  HttpServer second;  // a second server on port 0 gets another port
  ASSERT_TRUE(second.Start().ok());
  EXPECT_NE(second.port(), port_);
}

TEST_F(HttpServerTest, BindFailureIsAnError) {
  StartServer();
  HttpServerOptions options;
  options.port = port_;
  HttpServer clash(options);
  absl::Status status = clash.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

TEST_F(HttpServerTest, PlainGetAndPost) {
  StartServer();
  auto get = RoundTrip(port_, MakeRequest("GET", "/health"));
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, "ok\n");
  EXPECT_EQ(get->Header("Content-Type"), "text/plain");
  EXPECT_EQ(get->Header("Content-Length"), "3");
  EXPECT_EQ(get->Header("Access-Control-Allow-Origin"), "*");

  std::string payload = "hello \x01 world";
  auto post = RoundTrip(port_, MakeRequest("POST", "/echo?name=a%20b+c&x=1", payload,
                                           {"X-Trace-Id: abc123"}));
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 200);
  EXPECT_EQ(post->body, payload);
  EXPECT_EQ(post->Header("X-Path"), "/echo");
  EXPECT_EQ(post->Header("X-Query"), "a b c");
  EXPECT_EQ(post->Header("X-Trace"), "abc123");
  EXPECT_EQ(post->Header("X-Remote").rfind("127.0.0.1:", 0), 0u);

  auto model = RoundTrip(port_, MakeRequest("GET", "/v1/models/qwen3"));
  ASSERT_TRUE(model);
  EXPECT_EQ(model->status, 200);
  EXPECT_EQ(model->body, R"({"id":"qwen3"})");
}

TEST_F(HttpServerTest, KeepAliveServesThreeRequestsOnOneConnection) {
  StartServer();
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  for (int i = 0; i < 3; ++i) {
    std::string body = "request " + std::to_string(i);
    ASSERT_TRUE(client.Send(MakeRequest("POST", "/echo", body)));
    auto response = client.ReadResponse();
    ASSERT_TRUE(response) << i;
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body, body);
    EXPECT_EQ(response->Header("Connection"), "keep-alive");
  }
  EXPECT_EQ(server_->open_connections(), 1u);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  // The second request arrives while the first (asynchronous) one is pending.
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/later") + MakeRequest("POST", "/echo", "second")));
  auto first = client.ReadResponse();
  auto second = client.ReadResponse();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->body, "later");
  EXPECT_EQ(second->body, "second");
}

TEST_F(HttpServerTest, FiftyConcurrentConnections) {
  // Every request is held until all 50 are in flight at once, then all are
  // answered from another thread.
  constexpr int kClients = 50;
  std::mutex mu;
  std::vector<ResponderPtr> held;
  extra_routes_.emplace_back("POST", "/gather", [&](const Request&, ResponderPtr r) {
    std::lock_guard<std::mutex> lock(mu);
    held.push_back(std::move(r));
    if (held.size() == kClients) {
      std::thread([batch = std::move(held)] {
        for (const auto& responder : batch) {
          responder->Send(200, "text/plain", responder->request().body);
        }
      }).detach();
    }
  });
  StartServer();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      TestClient client;
      if (!client.Connect(port_)) return;
      std::string body = "client " + std::to_string(i);
      if (!client.Send(MakeRequest("POST", "/gather", body))) return;
      auto response = client.ReadResponse(10s);
      if (response && response->status == 200 && response->body == body) ++ok;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients);
}

TEST_F(HttpServerTest, NotFoundAndMethodNotAllowedAreOpenAiErrors) {
  StartServer();
  auto missing = RoundTrip(port_, MakeRequest("GET", "/v2/nothing"));
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto error = ExpectOpenAiError(*missing);
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(error["message"], "Invalid URL (GET /v2/nothing)");
  EXPECT_TRUE(error["param"].is_null());
  EXPECT_TRUE(error["code"].is_null());

  auto wrong = RoundTrip(port_, MakeRequest("POST", "/health", "{}"));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(wrong->Header("Allow"), "GET, OPTIONS");
  EXPECT_EQ(ExpectOpenAiError(*wrong)["type"], "invalid_request_error");
}

TEST_F(HttpServerTest, TooLargeBodyGets413) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(options);
  // Declared too large: rejected after the head, before the body is read.
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  ASSERT_TRUE(client.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n" +
                          std::string(2048, 'a')));
  auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  auto error = ExpectOpenAiError(*response);
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(response->Header("Connection"), "close");
  EXPECT_TRUE(client.WaitClosed());

  // Chunked body that grows past the limit.
  TestClient chunked;
  ASSERT_TRUE(chunked.Connect(port_));
  ASSERT_TRUE(chunked.Send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "400\r\n" + std::string(1024, 'b') + "\r\n10\r\n" +
                           std::string(16, 'c') + "\r\n0\r\n\r\n"));
  auto chunked_response = chunked.ReadResponse();
  ASSERT_TRUE(chunked_response);
  EXPECT_EQ(chunked_response->status, 413);

  // At the limit is fine.
  auto fits = RoundTrip(port_, MakeRequest("POST", "/echo", std::string(1024, 'z')));
  ASSERT_TRUE(fits);
  EXPECT_EQ(fits->status, 200);
  EXPECT_EQ(fits->body.size(), 1024u);
}

TEST_F(HttpServerTest, TooLargeHeaderGets431) {
  HttpServerOptions options;
  options.max_header_bytes = 1024;
  StartServer(options);
  auto response =
      RoundTrip(port_, MakeRequest("GET", "/health", "", {"X-Big: " + std::string(4096, 'h')}));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 431);
  ExpectOpenAiError(*response);
}

TEST_F(HttpServerTest, MalformedRequestsGet400AndTheServerKeepsServing) {
  StartServer();
  const std::vector<std::string> garbage = {
      "\x01\x02\x03 / HTTP/1.1\r\n\r\n",
      "GET / HTTP/9.9\r\n\r\n",
      "GET /health HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n",
      "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
  };
  for (const std::string& request : garbage) {
    auto response = RoundTrip(port_, request);
    ASSERT_TRUE(response) << request;
    EXPECT_EQ(response->status, 400) << request;
    ExpectOpenAiError(*response);
  }
  auto ok = RoundTrip(port_, MakeRequest("GET", "/health"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  StartServer();
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  ASSERT_TRUE(client.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                          "Expect: 100-continue\r\n\r\n"));
  auto interim = client.ReadResponse();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(client.Send("hello"));
  auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "hello");
}

TEST_F(HttpServerTest, AsyncDroppedAndThrowingHandlers) {
  StartServer();
  auto later = RoundTrip(port_, MakeRequest("GET", "/later"));
  ASSERT_TRUE(later);
  EXPECT_EQ(later->body, "later");

  auto dropped = RoundTrip(port_, MakeRequest("GET", "/dropped"));
  ASSERT_TRUE(dropped);
  EXPECT_EQ(dropped->status, 500);
  EXPECT_EQ(ExpectOpenAiError(*dropped)["type"], "server_error");

  auto threw = RoundTrip(port_, MakeRequest("GET", "/throws"));
  ASSERT_TRUE(threw);
  EXPECT_EQ(threw->status, 500);
}

TEST_F(HttpServerTest, ConnectionCloseAndHttp10) {
  StartServer();
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/health", "", {"Connection: close"})));
  auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->Header("Connection"), "close");
  EXPECT_TRUE(client.WaitClosed());

  TestClient old;
  ASSERT_TRUE(old.Connect(port_));
  ASSERT_TRUE(old.Send("GET /health HTTP/1.0\r\n\r\n"));
  auto old_response = old.ReadResponse();
  ASSERT_TRUE(old_response);
  EXPECT_EQ(old_response->status, 200);
  EXPECT_EQ(old_response->body, "ok\n");
  EXPECT_TRUE(old.WaitClosed());
}

TEST_F(HttpServerTest, IdleConnectionsAreClosedAfterTheReadTimeout) {
  HttpServerOptions options;
  options.read_timeout = 200ms;
  StartServer(options);
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/health")));
  ASSERT_TRUE(client.ReadResponse());
  EXPECT_TRUE(client.WaitClosed(3s));

  // A request that never completes is cut off too.
  TestClient slow;
  ASSERT_TRUE(slow.Connect(port_));
  ASSERT_TRUE(slow.Send("GET /health HTTP/1.1\r\nHost: x\r\n"));
  EXPECT_TRUE(slow.WaitClosed(3s));
}

TEST_F(HttpServerTest, ObserverSeesEveryResponse) {
  std::mutex mu;
  std::vector<std::pair<std::string, int>> seen;
  HttpServerOptions options;
  options.on_response = [&](const ResponseLog& log) {
    std::lock_guard<std::mutex> lock(mu);
    seen.emplace_back(std::string(log.path), log.status);
  };
  StartServer(options);
  ASSERT_TRUE(RoundTrip(port_, MakeRequest("GET", "/health")));
  ASSERT_TRUE(RoundTrip(port_, MakeRequest("GET", "/nope")));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(std::string("/health"), 200));
  EXPECT_EQ(seen[1], std::make_pair(std::string("/nope"), 404));
}

TEST_F(HttpServerTest, StopClosesIdleConnectionsAndRefusesNewOnes) {
  StartServer();
  TestClient idle;
  ASSERT_TRUE(idle.Connect(port_));
  ASSERT_TRUE(idle.Send(MakeRequest("GET", "/health")));
  ASSERT_TRUE(idle.ReadResponse());
  auto start = std::chrono::steady_clock::now();
  server_->Stop(2s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);  // nothing was busy
  EXPECT_TRUE(idle.WaitClosed(1s));
  EXPECT_EQ(server_->open_connections(), 0u);
  TestClient late;
  EXPECT_FALSE(late.Connect(port_) && late.Send(MakeRequest("GET", "/health")) &&
               late.ReadResponse(500ms).has_value());
  server_->Stop();  // idempotent
}

TEST_F(HttpServerTest, StopLetsInFlightResponsesFinish) {
  std::promise<ResponderPtr> pending;
  extra_routes_.emplace_back("GET", "/slow", [&](const Request&, ResponderPtr r) {
    pending.set_value(std::move(r));
  });
  StartServer();
  TestClient client;
  ASSERT_TRUE(client.Connect(port_));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/slow")));
  ResponderPtr responder = pending.get_future().get();
  std::thread answer([responder] {
    std::this_thread::sleep_for(200ms);
    responder->Send(200, "text/plain", "finished");
  });
  server_->Stop(5s);
  answer.join();
  auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->body, "finished");
  EXPECT_EQ(response->Header("Connection"), "close");
  EXPECT_TRUE(client.WaitClosed());
}

}  // namespace
}  // namespace krasis::http
