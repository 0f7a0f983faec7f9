// Status helpers used everywhere in Krasis.
//
// Fallible functions return absl::Status / absl::StatusOr<T> (no exceptions across
// component boundaries). Debian's Abseil (20220623) ships no RETURN_IF_ERROR or
// ASSIGN_OR_RETURN, so they live here. Conversion to grpc::Status happens once, in
// services/rpc/grpc_status.h, never in common/.
//
// NOTE: Debian builds Abseil with its own absl::string_view (not std::string_view)
// and absl::optional, so absl::StrCat / absl::InvalidArgumentError do not accept a
// std::string_view. Krasis code uses std::string_view in its own APIs and builds
// messages with krasis::StrCat below, which takes anything an ostream prints.
#pragma once

#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KRASIS_STATUS_CONCAT_INNER_(a, b) a##b
#define KRASIS_STATUS_CONCAT_(a, b) KRASIS_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if
// it is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status krasis_status_ = (expr);                    \
    if (!krasis_status_.ok()) return krasis_status_;           \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, Foo());` evaluates an absl::StatusOr<T>; on error it
// returns the status, otherwise it moves the value into `lhs`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  KRASIS_ASSIGN_OR_RETURN_IMPL_(KRASIS_STATUS_CONCAT_(krasis_statusor_, __LINE__), lhs, expr)

#define KRASIS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace krasis {

// Concatenates anything an std::ostream can print (strings of every kind, numbers,
// absl::string_view ...). Use it instead of absl::StrCat, which rejects
// std::string_view on Debian's Abseil.
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return std::move(out).str();
}

// Returns `status` with `context` prepended to its message ("context: message"),
// keeping the code. OK stays OK.
absl::Status Annotate(const absl::Status& status, std::string_view context);

// Shorthands that build messages from pieces, e.g.
// InvalidArgumentError("tensor ", name, " has shape ", shape).
template <typename... Args>
absl::Status InvalidArgumentError(const Args&... args) {
  return absl::InvalidArgumentError(StrCat(args...));
}
template <typename... Args>
absl::Status NotFoundError(const Args&... args) {
  return absl::NotFoundError(StrCat(args...));
}
template <typename... Args>
absl::Status DataLossError(const Args&... args) {
  return absl::DataLossError(StrCat(args...));
}
template <typename... Args>
absl::Status FailedPreconditionError(const Args&... args) {
  return absl::FailedPreconditionError(StrCat(args...));
}
template <typename... Args>
absl::Status InternalError(const Args&... args) {
  return absl::InternalError(StrCat(args...));
}
template <typename... Args>
absl::Status UnimplementedError(const Args&... args) {
  return absl::UnimplementedError(StrCat(args...));
}

}  // namespace krasis
