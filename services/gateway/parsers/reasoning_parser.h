// Splits a model's output into reasoning_content and content at <think> tags
// (Qwen3, Qwen3-Next thinking, DeepSeek-R1 / V3.1, GLM-4.5+), streaming or whole.
//
// Rules (those of vLLM's BaseThinkingReasoningParser family, made exact for text
// that arrives in arbitrary chunks):
//   * A start tag counts only at the very start of the output, after optional
//     whitespace (which is dropped with it). Templates that put "<think>" in the
//     prompt (Qwen3-Thinking, Qwen3-Next thinking, DeepSeek-R1, V3.1 thinking)
//     make the output start inside the reasoning: set starts_in_reasoning. A
//     start tag the model writes anyway is then dropped too.
//   * Without a leading start tag and without starts_in_reasoning the whole
//     output is content and "</think>" in it is plain text (a model whose
//     template disabled thinking, e.g. "<think>\n\n</think>\n\n" in the prompt).
//   * In the reasoning, everything up to the first end tag is reasoning_content
//     and everything after it is content, byte for byte. Like vLLM, whitespace
//     around the tags is kept: Qwen3 typically yields reasoning "...\n" and
//     content "\n\nAnswer". (vLLM maps an empty content to null; the gateway does
//     that when it builds the response.) Output that ends before the end tag
//     (max_tokens) is all reasoning.
//   * Tags split across chunks are held back until they are decided; nothing
//     of a tag ever reaches either stream. The tags are ASCII, so held-back text
//     always starts at a code point boundary.
// Parse(text) implements the same rules directly on the whole text and gives the
// same reasoning and content as Push() over any chunking followed by Finish().
#pragma once

#include <string>
#include <string_view>

namespace krasis::gateway {

struct ReasoningOptions {
  bool starts_in_reasoning = false;  // the prompt already opened the reasoning
  std::string start_tag = "<think>";
  std::string end_tag = "</think>";
};

struct ReasoningDelta {
  std::string reasoning;  // reasoning_content text
  std::string content;    // content text
  bool empty() const { return reasoning.empty() && content.empty(); }
};

class ReasoningParser {
 public:
  explicit ReasoningParser(ReasoningOptions options = {});

  // Feeds the next piece of output; returns what can be handed on now.
  ReasoningDelta Push(std::string_view chunk);
  // The end of the output: returns anything still held back.
  ReasoningDelta Finish();

  // True once the reasoning has ended (or never started): later text is content,
  // so the gateway can start parsing tool calls from here on.
  bool in_content() const { return state_ == State::kContent || state_ == State::kFinished; }

  // The whole output at once; same result as streaming it.
  static ReasoningDelta Parse(std::string_view text, const ReasoningOptions& options = {});

 private:
  enum class State { kStart, kReasoning, kContent, kFinished };
  void Process(ReasoningDelta* out);

  ReasoningOptions options_;
  State state_ = State::kStart;
  std::string pending_;  // received, not yet handed on
};

}  // namespace krasis::gateway
