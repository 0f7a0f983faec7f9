// Byte-level scanning helpers for the streaming parsers (see text_scan.h).
#include "services/gateway/parsers/text_scan.h"

#include <algorithm>

namespace krasis::gateway {

bool AllSpace(std::string_view text) {
  return std::all_of(text.begin(), text.end(), IsSpace);
}

size_t LeadingSpace(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && IsSpace(text[i])) ++i;
  return i;
}

std::string_view TrimSpace(std::string_view text) {
  size_t begin = LeadingSpace(text);
  size_t end = text.size();
  while (end > begin && IsSpace(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

size_t PartialSuffix(std::string_view text, std::string_view marker) {
  if (marker.empty()) return 0;
  size_t longest = std::min(text.size(), marker.size() - 1);
  for (size_t len = longest; len > 0; --len) {
    if (text.substr(text.size() - len) == marker.substr(0, len)) return len;
  }
  return 0;
}

size_t PartialSuffix(std::string_view text, std::span<const std::string_view> markers) {
  size_t best = 0;
  for (std::string_view marker : markers) best = std::max(best, PartialSuffix(text, marker));
  return best;
}

MarkerHit FindFirst(std::string_view text, std::span<const std::string_view> markers,
                    size_t from) {
  MarkerHit hit;
  for (size_t i = 0; i < markers.size(); ++i) {
    if (markers[i].empty()) continue;
    size_t pos = text.find(markers[i], from);
    if (pos == std::string_view::npos) continue;
    if (pos < hit.pos || (pos == hit.pos && markers[i].size() > markers[hit.which].size())) {
      hit.pos = pos;
      hit.which = i;
    }
  }
  return hit;
}

size_t IncompleteUtf8Tail(std::string_view text) {
  // Look back at most 3 bytes for the lead byte of the last sequence.
  size_t n = text.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    auto byte = static_cast<unsigned char>(text[n - back]);
    if ((byte & 0xC0) == 0x80) continue;  // continuation byte: keep looking
    size_t need = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

size_t Utf8Floor(std::string_view text, size_t pos) {
  pos = std::min(pos, text.size());
  while (pos > 0 && pos < text.size() &&
         (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) {
    --pos;
  }
  return pos;
}

}  // namespace krasis::gateway
