// Support for integration tests and serving benchmarks: runs `krasis serve` (which starts the four
// real services on loopback, ports picked freely) on a model directory, finds its
// addresses from the server file, and speaks plain HTTP/1.1 over sockets so the
// tests see exactly the bytes the gateway sends.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

extern char** environ;

namespace krasis::testing {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Polls `path` until it holds valid JSON, or gives up after `timeout` (null).
inline nlohmann::json WaitForJson(const fs::path& path, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    std::ifstream in(path);
    if (in) {
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (!j.is_discarded()) return j;
    }
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return nullptr;
}

inline bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

struct HttpResponse {
  int status = 0;  // 0: no response (connection failed or closed early)
  std::string headers, body;
};

// Connects to host:port; -1 on failure. Reads time out after `timeout`.
inline int Connect(const std::string& address, std::chrono::seconds timeout = 60s) {
  size_t colon = address.rfind(':');
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends one request (Connection: close) and reads the response as it arrives:
// `on_data(all bytes so far)` after every read may return false to hang up
// early. The response body is returned raw (chunked framing included for SSE).
inline HttpResponse HttpExchange(const std::string& address, const std::string& method, const std::string& path,
                                 const std::string& body,
                                 const std::function<bool(const std::string&)>& on_data = nullptr,
                                 const std::string& extra_headers = "") {
  HttpResponse r;
  int fd = Connect(address);
  if (fd < 0) return r;
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" +
                    extra_headers + "Connection: close\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n" + body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    resp.append(buf, static_cast<size_t>(n));
    if (on_data && !on_data(resp)) break;
  }
  close(fd);
  size_t header_end = resp.find("\r\n\r\n");
  if (resp.size() < 12 || header_end == std::string::npos) return r;
  r.status = std::stoi(resp.substr(9, 3));
  r.headers = resp.substr(0, header_end);
  r.body = resp.substr(header_end + 4);
  return r;
}

inline HttpResponse HttpPost(const std::string& address, const std::string& path, const std::string& body) {
  return HttpExchange(address, "POST", path, body);
}

// The JSON payloads of the `data:` lines of an SSE body, in order ("[DONE]" as a string).
inline std::vector<nlohmann::json> SseEvents(const std::string& raw) {
  std::vector<nlohmann::json> events;
  size_t pos = 0;
  while ((pos = raw.find("data: ", pos)) != std::string::npos) {
    size_t end = raw.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string payload = raw.substr(pos + 6, end - pos - 6);
    events.push_back(payload == "[DONE]" ? nlohmann::json("[DONE]") : nlohmann::json::parse(payload, nullptr, false));
    pos = end;
  }
  return events;
}

// Starts `args` (args[0] is the executable); -1 on failure.
inline pid_t Spawn(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  return posix_spawn(&pid, args[0].c_str(), nullptr, nullptr, argv.data(), environ) == 0 ? pid : -1;
}

// SIGTERM, then waits for the process; returns its wait status.
inline int Terminate(pid_t pid) {
  int status = 0;
  kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
  return status;
}

// One `krasis serve` launcher and its four services.
class Cluster {
 public:
  // `home`: the launcher's state folder (created; removed on Stop).
  explicit Cluster(fs::path home) : home_(std::move(home)) {}
  ~Cluster() { Stop(); }

  // Starts the launcher on `model_dir` and waits until the gateway answers
  // /health; false (with a reason in `error`) if it does not within a minute.
  bool Start(const std::string& model_dir, std::vector<std::string> extra = {}, std::string* error = nullptr) {
    fs::remove_all(home_);
    std::string exe = std::string(KRASIS_BINARY_DIR) + "/bin/krasis";
    if (const char* bin = std::getenv("KRASIS_BIN_DIR")) exe = std::string(bin) + "/krasis";
    std::vector<std::string> args = {exe, "serve", "--model", model_dir, "--port", "0", "--grpc-port", "0",
                                     "--home", home_.string()};
    if (std::find(extra.begin(), extra.end(), "--kv-budget-mb") == extra.end()) {
      extra.insert(extra.end(), {"--kv-budget-mb", "64"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = Spawn(args);
    if (pid_ < 0) {
      if (error) *error = "cannot start " + exe;
      return false;
    }
    info_ = WaitForJson(home_ / "servers" / (std::to_string(pid_) + ".json"), 60s);
    if (info_.is_null()) {
      if (error) *error = "the launcher wrote no server file";
      return false;
    }
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (HttpExchange(http(), "GET", "/health", "").status == 200) return true;
      std::this_thread::sleep_for(100ms);
    }
    if (error) *error = "the gateway never reported healthy";
    return false;
  }

  // SIGTERM, then wait; returns the launcher's exit status (-1 if not running).
  int Stop() {
    if (pid_ <= 0) return -1;
    int status = Terminate(pid_);
    pid_ = -1;
    fs::remove_all(home_);
    return status;
  }

  std::string http() const { return info_["http_address"].get<std::string>(); }
  std::string grpc() const { return info_["grpc_address"].get<std::string>(); }
  std::string service(const std::string& name) const { return info_["services"][name].get<std::string>(); }
  pid_t launcher_pid() const { return pid_; }
  fs::path ready_file(const std::string& name) const {
    return home_ / "run" / std::to_string(pid_) / (name + ".ready.json");
  }
  // The pid of a service process (from its ready file); -1 if unknown.
  pid_t ServicePid(const std::string& name) const {
    auto j = WaitForJson(ready_file(name), 5s);
    return j.is_null() ? -1 : j["pid"].get<int>();
  }

 private:
  fs::path home_;
  pid_t pid_ = -1;
  nlohmann::json info_;
};

}  // namespace krasis::testing
