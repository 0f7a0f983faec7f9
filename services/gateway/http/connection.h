// Internal to the HTTP server (included by its .cc files only; pulls in Beast).
//
// ServerCore is the state shared by HttpServer and all its connections: options,
// routes, the io_context and its threads, and the set of open connections. It is
// held by shared_ptr so that a Responder kept by a handler thread past Stop()
// still finds a live io_context (its posts are then refused, never run).
//
// Connection is one client socket. Everything it does runs on its strand:
//   read request head (timeout) -> [100 Continue] -> read body -> dispatch ->
//   write queued response bytes -> next request (keep-alive) or close.
// While a response is outstanding it keeps a read pending on the socket (the
// "watch"), so EOF or a reset marks the client gone even when nothing is being
// written; bytes that arrive meanwhile (a pipelined request) stay in the buffer.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <vector>

// GCC (notably with -fsanitize=address) reports a false maybe-uninitialized
// inside Beast's parser (a boost::optional body limit) when it is inlined here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#pragma GCC diagnostic pop

#include "services/gateway/http/auth.h"
#include "services/gateway/http/http_server.h"
#include "services/gateway/http/responder.h"
#include "services/gateway/http/router.h"

namespace krasis::http::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;
using Socket = tcp::socket::rebind_executor<Strand>::other;

class Connection;

struct ServerCore : std::enable_shared_from_this<ServerCore> {
  explicit ServerCore(HttpServerOptions opts);

  // Posts `fn` to `executor` unless the server has finished stopping. Returns
  // whether it was posted.
  template <typename Executor, typename Fn>
  bool Post(const Executor& executor, Fn&& fn) {
    std::shared_lock<std::shared_mutex> lock(post_mu);
    if (!accepting_posts) return false;
    net::post(executor, std::forward<Fn>(fn));
    return true;
  }

  // Open-connection bookkeeping. Register fails once stopping.
  bool Register(const std::shared_ptr<Connection>& connection);
  void Unregister(Connection* connection);
  std::vector<std::shared_ptr<Connection>> OpenConnections();

  // Preflight, API key, routing, handler call (http_server.cc). Runs on the
  // connection's strand.
  void Dispatch(const ResponderPtr& responder);
  // Accept loop (http_server.cc), on accept_strand.
  void DoAccept();

  const HttpServerOptions options;
  Router router;
  const ApiKeyAuth auth;
  const std::set<std::string, std::less<>> public_paths;
  const std::shared_ptr<const ResponseObserver> observer;

  net::io_context ioc;
  Strand accept_strand;
  tcp::acceptor acceptor;
  net::steady_timer accept_retry;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<int> port{0};
  mutable std::mutex address_mu;
  std::string address;  // guarded by address_mu
  std::atomic<bool> stopping{false};
  std::mutex lifecycle_mu;  // Start / Stop
  bool started = false;
  bool stopped = false;

  std::shared_mutex post_mu;
  bool accepting_posts = true;  // guarded by post_mu

  mutable std::mutex conn_mu;
  std::condition_variable conn_cv;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> open;  // guarded by conn_mu

  std::mutex threads_mu;
  std::condition_variable threads_cv;
  int running_threads = 0;  // guarded by threads_mu
};

class Connection final : public ResponseSink, public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<ServerCore> core, Socket socket);

  // Starts reading requests (posts to the strand).
  void Start();
  // Server stopping: close now when idle, else after the current response.
  void BeginShutdown();
  // Server stopped: close now; an unfinished response sees its client gone.
  void ForceClose();

  // ResponseSink.
  bool Write(std::string bytes, bool last) override;
  size_t QueuedBytes() const override { return queued_bytes_.load(std::memory_order_relaxed); }
  void Abort(std::string reason) override;
  bool ClosingAfterResponse() const override { return core_->stopping.load(); }

 private:
  enum class Phase { kReading, kHandling, kClosing, kClosed };

  void DoRead();
  void OnHeader(beast::error_code ec);
  void OnBody(beast::error_code ec);
  void OnReadError(beast::error_code ec);
  void OnRequest();
  void StartWatch();
  void OnWatch(beast::error_code ec, size_t bytes);
  void QueueWrite(std::string bytes, bool last);
  void StartWrite();
  void OnWrite(beast::error_code ec);
  void OnResponseDone();
  void SendErrorAndClose(int status, std::string message);
  // Closes after the last response: at once when all input was consumed, else
  // shuts down the send side and drains input for up to 2 s first.
  void LingeringClose();
  void Drain();
  void CloseNow(const char* reason);
  void ArmReadTimer(std::chrono::milliseconds timeout);

  std::shared_ptr<ServerCore> core_;
  Socket socket_;
  Strand strand_;
  net::steady_timer read_timer_;
  net::steady_timer write_timer_;
  beast::flat_buffer buffer_;
  std::optional<beast::http::request_parser<beast::http::string_body>> parser_;
  std::string remote_;

  // Strand-only state.
  Phase phase_ = Phase::kReading;
  std::weak_ptr<Responder> responder_;
  bool close_after_response_ = false;
  bool last_queued_ = false;
  std::deque<std::string> queue_;
  std::vector<std::string> in_flight_;
  std::vector<net::const_buffer> in_flight_buffers_;
  bool writing_ = false;
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool linger_ = false;  // drain input before closing (error sent mid-request)
  std::array<char, 1024> discard_{};

  // Shared with other threads.
  std::atomic<size_t> queued_bytes_{0};
  std::atomic<int> pending_posts_{0};
  std::atomic<bool> closed_{false};
};

}  // namespace krasis::http::detail
