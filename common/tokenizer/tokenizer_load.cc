// Tokenizer loading: tokenizer.json components, added tokens, and the
// tokenizer_config.json / chat_template.jinja that sit beside it.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "common/status.h"
#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/post_processor.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/tokenizer.h"

namespace krasis {
namespace {

using tokenizer::AddedToken;
using tokenizer::Json;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path.string(), ": cannot open file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return DataLossError(path.string(), ": read error");
  return std::move(text).str();
}

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view source) {
  Json j;
  try {
    j = Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    return InvalidArgumentError(source, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) return InvalidArgumentError(source, ": top level must be a JSON object");
  return j;
}

// One entry of "added_tokens" (tokenizer.json) or of "added_tokens_decoder"
// (tokenizer_config.json, where the id is the key).
absl::StatusOr<AddedToken> ParseAddedToken(const Json& j, int64_t id, std::string_view what) {
  if (!j.is_object()) return InvalidArgumentError(what, ": entries must be objects");
  AddedToken t;
  if (id < 0) {
    auto it = j.find("id");
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < 0) {
      return InvalidArgumentError(what, ": entry without a valid 'id'");
    }
    id = it->get<int64_t>();
  }
  if (id >= (int64_t{1} << 30)) return InvalidArgumentError(what, ": id ", id, " is too large");
  t.id = static_cast<int32_t>(id);
  ASSIGN_OR_RETURN(t.content, tokenizer::StringField(j, "content", what));
  ASSIGN_OR_RETURN(t.special, tokenizer::BoolField(j, "special", false, what));
  ASSIGN_OR_RETURN(t.single_word, tokenizer::BoolField(j, "single_word", false, what));
  ASSIGN_OR_RETURN(t.lstrip, tokenizer::BoolField(j, "lstrip", false, what));
  ASSIGN_OR_RETURN(t.rstrip, tokenizer::BoolField(j, "rstrip", false, what));
  ASSIGN_OR_RETURN(t.normalized, tokenizer::BoolField(j, "normalized", !t.special, what));
  return t;
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> ConfigToken(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

absl::Status Tokenizer::Build(const Json& j) {
  auto member = [&](const char* key) -> const Json& {
    static const Json null_json;
    auto it = j.find(key);
    return it == j.end() ? null_json : *it;
  };
  ASSIGN_OR_RETURN(normalizer_, tokenizer::NormalizerFromJson(member("normalizer")));
  ASSIGN_OR_RETURN(pre_tokenizer_, tokenizer::PreTokenizerFromJson(member("pre_tokenizer")));
  ASSIGN_OR_RETURN(post_processor_, tokenizer::PostProcessor::FromJson(member("post_processor")));
  ASSIGN_OR_RETURN(decoder_, tokenizer::DecoderFromJson(member("decoder")));

  const Json& model = member("model");
  if (!model.is_object()) return InvalidArgumentError("field 'model' must be an object");
  std::string type = "BPE";  // older files omit the type of a BPE model
  if (auto it = model.find("type"); it != model.end()) {
    if (!it->is_string()) return InvalidArgumentError("model: field 'type' must be a string");
    type = it->get<std::string>();
  }
  if (type != "BPE") return InvalidArgumentError("unsupported model type '", type, "'");
  ASSIGN_OR_RETURN(model_, tokenizer::BpeModel::FromJson(model));

  const Json& added = member("added_tokens");
  if (!added.is_null() && !added.is_array()) {
    return InvalidArgumentError("field 'added_tokens' must be an array");
  }
  for (const Json& entry : added.is_array() ? added : Json::array()) {
    ASSIGN_OR_RETURN(AddedToken t, ParseAddedToken(entry, -1, "added_tokens"));
    if (!added_by_id_.contains(t.id)) {
      added_by_id_[t.id] = added_tokens_.size();
      added_tokens_.push_back(std::move(t));
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::ApplyConfig(Json config) {
  if (auto it = config.find("added_tokens_decoder"); it != config.end() && it->is_object()) {
    // transformers adds these to the fast tokenizer when it lacks them.
    for (const auto& [key, entry] : it->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size() || id < 0) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) return InvalidArgumentError("added_tokens_decoder: key '", key, "' is not an id");
      ASSIGN_OR_RETURN(AddedToken t, ParseAddedToken(entry, id, "added_tokens_decoder"));
      if (!added_by_id_.contains(t.id)) {
        added_by_id_[t.id] = added_tokens_.size();
        added_tokens_.push_back(std::move(t));
      }
    }
  }
  bos_token_ = ConfigToken(config, "bos_token");
  eos_token_ = ConfigToken(config, "eos_token");
  auto flag = [&](const char* key) {
    auto it = config.find(key);
    return it != config.end() && it->is_boolean() && it->get<bool>();
  };
  add_bos_ = flag("add_bos_token");
  add_eos_ = flag("add_eos_token");
  if (auto it = config.find("chat_template"); it != config.end()) {
    if (it->is_string()) {
      chat_template_ = it->get<std::string>();
    } else if (it->is_array()) {  // [{"name": ..., "template": ...}, ...]
      for (const Json& entry : *it) {
        if (!entry.is_object() || !entry.contains("template") || !entry["template"].is_string()) {
          return InvalidArgumentError("chat_template: entries must have a string 'template'");
        }
        if (chat_template_.empty() || entry.value("name", "") == "default") {
          chat_template_ = entry["template"].get<std::string>();
        }
      }
    }
  }
  config_ = std::move(config);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonText(
    std::string_view tokenizer_json, std::string_view source,
    std::optional<std::string_view> config_json) {
  return Create(tokenizer_json, source, config_json, "tokenizer_config.json");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(
    std::string_view tokenizer_json, std::string_view source,
    std::optional<std::string_view> config_json, std::string_view config_source) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  try {
    ASSIGN_OR_RETURN(const Json j, ParseJson(tokenizer_json, source));
    RETURN_IF_ERROR(Annotate(tok->Build(j), source));
  } catch (const Json::exception& e) {  // a type nobody checked: still a clear error
    return InvalidArgumentError(source, ": malformed: ", e.what());
  }
  if (config_json) {
    try {
      ASSIGN_OR_RETURN(Json config, ParseJson(*config_json, config_source));
      RETURN_IF_ERROR(Annotate(tok->ApplyConfig(std::move(config)), config_source));
    } catch (const Json::exception& e) {
      return InvalidArgumentError(config_source, ": malformed: ", e.what());
    }
  }

  // Matchers: raw-text tokens, and normalized-text tokens (content normalized).
  std::vector<const AddedToken*> raw, normalized;
  std::vector<std::string> raw_contents, normalized_contents;
  int32_t max_id = tok->model_->id_end() - 1;
  for (const AddedToken& t : tok->added_tokens_) {
    tok->added_by_content_.try_emplace(t.content, t.id);
    max_id = std::max(max_id, t.id);
    if (t.normalized && tok->normalizer_ != nullptr) {
      std::string content;
      tok->normalizer_->Normalize(t.content, &content);
      normalized.push_back(&t);
      normalized_contents.push_back(std::move(content));
    } else if (t.normalized) {  // identity normalizer: same text, second pass
      normalized.push_back(&t);
      normalized_contents.push_back(t.content);
    } else {
      raw.push_back(&t);
      raw_contents.push_back(t.content);
    }
  }
  tok->raw_matcher_.Build(raw, raw_contents);
  tok->normalized_matcher_.Build(normalized, normalized_contents);
  tok->vocab_size_ = max_id + 1;
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path_or_model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path json_path(path_or_model_dir);
  if (fs::is_directory(json_path, ec)) json_path /= "tokenizer.json";
  if (!fs::exists(json_path, ec)) {
    return NotFoundError(json_path.string(),
                         ": not found (pass a tokenizer.json or a model directory holding one)");
  }
  ASSIGN_OR_RETURN(const std::string text, ReadFile(json_path));

  const fs::path dir = json_path.parent_path();
  const fs::path config_path = dir / "tokenizer_config.json";
  std::optional<std::string> config_text;
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config_text, ReadFile(config_path));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
                   Create(text, json_path.string(), config_text, config_path.string()));
  const fs::path jinja = dir / "chat_template.jinja";
  if (fs::exists(jinja, ec)) {
    ASSIGN_OR_RETURN(tok->chat_template_, ReadFile(jinja));
  }
  return tok;
}

}  // namespace krasis
