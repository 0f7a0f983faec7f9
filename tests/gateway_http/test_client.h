// A tiny blocking HTTP/1.1 client over a raw loopback socket, for the gateway
// HTTP tests. Raw bytes in, raw bytes out, so tests can send malformed requests,
// look at the exact framing (chunk sizes, SSE lines) and hang up mid-stream. Every
// read has a timeout, so a broken server fails a test instead of hanging it.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace krasis::http::testing {

struct RawResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                 // de-chunked
  std::vector<std::string> chunks;  // chunk payloads in order (chunked responses)

  // Value of the first header called `name` (case-insensitive), "" if absent.
  std::string Header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (n.size() != name.size()) continue;
      bool same = true;
      for (size_t i = 0; i < n.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(n[i])) !=
            std::tolower(static_cast<unsigned char>(name[i]))) {
          same = false;
          break;
        }
      }
      if (same) return v;
    }
    return "";
  }
  bool HasHeader(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (n.size() == name.size() && strncasecmp(n.c_str(), std::string(name).c_str(), n.size()) == 0) {
        return true;
      }
    }
    return false;
  }
};

class TestClient {
 public:
  using Ms = std::chrono::milliseconds;

  TestClient() = default;
  ~TestClient() { Close(); }
  TestClient(TestClient&& other) noexcept : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  bool Connect(int port) {
    Close();
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one full response (Content-Length, chunked, or no body for 1xx/204).
  // A response without either is read until the server closes.
  std::optional<RawResponse> ReadResponse(Ms timeout = Ms(5000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto head = ReadHead(deadline);
    if (!head) return std::nullopt;
    RawResponse response = std::move(*head);
    if (response.status == 204 || response.status == 304 || response.status / 100 == 1) {
      return response;
    }
    std::string te = response.Header("Transfer-Encoding");
    if (te == "chunked") {
      while (true) {
        auto chunk = ReadChunk(deadline);
        if (!chunk) return std::nullopt;
        if (chunk->empty()) break;
        response.body += *chunk;
        response.chunks.push_back(std::move(*chunk));
      }
      return response;
    }
    std::string length = response.Header("Content-Length");
    if (!length.empty()) {
      size_t n = std::strtoull(length.c_str(), nullptr, 10);
      if (!Fill(n, deadline)) return std::nullopt;
      response.body = buffer_.substr(0, n);
      buffer_.erase(0, n);
      return response;
    }
    while (Fill(buffer_.size() + 1, deadline)) {
    }
    response.body = std::move(buffer_);
    buffer_.clear();
    return response;
  }

  // Reads a status line and header fields.
  std::optional<RawResponse> ReadHead(std::chrono::steady_clock::time_point deadline) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(buffer_.size() + 1, deadline)) return std::nullopt;
    }
    std::string head = buffer_.substr(0, end + 2);
    buffer_.erase(0, end + 4);
    RawResponse response;
    size_t line_end = head.find("\r\n");
    std::string status_line = head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12) return std::nullopt;
    response.status = std::atoi(status_line.c_str() + 9);
    size_t pos = line_end + 2;
    while (pos < head.size()) {
      size_t next = head.find("\r\n", pos);
      std::string line = head.substr(pos, next - pos);
      pos = next + 2;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      response.headers.emplace_back(line.substr(0, colon), value);
    }
    return response;
  }
  std::optional<RawResponse> ReadHead(Ms timeout = Ms(5000)) {
    return ReadHead(std::chrono::steady_clock::now() + timeout);
  }

  // Reads one chunk of a chunked body: its payload ("" for the last chunk,
  // whose trailing CRLF is consumed too). nullopt on timeout or bad framing.
  std::optional<std::string> ReadChunk(std::chrono::steady_clock::time_point deadline) {
    size_t end;
    while ((end = buffer_.find("\r\n")) == std::string::npos) {
      if (!Fill(buffer_.size() + 1, deadline)) return std::nullopt;
    }
    std::string size_line = buffer_.substr(0, end);
    char* parsed_end = nullptr;
    size_t size = std::strtoull(size_line.c_str(), &parsed_end, 16);
    if (size_line.empty() || parsed_end != size_line.c_str() + size_line.size()) {
      return std::nullopt;
    }
    if (!Fill(end + 2 + size + 2, deadline)) return std::nullopt;
    if (buffer_.compare(end + 2 + size, 2, "\r\n") != 0) return std::nullopt;
    std::string payload = buffer_.substr(end + 2, size);
    buffer_.erase(0, end + 2 + size + 2);
    return payload;
  }
  std::optional<std::string> ReadChunk(Ms timeout = Ms(5000)) {
    return ReadChunk(std::chrono::steady_clock::now() + timeout);
  }

  // Reads `n` bytes exactly (for interim responses like "100 Continue").
  std::optional<std::string> ReadExactly(size_t n, Ms timeout = Ms(5000)) {
    if (!Fill(n, std::chrono::steady_clock::now() + timeout)) return std::nullopt;
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
  }

  // True when the server closes the connection (EOF or reset) within `timeout`.
  bool WaitClosed(Ms timeout = Ms(5000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int r = WaitReadable(deadline);
      if (r <= 0) return false;
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) return true;
      buffer_.append(tmp, static_cast<size_t>(n));
    }
  }

  int fd() const { return fd_; }
  const std::string& buffered() const { return buffer_; }

 private:
  int WaitReadable(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return 0;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(left.count()));
  }

  // Reads until the buffer holds at least `n` bytes. False on EOF/timeout.
  bool Fill(size_t n, std::chrono::steady_clock::time_point deadline) {
    while (buffer_.size() < n) {
      if (WaitReadable(deadline) <= 0) return false;
      char tmp[16384];
      ssize_t got = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (got <= 0) return false;
      buffer_.append(tmp, static_cast<size_t>(got));
    }
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

// "GET /path HTTP/1.1" with Host and optional extra header lines ("Name: value").
inline std::string MakeRequest(std::string_view method, std::string_view target,
                               std::string_view body = {},
                               const std::vector<std::string>& extra_headers = {}) {
  std::string out = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: localhost\r\n";
  for (const std::string& h : extra_headers) out += h + "\r\n";
  if (!body.empty() || method == "POST") out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "\r\n";
  out += body;
  return out;
}

// Connects, sends one request, reads one response.
inline std::optional<RawResponse> RoundTrip(int port, const std::string& request) {
  TestClient client;
  if (!client.Connect(port) || !client.Send(request)) return std::nullopt;
  return client.ReadResponse();
}

}  // namespace krasis::http::testing
