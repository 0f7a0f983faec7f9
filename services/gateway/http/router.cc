// Route table lookups (see router.h).
#include "services/gateway/http/router.h"

#include <algorithm>
#include <set>
#include <utility>

namespace krasis::http {
namespace {

std::string AllowList(const std::set<std::string>& methods) {
  std::string out;
  bool has_options = false;
  for (const std::string& m : methods) {
    if (m == "OPTIONS") has_options = true;
    if (!out.empty()) out += ", ";
    out += m;
  }
  if (!has_options) out += out.empty() ? "OPTIONS" : ", OPTIONS";
  return out;
}

}  // namespace

void Router::Handle(std::string method, std::string path, Handler handler) {
  exact_[std::move(path)][std::move(method)] = std::move(handler);
}

void Router::HandlePrefix(std::string method, std::string prefix, Handler handler) {
  auto it = std::find_if(prefixes_.begin(), prefixes_.end(),
                         [&](const auto& entry) { return entry.first == prefix; });
  if (it == prefixes_.end()) {
    prefixes_.emplace_back(std::move(prefix), Methods{});
    it = prefixes_.end() - 1;
  }
  it->second[std::move(method)] = std::move(handler);
  std::stable_sort(prefixes_.begin(), prefixes_.end(), [](const auto& a, const auto& b) {
    return a.first.size() > b.first.size();
  });
}

const Router::Methods* Router::MethodsFor(std::string_view path) const {
  if (auto it = exact_.find(path); it != exact_.end()) return &it->second;
  for (const auto& [prefix, methods] : prefixes_) {
    if (path.substr(0, prefix.size()) == prefix) return &methods;
  }
  return nullptr;
}

Router::Match Router::Find(std::string_view method, std::string_view path) const {
  Match match;
  const Methods* methods = MethodsFor(path);
  if (methods == nullptr) return match;
  if (auto it = methods->find(method); it != methods->end()) {
    match.kind = Match::Kind::kFound;
    match.handler = &it->second;
    return match;
  }
  std::set<std::string> names;
  for (const auto& [name, handler] : *methods) names.insert(name);
  match.kind = Match::Kind::kMethodNotAllowed;
  match.allow = AllowList(names);
  return match;
}

bool Router::Knows(std::string_view path) const { return MethodsFor(path) != nullptr; }

std::string Router::AllMethods() const {
  std::set<std::string> names;
  for (const auto& [path, methods] : exact_) {
    for (const auto& [name, handler] : methods) names.insert(name);
  }
  for (const auto& [prefix, methods] : prefixes_) {
    for (const auto& [name, handler] : methods) names.insert(name);
  }
  return AllowList(names);
}

}  // namespace krasis::http
