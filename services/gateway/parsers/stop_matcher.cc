// Streaming stop-string matcher (see stop_matcher.h): one KMP automaton per stop
// string, advanced byte by byte; the automaton states double as the length of
// text that must be held back.
#include "services/gateway/parsers/stop_matcher.h"

#include <algorithm>
#include <utility>

#include "services/gateway/parsers/text_scan.h"

namespace krasis::gateway {

StopMatcher::StopMatcher(std::vector<std::string> stops, bool include_stop_string)
    : include_stop_string_(include_stop_string) {
  for (std::string& stop : stops) {
    if (stop.empty()) continue;
    Pattern p;
    p.text = std::move(stop);
    p.border.assign(p.text.size(), 0);
    for (size_t i = 1, k = 0; i < p.text.size(); ++i) {
      while (k > 0 && p.text[i] != p.text[k]) k = p.border[k - 1];
      if (p.text[i] == p.text[k]) ++k;
      p.border[i] = k;
    }
    patterns_.push_back(std::move(p));
  }
}

StopResult StopMatcher::Push(std::string_view chunk) {
  StopResult result;
  if (stopped_) {
    result.stopped = true;
    result.matched = matched_;
    return result;
  }
  size_t scan_from = pending_.size();
  pending_.append(chunk);
  for (size_t i = scan_from; i < pending_.size(); ++i) {
    char c = pending_[i];
    const Pattern* best = nullptr;
    for (Pattern& p : patterns_) {
      if (p.state == p.text.size()) p.state = p.border[p.state - 1];  // never left full
      while (p.state > 0 && p.text[p.state] != c) p.state = p.border[p.state - 1];
      if (p.text[p.state] == c) ++p.state;
      if (p.state == p.text.size() && (best == nullptr || p.text.size() > best->text.size())) {
        best = &p;
      }
    }
    if (best != nullptr) {
      // The match ends at byte i; it started inside pending_ because every byte
      // that could begin a stop string was held back.
      size_t start = i + 1 - best->text.size();
      result.emit = pending_.substr(0, start);
      if (include_stop_string_) result.emit += best->text;
      result.stopped = true;
      result.matched = best->text;
      stopped_ = true;
      matched_ = best->text;
      pending_.clear();
      return result;
    }
  }
  size_t hold = 0;
  for (const Pattern& p : patterns_) hold = std::max(hold, p.state);
  hold = std::max(hold, IncompleteUtf8Tail(pending_));
  size_t emit_end = Utf8Floor(pending_, pending_.size() - hold);
  result.emit = pending_.substr(0, emit_end);
  pending_.erase(0, emit_end);
  return result;
}

std::string StopMatcher::Finish() {
  if (stopped_) return {};
  std::string rest = std::move(pending_);
  pending_.clear();
  for (Pattern& p : patterns_) p.state = 0;
  return rest;
}

std::optional<StopMatch> FindFirstStop(std::string_view text,
                                       const std::vector<std::string>& stops) {
  std::optional<StopMatch> best;
  size_t best_end = 0;
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) continue;
    size_t pos = text.find(stops[i]);
    if (pos == std::string_view::npos) continue;
    size_t end = pos + stops[i].size();
    if (!best || end < best_end || (end == best_end && pos < best->pos)) {
      best = StopMatch{pos, i};
      best_end = end;
    }
  }
  return best;
}

}  // namespace krasis::gateway
