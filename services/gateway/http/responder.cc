// Responder: full responses and SSE streams over a queued, strand-serialized sink
// (see responder.h).
#include "services/gateway/http/responder.h"

#include <cstdio>
#include <utility>

#include "common/logging.h"
#include "services/gateway/http/openai_errors.h"

namespace krasis::http {
namespace {

// Appends "<prefix><line>\n" for each line of `text` (LF, CRLF or CR ends a line).
void AppendFieldLines(std::string& out, std::string_view prefix, std::string_view text) {
  size_t start = 0;
  while (true) {
    size_t end = text.find_first_of("\r\n", start);
    out += prefix;
    out += text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    out += '\n';
    if (end == std::string_view::npos) break;
    start = end + 1;
    if (text[end] == '\r' && start < text.size() && text[start] == '\n') ++start;
  }
}

// Wraps `payload` in one chunk of chunked transfer encoding.
std::string Chunk(std::string_view payload) {
  char size[24];
  int n = std::snprintf(size, sizeof(size), "%zx\r\n", payload.size());
  std::string out;
  out.reserve(static_cast<size_t>(n) + payload.size() + 2);
  out.append(size, static_cast<size_t>(n));
  out += payload;
  out += "\r\n";
  return out;
}

constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace

Responder::Responder(std::shared_ptr<detail::ResponseSink> sink, Request request,
                     detail::ResponderOptions options)
    : sink_(std::move(sink)), request_(std::move(request)), options_(std::move(options)) {}

Responder::~Responder() {
  // Nobody else holds this object any more, so no lock is needed around the
  // public calls below (they take mu_ themselves).
  State state;
  {
    std::lock_guard<std::mutex> lock(mu_);
    state = state_;
  }
  if (gone_.load()) return;
  if (state == State::kIdle) {
    KLOG_ERROR("http: handler for {} {} dropped its responder without answering",
               request_.method, request_.path);
    SendError(500, "The server had an error while processing your request.");
  } else if (state == State::kStreaming) {
    Finish();
  }
}

void Responder::AddStandardHeaders(Headers& headers) const {
  if (!options_.cors_origin.empty() && !headers.Has("Access-Control-Allow-Origin")) {
    headers.Add("Access-Control-Allow-Origin", options_.cors_origin);
    if (options_.cors_origin != "*") headers.Add("Vary", "Origin");
  }
  if (!headers.Has("Server")) headers.Add("Server", "krasis");
}

bool Responder::Send(int status, std::string_view content_type, std::string body,
                     const Headers& headers) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kIdle) {
    KLOG_WARN("http: second response for {} {} ignored", request_.method, request_.path);
    return false;
  }
  state_ = State::kDone;
  status_ = status;
  ReportLocked(false);
  if (gone_.load()) return false;

  Headers h = headers;
  h.Remove("Content-Length");
  h.Remove("Transfer-Encoding");
  if (!h.Has("Content-Type") && !content_type.empty()) {
    h.Add("Content-Type", std::string(content_type));
  }
  // 1xx, 204 and 304 responses carry neither a body nor Content-Length.
  if (status < 200 || status == 204 || status == 304) {
    body.clear();
  } else {
    h.Add("Content-Length", std::to_string(body.size()));
  }
  AddStandardHeaders(h);
  bool close = !options_.keep_alive || sink_->ClosingAfterResponse();
  h.Set("Connection", close ? "close" : "keep-alive");
  std::string bytes = SerializeResponseHead(status, h);
  bytes += body;
  return sink_->Write(std::move(bytes), true);
}

bool Responder::SendJson(int status, std::string json, const Headers& headers) {
  return Send(status, kJsonContentType, std::move(json), headers);
}

bool Responder::SendError(int status, std::string message, std::optional<std::string> param,
                          std::optional<std::string> code) {
  return SendJson(status, OpenAiErrorJsonForStatus(status, std::move(message), std::move(param),
                                                   std::move(code)));
}

bool Responder::SendStatus(const absl::Status& status) {
  return SendJson(HttpStatusFromStatusCode(status.code()), OpenAiErrorJsonFromStatus(status));
}

bool Responder::StartEventStream(const Headers& headers) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kIdle) {
    KLOG_WARN("http: stream started after a response for {} {}", request_.method, request_.path);
    return false;
  }
  state_ = State::kStreaming;
  status_ = 200;
  if (gone_.load()) return false;

  Headers h = headers;
  h.Remove("Content-Length");
  h.Remove("Transfer-Encoding");
  if (!h.Has("Content-Type")) h.Add("Content-Type", "text/event-stream");
  if (!h.Has("Cache-Control")) h.Add("Cache-Control", "no-cache");
  // Tell buffering reverse proxies (nginx) to pass events through at once.
  if (!h.Has("X-Accel-Buffering")) h.Add("X-Accel-Buffering", "no");
  AddStandardHeaders(h);
  if (request_.version >= 11) {
    h.Add("Transfer-Encoding", "chunked");
    h.Set("Connection", "keep-alive");
  } else {
    // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
    h.Set("Connection", "close");
  }
  return sink_->Write(SerializeResponseHead(200, h), false);
}

Responder::WriteResult Responder::WriteEventLocked(std::string frame) {
  if (state_ != State::kStreaming || gone_.load()) return WriteResult::kFailed;
  if (sink_->QueuedBytes() > options_.max_queued_bytes) {
    KLOG_WARN("http: client of {} stopped reading ({} bytes queued); closing the stream",
              request_.path, sink_->QueuedBytes());
    return WriteResult::kOverflow;
  }
  if (request_.version >= 11) frame = Chunk(frame);
  return sink_->Write(std::move(frame), false) ? WriteResult::kOk : WriteResult::kFailed;
}

bool Responder::WriteEvent(std::string frame) {
  WriteResult result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    result = WriteEventLocked(std::move(frame));
  }
  if (result == WriteResult::kOverflow) {
    // Cut the client off now, and tell the caller at once (the connection's own
    // notice may come after this responder is gone).
    sink_->Abort("client is not reading the stream");
    NotifyClosed();
  }
  return result == WriteResult::kOk;
}

bool Responder::SendEvent(std::string_view data) {
  std::string frame;
  frame.reserve(data.size() + 8);
  AppendFieldLines(frame, "data: ", data);
  frame += '\n';
  return WriteEvent(std::move(frame));
}

bool Responder::SendEvent(std::string_view event, std::string_view data) {
  std::string frame;
  frame.reserve(event.size() + data.size() + 16);
  AppendFieldLines(frame, "event: ", event);
  AppendFieldLines(frame, "data: ", data);
  frame += '\n';
  return WriteEvent(std::move(frame));
}

bool Responder::SendComment(std::string_view text) {
  std::string frame;
  AppendFieldLines(frame, ": ", text);
  frame += '\n';
  return WriteEvent(std::move(frame));
}

bool Responder::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kStreaming) return false;
  state_ = State::kDone;
  ReportLocked(false);
  if (gone_.load()) return false;
  return sink_->Write(request_.version >= 11 ? std::string(kLastChunk) : std::string(), true);
}

void Responder::OnClose(std::function<void()> callback) {
  if (!callback) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (completed_) return;
    if (!gone_.load()) {
      close_callbacks_.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

bool Responder::started() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_ != State::kIdle;
}

int Responder::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Responder::NotifyClosed() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (completed_ || gone_.load()) return;
    gone_.store(true, std::memory_order_release);
    callbacks.swap(close_callbacks_);
    ReportLocked(true);
    if (state_ != State::kDone) {
      KLOG_DEBUG("http: client of {} {} went away before the response finished",
                 request_.method, request_.path);
    }
  }
  for (auto& callback : callbacks) callback();
}

void Responder::NotifyComplete() {
  std::vector<std::function<void()>> callbacks;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  completed_ = true;
  callbacks.swap(close_callbacks_);
}

void Responder::ReportLocked(bool client_gone) {
  if (reported_) return;
  reported_ = true;
  if (!options_.observer || !*options_.observer) return;
  ResponseLog log;
  log.method = request_.method;
  log.path = request_.path;
  log.status = status_;
  log.elapsed = std::chrono::steady_clock::now() - request_.received;
  log.client_gone = client_gone;
  (*options_.observer)(log);
}

}  // namespace krasis::http
