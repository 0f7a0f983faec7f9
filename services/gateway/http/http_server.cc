// HttpServer: listening, the accept loop, per-request dispatch (preflight, API key,
// routing) and graceful shutdown (see http_server.h). Connections live in
// connection.cc.
#include "services/gateway/http/http_server.h"

#include <future>
#include <utility>

#include "common/logging.h"
#include "common/status.h"
#include "services/gateway/http/connection.h"
#include "services/gateway/http/openai_errors.h"

namespace krasis::http {
namespace detail {
namespace {

using namespace std::chrono_literals;

// Request headers a browser may send to the OpenAI API (SDKs add their own; the
// preflight's Access-Control-Request-Headers are echoed on top of these).
constexpr std::string_view kDefaultAllowHeaders =
    "Authorization, Content-Type, Accept, OpenAI-Organization, OpenAI-Project";

// True when `list` is a comma-separated list of header names (safe to echo).
bool IsHeaderNameList(std::string_view list) {
  for (char c : list) {
    if (c == ',' || c == ' ' || c == '\t') continue;
    if (!IsValidHeaderName(std::string_view(&c, 1))) return false;
  }
  return true;
}

std::shared_ptr<const ResponseObserver> MakeObserver(const ResponseObserver& observer) {
  if (!observer) return nullptr;
  return std::make_shared<const ResponseObserver>(observer);
}

}  // namespace

ServerCore::ServerCore(HttpServerOptions opts)
    : options(std::move(opts)),
      auth(options.api_keys),
      public_paths(options.public_paths.begin(), options.public_paths.end()),
      observer(MakeObserver(options.on_response)),
      accept_strand(net::make_strand(ioc)),
      acceptor(accept_strand),
      accept_retry(accept_strand) {}

bool ServerCore::Register(const std::shared_ptr<Connection>& connection) {
  std::lock_guard<std::mutex> lock(conn_mu);
  if (stopping.load()) return false;
  open[connection.get()] = connection;
  return true;
}

void ServerCore::Unregister(Connection* connection) {
  std::lock_guard<std::mutex> lock(conn_mu);
  open.erase(connection);
  conn_cv.notify_all();
}

std::vector<std::shared_ptr<Connection>> ServerCore::OpenConnections() {
  std::vector<std::shared_ptr<Connection>> result;
  std::lock_guard<std::mutex> lock(conn_mu);
  for (const auto& [ptr, weak] : open) {
    if (auto connection = weak.lock()) result.push_back(std::move(connection));
  }
  return result;
}

void ServerCore::DoAccept() {
  acceptor.async_accept(
      net::make_strand(ioc), [this](beast::error_code ec, Socket socket) {
        if (ec) {
          if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
          // Out of descriptors and the like: back off instead of spinning.
          KLOG_WARN("http: accept failed: {}", ec.message());
          accept_retry.expires_after(100ms);
          accept_retry.async_wait([this](beast::error_code wait_ec) {
            if (!wait_ec && acceptor.is_open()) DoAccept();
          });
          return;
        }
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);  // tokens must not wait for Nagle
        // The core outlives its io threads (Stop joins them before it goes).
        auto connection = std::make_shared<Connection>(shared_from_this(), std::move(socket));
        if (Register(connection)) connection->Start();
        if (!stopping.load()) DoAccept();
      });
}

void ServerCore::Dispatch(const ResponderPtr& responder) {
  const Request& request = responder->request();

  // CORS preflight (and plain OPTIONS), unless a route handles OPTIONS itself.
  if (request.method == "OPTIONS") {
    Router::Match own = router.Find("OPTIONS", request.path);
    if (own.kind != Router::Match::Kind::kFound) {
      if (request.path != "*" && !router.Knows(request.path)) {
        responder->SendError(404, StrCat("Invalid URL (", request.method, " ", request.path, ")"));
        return;
      }
      std::string allow =
          request.path == "*" ? router.AllMethods() : router.Find("", request.path).allow;
      Headers headers;
      headers.Add("Allow", allow);
      if (!options.cors_origin.empty()) {
        headers.Add("Access-Control-Allow-Methods", allow);
        std::string allow_headers(kDefaultAllowHeaders);
        auto requested = request.Header("Access-Control-Request-Headers");
        if (requested && !requested->empty() && IsHeaderNameList(*requested)) {
          allow_headers += ", ";
          allow_headers += *requested;
        }
        headers.Add("Access-Control-Allow-Headers", allow_headers);
        headers.Add("Access-Control-Max-Age", "86400");
      }
      responder->Send(204, "", "", headers);
      return;
    }
  }

  if (auth.enabled() && !public_paths.contains(request.path)) {
    ApiKeyAuth::Result result = auth.Check(request.Header("Authorization"));
    if (result != ApiKeyAuth::Result::kOk) {
      std::string message =
          result == ApiKeyAuth::Result::kMissing
              ? "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
              : "Incorrect API key provided. Check the key the server was started with.";
      responder->SendJson(
          401, OpenAiErrorJson(std::move(message), "invalid_request_error", std::nullopt,
                               "invalid_api_key"),
          Headers{{"WWW-Authenticate", "Bearer"}});
      return;
    }
  }

  Router::Match match = router.Find(request.method, request.path);
  switch (match.kind) {
    case Router::Match::Kind::kNotFound:
      responder->SendError(404, StrCat("Invalid URL (", request.method, " ", request.path, ")"));
      return;
    case Router::Match::Kind::kMethodNotAllowed:
      responder->SendJson(
          405,
          OpenAiErrorJsonForStatus(405, StrCat("Method ", request.method, " is not allowed for ",
                                               request.path, "; use ", match.allow, ".")),
          Headers{{"Allow", match.allow}});
      return;
    case Router::Match::Kind::kFound:
      break;
  }
  try {
    (*match.handler)(request, responder);
  } catch (const std::exception& e) {
    KLOG_ERROR("http: handler for {} {} threw: {}", request.method, request.path, e.what());
    if (!responder->SendError(500, "The server had an error while processing your request.")) {
      responder->Finish();
    }
  } catch (...) {
    KLOG_ERROR("http: handler for {} {} threw", request.method, request.path);
    if (!responder->SendError(500, "The server had an error while processing your request.")) {
      responder->Finish();
    }
  }
}

}  // namespace detail

HttpServer::HttpServer(HttpServerOptions options)
    : core_(std::make_shared<detail::ServerCore>(std::move(options))) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(std::string method, std::string path, Handler handler) {
  std::lock_guard<std::mutex> lock(core_->lifecycle_mu);
  if (core_->started) {
    KLOG_ERROR("http: route {} {} registered after Start; ignored", method, path);
    return;
  }
  core_->router.Handle(std::move(method), std::move(path), std::move(handler));
}

void HttpServer::HandlePrefix(std::string method, std::string prefix, Handler handler) {
  std::lock_guard<std::mutex> lock(core_->lifecycle_mu);
  if (core_->started) {
    KLOG_ERROR("http: route {} {}* registered after Start; ignored", method, prefix);
    return;
  }
  core_->router.HandlePrefix(std::move(method), std::move(prefix), std::move(handler));
}

absl::Status HttpServer::Start() {
  namespace net = detail::net;
  using detail::tcp;
  detail::ServerCore& core = *core_;
  std::lock_guard<std::mutex> lock(core.lifecycle_mu);
  if (core.started) return FailedPreconditionError("HTTP server already started");
  const HttpServerOptions& options = core.options;
  if (options.num_threads < 1) {
    return InvalidArgumentError("HTTP server needs at least one thread, got ", options.num_threads);
  }
  if (options.port < 0 || options.port > 65535) {
    return InvalidArgumentError("HTTP port out of range: ", options.port);
  }

  detail::beast::error_code ec;
  tcp::endpoint endpoint;
  auto address = net::ip::make_address(options.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, static_cast<unsigned short>(options.port));
  } else {
    tcp::resolver resolver(core.ioc);
    auto results = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec || results.empty()) {
      return InvalidArgumentError("cannot resolve HTTP host '", options.host,
                                  "': ", ec ? ec.message() : "no addresses");
    }
    endpoint = results.begin()->endpoint();
  }

  auto fail = [&](std::string_view what) {
    detail::beast::error_code ignored;
    core.acceptor.close(ignored);
    return absl::UnavailableError(StrCat("cannot ", what, " ", endpoint.address().to_string(), ":",
                                         endpoint.port(), ": ", ec.message()));
  };
  core.acceptor.open(endpoint.protocol(), ec);
  if (ec) return fail("open a socket for");
  core.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("set SO_REUSEADDR for");
  core.acceptor.bind(endpoint, ec);
  if (ec) return fail("bind");
  core.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on");
  tcp::endpoint bound = core.acceptor.local_endpoint(ec);
  if (ec) return fail("read the bound address of");
  core.port.store(bound.port());
  std::string host = bound.address().to_string();
  if (bound.address().is_v6()) host = "[" + host + "]";
  std::string bound_address = StrCat(host, ":", bound.port());
  {
    std::lock_guard<std::mutex> address_lock(core.address_mu);
    core.address = bound_address;
  }

  core.work.emplace(net::make_work_guard(core.ioc));
  net::post(core.accept_strand, [core_ptr = core_] { core_ptr->DoAccept(); });
  {
    std::lock_guard<std::mutex> threads_lock(core.threads_mu);
    core.running_threads = options.num_threads;
  }
  for (int i = 0; i < options.num_threads; ++i) {
    core.threads.emplace_back([core_ptr = core_] {
      for (;;) {
        try {
          core_ptr->ioc.run();
          break;
        } catch (const std::exception& e) {
          KLOG_ERROR("http: io thread caught: {}", e.what());
        }
      }
      std::lock_guard<std::mutex> threads_lock(core_ptr->threads_mu);
      --core_ptr->running_threads;
      core_ptr->threads_cv.notify_all();
    });
  }
  core.started = true;
  KLOG_INFO("http: listening on {} ({} threads)", bound_address, options.num_threads);
  return absl::OkStatus();
}

int HttpServer::port() const { return core_->port.load(); }

std::string HttpServer::address() const {
  std::lock_guard<std::mutex> lock(core_->address_mu);
  return core_->address;
}

size_t HttpServer::open_connections() const {
  std::lock_guard<std::mutex> lock(core_->conn_mu);
  return core_->open.size();
}

void HttpServer::Stop() { Stop(core_->options.stop_deadline); }

void HttpServer::Stop(std::chrono::milliseconds deadline) {
  using namespace std::chrono_literals;
  detail::ServerCore& core = *core_;
  std::lock_guard<std::mutex> lock(core.lifecycle_mu);
  if (!core.started || core.stopped) return;
  core.stopped = true;
  const auto until = std::chrono::steady_clock::now() + deadline;
  {
    // Under conn_mu so that no connection registers after the snapshot below.
    std::lock_guard<std::mutex> conn_lock(core.conn_mu);
    core.stopping.store(true);
  }

  // 1. Stop accepting.
  std::promise<void> acceptor_closed;
  if (core.Post(core.accept_strand, [&core, &acceptor_closed] {
        detail::beast::error_code ignored;
        core.acceptor.close(ignored);
        core.accept_retry.cancel();
        acceptor_closed.set_value();
      })) {
    acceptor_closed.get_future().wait();
  }

  // 2. Idle connections close now; busy ones after their response, until the deadline.
  for (auto& connection : core.OpenConnections()) connection->BeginShutdown();
  {
    std::unique_lock<std::mutex> conn_lock(core.conn_mu);
    core.conn_cv.wait_until(conn_lock, until, [&] { return core.open.empty(); });
  }
  // 3. Past the deadline: close the rest (their responders see the client gone).
  auto remaining = core.OpenConnections();
  if (!remaining.empty()) {
    KLOG_WARN("http: closing {} connection(s) still busy after the stop deadline",
              remaining.size());
    for (auto& connection : remaining) connection->ForceClose();
    remaining.clear();
    std::unique_lock<std::mutex> conn_lock(core.conn_mu);
    core.conn_cv.wait_for(conn_lock, 1s, [&] { return core.open.empty(); });
  }

  // 4. No more posts (late Responder calls are refused), let the io threads run
  //    dry, and join them.
  {
    std::unique_lock<std::shared_mutex> post_lock(core.post_mu);
    core.accepting_posts = false;
  }
  core.work.reset();
  {
    std::unique_lock<std::mutex> threads_lock(core.threads_mu);
    if (!core.threads_cv.wait_for(threads_lock, 1s, [&] { return core.running_threads == 0; })) {
      core.ioc.stop();
    }
  }
  for (auto& thread : core.threads) thread.join();
  core.threads.clear();
  KLOG_INFO("http: stopped {}", address());
}

}  // namespace krasis::http
