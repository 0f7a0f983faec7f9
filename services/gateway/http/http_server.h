// The gateway's HTTP/1.1 server (Boost.Beast on Boost.Asio; no gRPC).
//
// Serves the OpenAI-compatible REST API: keep-alive connections, many at once on
// an io_context run by `num_threads` threads, bounded request sizes (431 for huge
// headers, 413 for a body over max_body_bytes), idle and write timeouts,
// Server-Sent Events through the Responder, CORS for browser clients, optional
// API keys, and OpenAI-shaped JSON errors for everything the server itself
// rejects (400 malformed, 401, 404, 405, 413, 431, 500).
//
// Per request the server: answers OPTIONS preflights itself (204 with the CORS
// fields; no key needed), checks the API key (except for public_paths such as
// /health), routes by (method, path) and calls the handler on an io thread.
//
//   HttpServer server(options);
//   server.Handle("GET", "/health", [](const Request&, ResponderPtr r) {
//     r->Send(200, "text/plain", "ok\n");
//   });
//   RETURN_IF_ERROR(server.Start());   // server.port() is the bound port
//   ...
//   server.Stop();  // graceful: in-flight responses get stop_deadline to finish
//
// Handlers run on io threads: never block them, and never call Stop from one.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/gateway/http/responder.h"

namespace krasis::http {

struct HttpServerOptions {
  // Address to bind: an IP literal ("127.0.0.1", "0.0.0.0", "::") or a host name.
  std::string host = "127.0.0.1";
  // Port to bind; 0 picks a free one (see HttpServer::port()).
  int port = 0;
  // Threads running the io_context.
  int num_threads = 4;
  // Largest request head (request line + fields), in bytes: 431 beyond.
  size_t max_header_bytes = 64 << 10;
  // Largest request body, in bytes: 413 beyond.
  size_t max_body_bytes = 8 << 20;
  // How long a connection may sit between requests (keep-alive idle) or take to
  // send one request before it is closed.
  std::chrono::milliseconds read_timeout{60'000};
  // How long one write may stall (client not reading) before the connection is
  // closed and the client counted as gone.
  std::chrono::milliseconds write_timeout{60'000};
  // Stop(): how long in-flight responses get to finish before sockets are closed.
  std::chrono::milliseconds stop_deadline{5'000};
  // Unwritten bytes a stream may pile up (client reading slower than tokens come)
  // before it is cut off.
  size_t max_stream_buffer_bytes = 16 << 20;
  // Access-Control-Allow-Origin on every response and preflight; "" disables CORS.
  std::string cors_origin = "*";
  // API keys; empty: no authentication.
  std::vector<std::string> api_keys;
  // Paths served without an API key.
  std::vector<std::string> public_paths = {"/health"};
  // Called once per request when its response is complete or abandoned (from an
  // io thread or the thread that finished the response). Optional.
  ResponseObserver on_response;
};

namespace detail {
struct ServerCore;
}

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options = {});
  // Stops the server (Stop()) if it is running.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Route registration; call before Start. See router.h for matching rules.
  void Handle(std::string method, std::string path, Handler handler);
  void HandlePrefix(std::string method, std::string prefix, Handler handler);

  // Binds, listens and starts the io threads. Fails (kUnavailable) when the
  // address cannot be bound, (kInvalidArgument) for a bad host or option, and
  // (kFailedPrecondition) when called twice.
  absl::Status Start();

  // The bound port (0 before Start).
  int port() const;
  // "host:port" of the bound socket, e.g. "127.0.0.1:41234".
  std::string address() const;
  // Connections currently open.
  size_t open_connections() const;

  // Graceful shutdown: closes the listening socket and idle connections at once,
  // lets responses in flight finish until `deadline`, then closes what is left
  // (their Responders see ClientGone and run OnClose callbacks), and joins the io
  // threads. Idempotent; returns within about deadline + 1 s.
  void Stop();
  void Stop(std::chrono::milliseconds deadline);

 private:
  std::shared_ptr<detail::ServerCore> core_;
};

}  // namespace krasis::http
