// Route table of the gateway's HTTP server: handlers registered by (method, path).
//
// Exact paths ("/v1/chat/completions") win over prefixes ("/v1/models/" for
// GET /v1/models/{id}); among prefixes the longest wins. A path that is known with
// other methods gives kMethodNotAllowed (405, with the Allow list); an unknown path
// gives kNotFound (404). Register every route before the server starts; Find is
// then safe from any thread.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "services/gateway/http/responder.h"

namespace krasis::http {

class Router {
 public:
  // Registers `handler` for `method` on exactly `path`. A second registration of
  // the same (method, path) replaces the first.
  void Handle(std::string method, std::string path, Handler handler);
  // Registers `handler` for `method` on every path starting with `prefix`.
  void HandlePrefix(std::string method, std::string prefix, Handler handler);

  struct Match {
    enum class Kind { kFound, kNotFound, kMethodNotAllowed };
    Kind kind = Kind::kNotFound;
    const Handler* handler = nullptr;  // set for kFound
    std::string allow;                 // methods of the path, "GET, POST, OPTIONS"
  };
  Match Find(std::string_view method, std::string_view path) const;

  // True when some method is registered for `path` (exactly or by prefix).
  bool Knows(std::string_view path) const;
  // Every method registered anywhere plus OPTIONS, e.g. "GET, POST, OPTIONS".
  std::string AllMethods() const;

 private:
  using Methods = std::map<std::string, Handler, std::less<>>;
  const Methods* MethodsFor(std::string_view path) const;

  std::map<std::string, Methods, std::less<>> exact_;
  std::vector<std::pair<std::string, Methods>> prefixes_;  // longest first
};

}  // namespace krasis::http
