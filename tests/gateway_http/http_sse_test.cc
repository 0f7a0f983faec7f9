// Server-Sent Events through the gateway's HTTP server: framing (chunked
// transfer encoding, "data: ...\n\n"), events written from a background thread,
// client disconnects noticed with and without writes (OnClose, SendEvent false),
// and Stop() with a stream that never ends.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>

#include "services/gateway/http/http_server.h"
#include "tests/gateway_http/test_client.h"

namespace krasis::http {
namespace {

using namespace std::chrono_literals;
using testing::MakeRequest;
using testing::TestClient;

// Signals a promise at most once.
class Flag {
 public:
  void Set() {
    std::call_once(once_, [this] { promise_.set_value(); });
  }
  bool WaitFor(std::chrono::milliseconds timeout) {
    return future_.wait_for(timeout) == std::future_status::ready;
  }

 private:
  std::once_flag once_;
  std::promise<void> promise_;
  std::future<void> future_ = promise_.get_future();
};

TEST(HttpSseTest, StreamsTwentyEventsInOrderWithChunkedFraming) {
  HttpServer server;
  std::vector<std::thread> producers;
  std::mutex mu;
  server.Handle("POST", "/v1/chat/completions", [&](const Request&, ResponderPtr r) {
    ASSERT_TRUE(r->StartEventStream());
    std::lock_guard<std::mutex> lock(mu);
    producers.emplace_back([r] {
      for (int i = 0; i < 20; ++i) {
        EXPECT_TRUE(r->SendEvent("{\"n\":" + std::to_string(i) + "}"));
      }
      EXPECT_TRUE(r->SendEvent("[DONE]"));
      EXPECT_TRUE(r->Finish());
      EXPECT_FALSE(r->SendEvent("late"));
    });
  });
  server.Handle("GET", "/health", [](const Request&, ResponderPtr r) {
    r->Send(200, "text/plain", "ok");
  });
  ASSERT_TRUE(server.Start().ok());

  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("POST", "/v1/chat/completions", "{\"stream\":true}")));
  auto head = client.ReadHead();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("Content-Type"), "text/event-stream");
  EXPECT_EQ(head->Header("Cache-Control"), "no-cache");
  EXPECT_EQ(head->Header("Connection"), "keep-alive");
  EXPECT_EQ(head->Header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(head->Header("Access-Control-Allow-Origin"), "*");
  EXPECT_FALSE(head->HasHeader("Content-Length"));
  for (int i = 0; i < 20; ++i) {
    auto chunk = client.ReadChunk();
    ASSERT_TRUE(chunk) << i;
    EXPECT_EQ(*chunk, "data: {\"n\":" + std::to_string(i) + "}\n\n");
  }
  auto done = client.ReadChunk();
  ASSERT_TRUE(done);
  EXPECT_EQ(*done, "data: [DONE]\n\n");
  auto last = client.ReadChunk();
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, "");  // the terminating zero-length chunk
  EXPECT_TRUE(client.buffered().empty());

  // The connection is reusable after the stream.
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/health")));
  auto next = client.ReadResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, "ok");

  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : producers) t.join();
}

TEST(HttpSseTest, MultiLineNamedEventsAndComments) {
  HttpServer server;
  server.Handle("GET", "/events", [](const Request&, ResponderPtr r) {
    r->StartEventStream();
    r->SendEvent("line1\nline2\r\nline3");
    r->SendEvent("response.created", "{}");
    r->SendComment("ping");
    r->Finish();
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/events")));
  auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  ASSERT_EQ(response->chunks.size(), 3u);
  EXPECT_EQ(response->chunks[0], "data: line1\ndata: line2\ndata: line3\n\n");
  EXPECT_EQ(response->chunks[1], "event: response.created\ndata: {}\n\n");
  EXPECT_EQ(response->chunks[2], ": ping\n\n");
}

TEST(HttpSseTest, ClientDisconnectMidStreamFiresOnCloseAndStopsSendEvent) {
  HttpServer server;
  Flag closed;
  std::atomic<bool> send_failed_after_close{false};
  std::atomic<bool> gone_seen{false};
  std::thread producer;
  server.Handle("GET", "/stream", [&](const Request&, ResponderPtr r) {
    r->OnClose([&] { closed.Set(); });
    r->StartEventStream();
    producer = std::thread([&, r] {
      // Writes until the server reports the client gone (bounded at ~10 s).
      for (int i = 0; i < 1000; ++i) {
        if (!r->SendEvent("token " + std::to_string(i))) break;
        std::this_thread::sleep_for(10ms);
      }
      closed.WaitFor(5s);
      send_failed_after_close = !r->SendEvent("after close");
      gone_seen = r->ClientGone();
    });
  });
  ASSERT_TRUE(server.Start().ok());

  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/stream")));
  ASSERT_TRUE(client.ReadHead());
  for (int i = 0; i < 3; ++i) {
    auto chunk = client.ReadChunk();
    ASSERT_TRUE(chunk);
    EXPECT_EQ(*chunk, "data: token " + std::to_string(i) + "\n\n");
  }
  client.Close();
  EXPECT_TRUE(closed.WaitFor(5s));
  producer.join();
  EXPECT_TRUE(send_failed_after_close);
  EXPECT_TRUE(gone_seen);
}

TEST(HttpSseTest, DisconnectIsNoticedWithoutAnyWrite) {
  // The stream is silent (a long prefill): only the pending read can notice.
  HttpServer server;
  Flag closed;
  ResponderPtr kept;
  std::mutex mu;
  server.Handle("GET", "/quiet", [&](const Request&, ResponderPtr r) {
    r->StartEventStream();
    r->SendEvent("first");
    r->OnClose([&] { closed.Set(); });
    std::lock_guard<std::mutex> lock(mu);
    kept = r;
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/quiet")));
  ASSERT_TRUE(client.ReadHead());
  ASSERT_TRUE(client.ReadChunk());
  client.Close();
  ASSERT_TRUE(closed.WaitFor(2s));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(kept->ClientGone());
  EXPECT_FALSE(kept->SendEvent("nobody listens"));
  // A callback registered after the disconnect runs at once.
  bool ran = false;
  kept->OnClose([&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST(HttpSseTest, DisconnectDuringNonStreamingWaitFiresOnClose) {
  HttpServer server;
  Flag closed;
  ResponderPtr kept;
  std::mutex mu;
  server.Handle("POST", "/v1/completions", [&](const Request&, ResponderPtr r) {
    r->OnClose([&] { closed.Set(); });
    std::lock_guard<std::mutex> lock(mu);
    kept = r;  // never answered
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("POST", "/v1/completions", "{}")));
  std::this_thread::sleep_for(100ms);
  client.Close();
  EXPECT_TRUE(closed.WaitFor(2s));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_FALSE(kept->Send(200, "application/json", "{}"));
}

TEST(HttpSseTest, OnCloseDoesNotFireAfterACompleteResponse) {
  HttpServer server;
  std::atomic<bool> fired{false};
  server.Handle("GET", "/s", [&](const Request&, ResponderPtr r) {
    r->OnClose([&] { fired = true; });
    r->StartEventStream();
    r->SendEvent("x");
    r->Finish();
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/s")));
  ASSERT_TRUE(client.ReadResponse());
  client.Close();
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(fired);
}

TEST(HttpSseTest, StopWithAnOpenStreamReturnsWithinTheDeadline) {
  HttpServer server;
  Flag closed;
  std::atomic<bool> stop_producer{false};
  std::atomic<bool> send_failed{false};
  std::thread producer;
  server.Handle("GET", "/forever", [&](const Request&, ResponderPtr r) {
    r->OnClose([&] { closed.Set(); });
    r->StartEventStream();
    producer = std::thread([&, r] {
      while (!stop_producer) {
        if (!r->SendEvent("tick")) {
          send_failed = true;
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
    });
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/forever")));
  ASSERT_TRUE(client.ReadHead());
  ASSERT_TRUE(client.ReadChunk());

  auto start = std::chrono::steady_clock::now();
  server.Stop(300ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 250ms);  // the stream got its deadline
  EXPECT_LT(took, 3s);
  EXPECT_TRUE(closed.WaitFor(1s));
  EXPECT_TRUE(client.WaitClosed(2s));
  std::this_thread::sleep_for(100ms);
  stop_producer = true;
  producer.join();
  EXPECT_TRUE(send_failed);
}

TEST(HttpSseTest, ClientThatStopsReadingIsCutOff) {
  HttpServerOptions options;
  options.max_stream_buffer_bytes = 64 << 10;
  HttpServer server(options);
  Flag closed;
  std::atomic<int> sent{0};
  std::thread producer;
  server.Handle("GET", "/flood", [&](const Request&, ResponderPtr r) {
    r->OnClose([&] { closed.Set(); });
    r->StartEventStream();
    producer = std::thread([&, r] {
      const std::string event(16 << 10, 'x');
      for (int i = 0; i < 4096 && r->SendEvent(event); ++i) ++sent;  // < 64 MiB
    });
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/flood")));
  // Never reads: the kernel buffers fill, then the server's queue, then the cut.
  EXPECT_TRUE(closed.WaitFor(10s));
  producer.join();
  EXPECT_LT(sent.load(), 4096);
}

TEST(HttpSseTest, DroppedStreamIsFinished) {
  HttpServer server;
  server.Handle("GET", "/drop", [](const Request&, ResponderPtr r) {
    r->StartEventStream();
    r->SendEvent("only");
  });
  ASSERT_TRUE(server.Start().ok());
  TestClient client;
  ASSERT_TRUE(client.Connect(server.port()));
  ASSERT_TRUE(client.Send(MakeRequest("GET", "/drop")));
  auto response = client.ReadResponse();
  ASSERT_TRUE(response);
  ASSERT_EQ(response->chunks.size(), 1u);
  EXPECT_EQ(response->chunks[0], "data: only\n\n");
}

}  // namespace
}  // namespace krasis::http
