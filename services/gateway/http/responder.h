// The Responder: how a route handler answers one HTTP request.
//
// A handler gets the Request and a shared Responder. It answers either with one
// full response (Send / SendJson / SendError) or with a Server-Sent Events stream
// (StartEventStream, then SendEvent any number of times, then Finish). Every method
// is thread-safe and never blocks on the network: bytes are queued and written by
// the connection's strand, so a decode thread may call SendEvent directly. A
// handler may answer later from another thread by keeping the ResponderPtr; the
// connection stays open until the response is complete.
//
// Client disconnects: while a response is outstanding the server watches the
// socket (a pending read), so a client that goes away is noticed even when nothing
// is being written. Then ClientGone() turns true, SendEvent returns false, and the
// OnClose callbacks run once (on an io thread, or on the thread whose SendEvent
// found the client too far behind; keep them short: cancel the generation,
// signal a condition; never wait on the Responder's own calls). Server shutdown
// (HttpServer::Stop past its deadline) counts as a disconnect too.
//
// A Responder dropped without an answer sends a 500; a dropped open stream is
// finished.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "services/gateway/http/http_types.h"

namespace krasis::http {

// What the server reports once per request, when its response is complete (the
// last bytes were queued) or abandoned because the client went away.
struct ResponseLog {
  std::string_view method;
  std::string_view path;
  int status = 0;                              // 0 when no response was started
  std::chrono::steady_clock::duration elapsed{};  // since the request was read
  bool client_gone = false;                    // closed before the response finished
};
using ResponseObserver = std::function<void(const ResponseLog&)>;

namespace detail {
// Where a Responder's bytes go: implemented by the server's connection. All
// methods are thread-safe and never block.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // Queues `bytes` for the client in call order; `last` ends the response.
  // Returns false when the connection is already closed.
  virtual bool Write(std::string bytes, bool last) = 0;
  // Bytes queued and not yet written to the socket.
  virtual size_t QueuedBytes() const = 0;
  // Closes the connection (the responder is then told the client is gone).
  virtual void Abort(std::string reason) = 0;
  // True when the connection will close after this response (server stopping).
  virtual bool ClosingAfterResponse() const = 0;
};

// Per-request settings the server hands to each Responder.
struct ResponderOptions {
  std::string cors_origin;           // Access-Control-Allow-Origin; empty: none
  bool keep_alive = true;            // the client asked to keep the connection
  size_t max_queued_bytes = 16 << 20;  // unwritten bytes before a stream is cut
  std::shared_ptr<const ResponseObserver> observer;  // may be null
};
}  // namespace detail

class Responder {
 public:
  Responder(std::shared_ptr<detail::ResponseSink> sink, Request request,
            detail::ResponderOptions options);
  ~Responder();
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // The request being answered (valid as long as the Responder lives).
  const Request& request() const { return request_; }

  // Sends one full response. `headers` may add or override fields (Content-Length
  // and Transfer-Encoding are always set by the server). Returns false when a
  // response was already started or the client is gone.
  bool Send(int status, std::string_view content_type, std::string body,
            const Headers& headers = {});
  bool SendJson(int status, std::string json, const Headers& headers = {});
  // An OpenAI-shaped error (see openai_errors.h) with the type from `status`.
  bool SendError(int status, std::string message,
                 std::optional<std::string> param = std::nullopt,
                 std::optional<std::string> code = std::nullopt);
  // An OpenAI-shaped error for a non-OK absl::Status (HttpStatusFromStatusCode).
  bool SendStatus(const absl::Status& status);

  // Starts a Server-Sent Events response: 200, text/event-stream, Cache-Control:
  // no-cache, Connection: keep-alive, chunked transfer encoding (HTTP/1.0
  // clients get an unframed body ended by closing the connection).
  bool StartEventStream(const Headers& headers = {});
  // Writes "data: <data>\n\n" as one chunk (each line of a multi-line `data`
  // gets its own "data: " prefix). Returns false once the client is gone, before
  // StartEventStream, after Finish, or when the client stopped reading and more
  // than max_stream_buffer_bytes are waiting (the connection is then closed).
  bool SendEvent(std::string_view data);
  // Writes "event: <event>\ndata: <data>\n\n" (named events).
  bool SendEvent(std::string_view event, std::string_view data);
  // Writes ": <text>\n\n", a comment clients ignore (keeps proxies from timing out
  // an idle stream during a long prefill).
  bool SendComment(std::string_view text);
  // Ends the stream (the terminating zero-length chunk). Returns false when no
  // stream is open.
  bool Finish();

  // True once the client disconnected (or the server closed the connection)
  // before the response was complete.
  bool ClientGone() const { return gone_.load(std::memory_order_acquire); }
  // Runs `callback` once when the client goes away before the response is
  // complete; at once (on this thread) when it is already gone; never when the
  // response completes first (the callback is then dropped).
  void OnClose(std::function<void()> callback);

  // True once Send or StartEventStream was called.
  bool started() const;
  // The status sent (0 before a response started).
  int status() const;

  // Called by the connection (on its strand): the client went away / every byte
  // of the response was written.
  void NotifyClosed();
  void NotifyComplete();

 private:
  enum class State { kIdle, kStreaming, kDone };
  // Common fields: CORS, Connection.
  void AddStandardHeaders(Headers& headers) const;
  enum class WriteResult { kOk, kFailed, kOverflow };
  WriteResult WriteEventLocked(std::string frame);
  bool WriteEvent(std::string frame);
  void ReportLocked(bool client_gone);

  std::shared_ptr<detail::ResponseSink> sink_;
  const Request request_;
  const detail::ResponderOptions options_;

  mutable std::mutex mu_;
  State state_ = State::kIdle;   // guarded by mu_
  int status_ = 0;               // guarded by mu_
  bool completed_ = false;       // guarded by mu_
  bool reported_ = false;        // guarded by mu_
  std::vector<std::function<void()>> close_callbacks_;  // guarded by mu_
  std::atomic<bool> gone_{false};
};

using ResponderPtr = std::shared_ptr<Responder>;

// A route handler. It runs on an io thread and must not block: hand slow work
// (tokenizing a huge prompt, waiting on the model) to other threads and answer
// through the Responder from there.
using Handler = std::function<void(const Request& request, ResponderPtr responder)>;

}  // namespace krasis::http
