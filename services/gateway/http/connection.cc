// One HTTP/1.1 client connection of the gateway's server (see connection.h).
#include "services/gateway/http/connection.h"

#include <chrono>
#include <utility>

#include "common/logging.h"
#include "common/status.h"
#include "services/gateway/http/openai_errors.h"

namespace krasis::http::detail {
namespace http = beast::http;

namespace {

// Largest amount of unprocessed input the watch read buffers while a response
// is outstanding (a pipelined request); beyond it the watch stops.
constexpr size_t kMaxWatchBuffer = 64 << 10;
constexpr size_t kWatchChunk = 4096;
// How long a closing connection drains unread input before the socket is closed
// (closing with unread data would reset the connection and could destroy the
// error response the client has not read yet).
constexpr std::chrono::milliseconds kLingerTime{2000};

std::string FormatEndpoint(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  std::string host = address.to_string();
  if (address.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(endpoint.port());
}

bool IsParseError(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

}  // namespace

Connection::Connection(std::shared_ptr<ServerCore> core, Socket socket)
    : core_(std::move(core)),
      socket_(std::move(socket)),
      strand_(socket_.get_executor()),
      read_timer_(strand_),
      write_timer_(strand_) {
  beast::error_code ec;
  auto endpoint = socket_.remote_endpoint(ec);
  remote_ = ec ? "unknown" : FormatEndpoint(endpoint);
}

void Connection::Start() {
  pending_posts_.fetch_add(1);
  if (!core_->Post(strand_, [self = shared_from_this()] {
        self->pending_posts_.fetch_sub(1);
        self->DoRead();
      })) {
    pending_posts_.fetch_sub(1);
  }
}

void Connection::BeginShutdown() {
  core_->Post(strand_, [self = shared_from_this()] {
    if (self->phase_ == Phase::kReading) {
      self->CloseNow("server stopping");
    } else {
      self->close_after_response_ = true;
    }
  });
}

void Connection::ForceClose() {
  core_->Post(strand_, [self = shared_from_this()] { self->CloseNow("server stopped"); });
}

void Connection::Abort(std::string reason) {
  core_->Post(strand_, [self = shared_from_this(), reason = std::move(reason)] {
    KLOG_DEBUG("http: closing {}: {}", self->remote_, reason);
    self->CloseNow("aborted");
  });
}

// ---- Reading requests --------------------------------------------------------

void Connection::ArmReadTimer(std::chrono::milliseconds timeout) {
  read_timer_.expires_after(timeout);
  read_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec == net::error::operation_aborted) return;
    if (self->read_timer_.expiry() > net::steady_timer::clock_type::now()) return;  // re-armed
    if (self->phase_ == Phase::kReading || self->phase_ == Phase::kClosing) {
      self->CloseNow("read timeout");
    }
  });
}

void Connection::DoRead() {
  if (phase_ == Phase::kClosed) return;
  if (core_->stopping.load()) {
    CloseNow("server stopping");
    return;
  }
  phase_ = Phase::kReading;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(core_->options.max_header_bytes));
  parser_->body_limit(static_cast<std::uint64_t>(core_->options.max_body_bytes));
  ArmReadTimer(core_->options.read_timeout);
  http::async_read_header(socket_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            self->OnHeader(ec);
                          });
}

void Connection::OnHeader(beast::error_code ec) {
  if (phase_ == Phase::kClosed) return;
  if (ec) return OnReadError(ec);
  auto& message = parser_->get();
  auto expect = message[http::field::expect];
  if (!expect.empty() && EqualsIgnoreCase(expect, "100-continue") && !parser_->is_done()) {
    std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
    queued_bytes_.fetch_add(interim.size(), std::memory_order_relaxed);
    QueueWrite(std::move(interim), false);
  }
  if (parser_->is_done()) return OnRequest();
  http::async_read(socket_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
}

void Connection::OnBody(beast::error_code ec) {
  if (phase_ == Phase::kClosed) return;
  if (ec) return OnReadError(ec);
  OnRequest();
}

void Connection::OnReadError(beast::error_code ec) {
  if (ec == http::error::body_limit) {
    SendErrorAndClose(413, StrCat("Request body too large: the limit is ",
                                  core_->options.max_body_bytes, " bytes."));
  } else if (ec == http::error::header_limit) {
    SendErrorAndClose(431, StrCat("Request header fields too large: the limit is ",
                                  core_->options.max_header_bytes, " bytes."));
  } else if (IsParseError(ec) && ec != http::error::end_of_stream &&
             ec != http::error::partial_message) {
    SendErrorAndClose(400, StrCat("Malformed HTTP request: ", ec.message(), "."));
  } else {
    // EOF between requests, reset, or a timeout that closed the socket.
    CloseNow("read ended");
  }
}

void Connection::OnRequest() {
  read_timer_.cancel();
  auto& message = parser_->get();
  Request request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  size_t q = request.target.find('?');
  request.path = request.target.substr(0, q);
  if (q != std::string::npos) request.query = request.target.substr(q + 1);
  for (const auto& field : message) {
    request.headers.Add(std::string(field.name_string()), std::string(field.value()));
  }
  request.body = std::move(message.body());
  request.remote_address = remote_;
  request.version = static_cast<int>(message.version());
  request.received = std::chrono::steady_clock::now();
  const bool keep_alive = message.keep_alive();
  parser_.reset();

  phase_ = Phase::kHandling;
  close_after_response_ = close_after_response_ || !keep_alive;
  last_queued_ = false;
  ResponderOptions options;
  options.cors_origin = core_->options.cors_origin;
  options.keep_alive = keep_alive;
  options.max_queued_bytes = core_->options.max_stream_buffer_bytes;
  options.observer = core_->observer;
  auto responder =
      std::make_shared<Responder>(shared_from_this(), std::move(request), std::move(options));
  responder_ = responder;
  core_->Dispatch(responder);
  responder.reset();  // a handler that kept no reference and sent nothing gets a 500 here
  if (phase_ == Phase::kHandling && !last_queued_) StartWatch();
}

// ---- Watching the socket while a response is outstanding -----------------------

void Connection::StartWatch() {
  if (watching_ || phase_ == Phase::kClosed || buffer_.size() >= kMaxWatchBuffer) return;
  watching_ = true;
  socket_.async_read_some(buffer_.prepare(kWatchChunk),
                          [self = shared_from_this()](beast::error_code ec, size_t bytes) {
                            self->OnWatch(ec, bytes);
                          });
}

void Connection::OnWatch(beast::error_code ec, size_t bytes) {
  watching_ = false;
  buffer_.commit(bytes);
  if (phase_ == Phase::kClosed) return;
  if (phase_ == Phase::kClosing) {
    if (ec && ec != net::error::operation_aborted) return CloseNow("closed");
    buffer_.consume(buffer_.size());
    return Drain();
  }
  if (resume_after_watch_) {
    // The response finished and cancelled this read to make way for the next one.
    resume_after_watch_ = false;
    if (ec && ec != net::error::operation_aborted) return CloseNow("client closed");
    return DoRead();
  }
  if (ec) {
    if (ec == net::error::operation_aborted) return;
    KLOG_DEBUG("http: client {} went away while its response was pending ({})", remote_,
               ec.message());
    return CloseNow("client gone");
  }
  StartWatch();
}

// ---- Writing ---------------------------------------------------------------------

bool Connection::Write(std::string bytes, bool last) {
  if (closed_.load()) return false;
  queued_bytes_.fetch_add(bytes.size(), std::memory_order_relaxed);
  // On the strand with nothing posted ahead of us: queue directly (the common
  // case of a handler answering synchronously). Otherwise post, keeping order.
  if (strand_.running_in_this_thread() && pending_posts_.load() == 0) {
    QueueWrite(std::move(bytes), last);
    return true;
  }
  size_t size = bytes.size();
  pending_posts_.fetch_add(1);
  bool posted = core_->Post(strand_, [self = shared_from_this(), bytes = std::move(bytes), last] {
    self->pending_posts_.fetch_sub(1);
    self->QueueWrite(std::move(bytes), last);
  });
  if (!posted) {
    pending_posts_.fetch_sub(1);
    queued_bytes_.fetch_sub(size, std::memory_order_relaxed);
  }
  return posted;
}

void Connection::QueueWrite(std::string bytes, bool last) {
  if (phase_ == Phase::kClosed || phase_ == Phase::kClosing) {
    queued_bytes_.fetch_sub(bytes.size(), std::memory_order_relaxed);
    return;
  }
  queue_.push_back(std::move(bytes));
  if (last) last_queued_ = true;
  if (!writing_) StartWrite();
}

void Connection::StartWrite() {
  writing_ = true;
  in_flight_.clear();
  in_flight_buffers_.clear();
  while (!queue_.empty()) {
    in_flight_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  for (const std::string& bytes : in_flight_) in_flight_buffers_.push_back(net::buffer(bytes));
  write_timer_.expires_after(core_->options.write_timeout);
  write_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec == net::error::operation_aborted || !self->writing_) return;
    if (self->write_timer_.expiry() > net::steady_timer::clock_type::now()) return;
    KLOG_DEBUG("http: write to {} timed out", self->remote_);
    self->CloseNow("write timeout");
  });
  net::async_write(socket_, in_flight_buffers_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
}

void Connection::OnWrite(beast::error_code ec) {
  writing_ = false;
  write_timer_.cancel();
  size_t written = 0;
  for (const std::string& bytes : in_flight_) written += bytes.size();
  queued_bytes_.fetch_sub(written, std::memory_order_relaxed);
  in_flight_.clear();
  in_flight_buffers_.clear();
  if (phase_ == Phase::kClosed) return;
  if (ec) {
    KLOG_DEBUG("http: write to {} failed: {}", remote_, ec.message());
    return CloseNow("write failed");
  }
  if (!queue_.empty()) return StartWrite();
  if (last_queued_) OnResponseDone();
}

void Connection::OnResponseDone() {
  last_queued_ = false;
  if (auto responder = responder_.lock()) responder->NotifyComplete();
  responder_.reset();
  if (close_after_response_ || core_->stopping.load()) return LingeringClose();
  phase_ = Phase::kReading;
  if (watching_) {
    resume_after_watch_ = true;
    beast::error_code ignored;
    socket_.cancel(ignored);
  } else {
    DoRead();
  }
}

void Connection::SendErrorAndClose(int status, std::string message) {
  read_timer_.cancel();
  parser_.reset();
  phase_ = Phase::kHandling;
  close_after_response_ = true;
  linger_ = true;  // the client may still be sending the rest of its request
  std::string body = OpenAiErrorJsonForStatus(status, std::move(message));
  Headers headers;
  headers.Add("Content-Type", std::string(kJsonContentType));
  headers.Add("Content-Length", std::to_string(body.size()));
  if (!core_->options.cors_origin.empty()) {
    headers.Add("Access-Control-Allow-Origin", core_->options.cors_origin);
  }
  headers.Add("Server", "krasis");
  headers.Add("Connection", "close");
  if (core_->observer && *core_->observer) {
    ResponseLog log;
    log.status = status;
    (*core_->observer)(log);
  }
  std::string bytes = SerializeResponseHead(status, headers) + body;
  queued_bytes_.fetch_add(bytes.size(), std::memory_order_relaxed);
  QueueWrite(std::move(bytes), true);
}

// ---- Closing ---------------------------------------------------------------------

void Connection::LingeringClose() {
  beast::error_code ignored;
  if (!linger_ && buffer_.size() == 0 && socket_.available(ignored) == 0) {
    // The request was read completely and nothing else arrived: close at once.
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    return CloseNow("done");
  }
  phase_ = Phase::kClosing;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  ArmReadTimer(kLingerTime);
  if (watching_) {
    socket_.cancel(ignored);  // OnWatch continues with Drain()
  } else {
    buffer_.consume(buffer_.size());
    Drain();
  }
}

void Connection::Drain() {
  socket_.async_read_some(net::buffer(discard_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (self->phase_ == Phase::kClosed) return;
                            if (ec) return self->CloseNow("closed");
                            self->Drain();
                          });
}

void Connection::CloseNow(const char* reason) {
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kClosed;
  closed_.store(true);
  KLOG_TRACE("http: connection {} closed ({})", remote_, reason);
  beast::error_code ignored;
  read_timer_.cancel();
  write_timer_.cancel();
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  queue_.clear();
  if (auto responder = responder_.lock()) responder->NotifyClosed();
  responder_.reset();
  core_->Unregister(this);
}

}  // namespace krasis::http::detail
