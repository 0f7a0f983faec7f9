// Chunkings for the streaming-parser tests: the same text split every way a
// streaming detokenizer might split it, so each test can check that the
// streamed result equals the whole-text result.
//
// Detokenized chunks are whole code points, so splits fall on code point
// boundaries; ByteChunkings() also splits inside code points, for parsers that
// must merely not lose or reorder bytes then.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace krasis::gateway::testing {

using Chunking = std::vector<std::string_view>;

// Positions 0..size that do not fall inside a UTF-8 sequence.
inline std::vector<size_t> CodePointBoundaries(std::string_view text) {
  std::vector<size_t> out;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) out.push_back(i);
  }
  return out;
}

inline Chunking SplitAt(std::string_view text, const std::vector<size_t>& cuts) {
  Chunking chunks;
  size_t prev = 0;
  for (size_t cut : cuts) {
    chunks.push_back(text.substr(prev, cut - prev));
    prev = cut;
  }
  chunks.push_back(text.substr(prev));
  return chunks;
}

// Whole text; every split into two; every split into three whose middle chunk
// is at most `max_middle` bytes (so any marker up to that long is also seen cut
// into three pieces, the middle one possibly empty); one code point per chunk;
// `random_count` random chunkings (seeded, so failures reproduce). Empty chunks
// are included too: a detokenizer step may produce no text.
inline std::vector<Chunking> Chunkings(std::string_view text, size_t max_middle = 32,
                                       int random_count = 60, uint32_t seed = 1234) {
  std::vector<size_t> bounds = CodePointBoundaries(text);
  std::vector<Chunking> out;
  out.push_back({text});
  for (size_t a : bounds) out.push_back(SplitAt(text, {a}));
  if (max_middle > 0) {
    for (size_t i = 0; i < bounds.size(); ++i) {
      for (size_t j = i; j < bounds.size() && bounds[j] - bounds[i] <= max_middle; ++j) {
        out.push_back(SplitAt(text, {bounds[i], bounds[j]}));
      }
    }
  }
  std::vector<size_t> all_cuts(bounds.begin() + 1, bounds.end() - (bounds.size() > 1 ? 1 : 0));
  out.push_back(SplitAt(text, all_cuts));  // one code point per chunk
  std::mt19937 rng(seed);
  for (int r = 0; r < random_count; ++r) {
    std::vector<size_t> cuts;
    size_t max_step = 1 + rng() % 12;
    for (size_t b = 1; b < bounds.size(); b += 1 + rng() % max_step) cuts.push_back(bounds[b]);
    if (!cuts.empty() && cuts.back() == text.size()) cuts.pop_back();
    out.push_back(SplitAt(text, cuts));
  }
  return out;
}

// Every byte split into two and one byte per chunk (may split code points).
inline std::vector<Chunking> ByteChunkings(std::string_view text) {
  std::vector<Chunking> out;
  for (size_t a = 0; a <= text.size(); ++a) out.push_back(SplitAt(text, {a}));
  std::vector<size_t> cuts;
  for (size_t i = 1; i < text.size(); ++i) cuts.push_back(i);
  out.push_back(SplitAt(text, cuts));
  return out;
}

// Human-readable chunking for failure messages.
inline std::string Describe(const Chunking& chunks) {
  std::string out;
  for (std::string_view c : chunks) {
    out += '[';
    out += c;
    out += ']';
  }
  return out;
}

}  // namespace krasis::gateway::testing
