// Plain HTTP value types of the gateway's HTTP layer: a header list with
// case-insensitive lookup, the parsed Request handed to route handlers, reason
// phrases and response serialization. Nothing here includes Boost, so handler code
// (the OpenAI endpoints) compiles without Beast.
#pragma once

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace krasis::http {

// True when `a` and `b` are equal ignoring ASCII case (header names, schemes).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// An ordered list of header fields. Lookup ignores ASCII case; names keep the
// spelling they were added with. Several fields may share a name.
class Headers {
 public:
  using Field = std::pair<std::string, std::string>;

  Headers() = default;
  Headers(std::initializer_list<Field> fields);

  // Appends a field (does not replace fields of the same name).
  void Add(std::string name, std::string value);
  // Removes every field called `name`, then appends one.
  void Set(std::string name, std::string value);
  // Removes every field called `name`.
  void Remove(std::string_view name);
  // The value of the first field called `name`, if any.
  std::optional<std::string_view> Get(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }

  const std::vector<Field>& fields() const { return fields_; }
  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  std::vector<Field>::const_iterator begin() const { return fields_.begin(); }
  std::vector<Field>::const_iterator end() const { return fields_.end(); }

 private:
  std::vector<Field> fields_;
};

// One HTTP request as a handler sees it.
struct Request {
  std::string method;          // "GET", "POST", ... as sent (methods are case-sensitive)
  std::string target;          // the request target as sent: "/v1/models?x=1"
  std::string path;            // target up to '?', not percent-decoded
  std::string query;           // target after '?', not decoded ("" when absent)
  Headers headers;             // case-insensitive lookup
  std::string body;            // the whole body (bounded by the server's body limit)
  std::string remote_address;  // "127.0.0.1:53422" ("[::1]:53422" for IPv6)
  int version = 11;            // 10 for HTTP/1.0, 11 for HTTP/1.1
  std::chrono::steady_clock::time_point received;  // when the request was read

  std::optional<std::string_view> Header(std::string_view name) const {
    return headers.Get(name);
  }
  // The first query parameter called `name`, percent-decoded ('+' is a space).
  // A parameter without '=' has the value "".
  std::optional<std::string> QueryParam(std::string_view name) const;
};

// Decodes %XX escapes (and '+' as space when `plus_is_space`). Malformed escapes
// are kept as they are.
std::string PercentDecode(std::string_view text, bool plus_is_space);

// The reason phrase of a status code ("Not Found"); "Unknown" for codes it does
// not know.
std::string_view StatusReason(int status);

// True when `name` is a non-empty HTTP token (RFC 9110 tchar) and `value` holds
// no CR, LF or NUL: fields that are safe to write. Anything else is dropped by
// SerializeResponseHead (no header injection through handler-supplied values).
bool IsValidHeaderName(std::string_view name);
bool IsValidHeaderValue(std::string_view value);

// "HTTP/1.1 <status> <reason>\r\n" + the valid fields + "\r\n".
std::string SerializeResponseHead(int status, const Headers& headers);

}  // namespace krasis::http
