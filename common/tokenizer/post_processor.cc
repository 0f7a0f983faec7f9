// tokenizer.json post-processors (see post_processor.h).
#include "common/tokenizer/post_processor.h"

#include <string>
#include <utility>

#include "common/status.h"

namespace krasis::tokenizer {
namespace {

// Parses a TemplateProcessing "single" template into pieces.
absl::Status ParseTemplate(const Json& j, std::vector<PostProcessor::Piece>* out) {
  constexpr std::string_view what = "post_processor TemplateProcessing";
  auto single = j.find("single");
  if (single == j.end() || !single->is_array()) {
    return InvalidArgumentError(what, ": field 'single' must be an array");
  }
  const Json empty = Json::object();
  auto specials_it = j.find("special_tokens");
  const Json& specials = specials_it != j.end() && specials_it->is_object() ? *specials_it : empty;
  for (const Json& item : *single) {
    if (item.contains("Sequence")) {
      out->push_back({true, {}});
      continue;
    }
    auto special = item.find("SpecialToken");
    if (special == item.end() || !special->is_object()) {
      return InvalidArgumentError(what, ": template items must be Sequence or SpecialToken");
    }
    ASSIGN_OR_RETURN(const std::string name, StringField(*special, "id", what));
    auto entry = specials.find(name);
    if (entry == specials.end() || !entry->contains("ids") || !entry->at("ids").is_array()) {
      return InvalidArgumentError(what, ": special token '", name,
                                  "' is missing from special_tokens");
    }
    PostProcessor::Piece piece;
    for (const Json& id : entry->at("ids")) {
      if (!id.is_number_integer()) {
        return InvalidArgumentError(what, ": special token '", name, "' has a non-integer id");
      }
      piece.ids.push_back(id.get<int32_t>());
    }
    out->push_back(std::move(piece));
  }
  return absl::OkStatus();
}

absl::Status Collect(const Json& j, std::vector<PostProcessor::Piece>* single, bool* any) {
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, "post_processor"));
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "TemplateProcessing") {
    if (*any) {
      return InvalidArgumentError("post_processor: more than one TemplateProcessing");
    }
    *any = true;
    return ParseTemplate(j, single);
  }
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgumentError("post_processor Sequence: field 'processors' must be an array");
    }
    for (const Json& step : *it) {
      if (!step.is_null()) RETURN_IF_ERROR(Collect(step, single, any));
    }
    return absl::OkStatus();
  }
  return InvalidArgumentError("unsupported post_processor type '", type, "'");
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const Json& j) {
  if (j.is_null()) return nullptr;
  auto processor = std::unique_ptr<PostProcessor>(new PostProcessor());
  bool any = false;
  RETURN_IF_ERROR(Collect(j, &processor->single_, &any));
  if (!any) return nullptr;
  return processor;
}

std::vector<int32_t> PostProcessor::Apply(std::span<const int32_t> ids) const {
  std::vector<int32_t> out;
  out.reserve(ids.size() + single_.size());
  for (const Piece& piece : single_) {
    if (piece.is_sequence) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      out.insert(out.end(), piece.ids.begin(), piece.ids.end());
    }
  }
  return out;
}

}  // namespace krasis::tokenizer
