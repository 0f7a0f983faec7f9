// Engine types <-> krasis.v1 loader messages (see manifest_proto.h).
#include "services/loader/manifest_proto.h"

#include <algorithm>

#include "common/status.h"

namespace krasis {
namespace {

v1::DType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return v1::DTYPE_BF16;
    case DType::kF16: return v1::DTYPE_F16;
    case DType::kF32: return v1::DTYPE_F32;
    case DType::kF8E4M3: return v1::DTYPE_F8_E4M3;
    case DType::kI8: return v1::DTYPE_I8;
    case DType::kU8: return v1::DTYPE_U8;
    case DType::kI32: return v1::DTYPE_I32;
    case DType::kI64: return v1::DTYPE_I64;
  }
  return v1::DTYPE_UNSPECIFIED;
}

v1::QuantFormat FormatOfDType(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return v1::QUANT_FORMAT_BF16;
    case DType::kF16: return v1::QUANT_FORMAT_F16;
    case DType::kF32: return v1::QUANT_FORMAT_F32;
    case DType::kF8E4M3: return v1::QUANT_FORMAT_FP8_E4M3;
    default: return v1::QUANT_FORMAT_PLAIN;
  }
}

v1::FileKind ToProtoKind(ModelFileKind kind) {
  switch (kind) {
    case ModelFileKind::kOther: return v1::FILE_KIND_OTHER;
    case ModelFileKind::kWeights: return v1::FILE_KIND_WEIGHTS;
    case ModelFileKind::kConfig: return v1::FILE_KIND_CONFIG;
    case ModelFileKind::kGenerationConfig: return v1::FILE_KIND_GENERATION_CONFIG;
    case ModelFileKind::kTokenizer: return v1::FILE_KIND_TOKENIZER;
    case ModelFileKind::kChatTemplate: return v1::FILE_KIND_CHAT_TEMPLATE;
  }
  return v1::FILE_KIND_OTHER;
}

v1::PreparePhase ToProtoPhase(PreparePhase phase) {
  switch (phase) {
    case PreparePhase::kQueued: return v1::PREPARE_PHASE_QUEUED;
    case PreparePhase::kValidating: return v1::PREPARE_PHASE_VALIDATING;
    case PreparePhase::kConverting: return v1::PREPARE_PHASE_CONVERTING;
    case PreparePhase::kVerifying: return v1::PREPARE_PHASE_VERIFYING;
    case PreparePhase::kFinalizing: return v1::PREPARE_PHASE_FINALIZING;
    case PreparePhase::kDone: return v1::PREPARE_PHASE_DONE;
    case PreparePhase::kFailed: return v1::PREPARE_PHASE_FAILED;
  }
  return v1::PREPARE_PHASE_UNSPECIFIED;
}

absl::StatusOr<WeightFormat> FromProtoFormat(std::string_view field, v1::QuantFormat format,
                                             WeightFormat unset) {
  switch (format) {
    case v1::QUANT_FORMAT_UNSPECIFIED: return unset;
    case v1::QUANT_FORMAT_BF16: return WeightFormat::kBF16;
    case v1::QUANT_FORMAT_F16: return WeightFormat::kF16;
    case v1::QUANT_FORMAT_F32: return WeightFormat::kF32;
    case v1::QUANT_FORMAT_FP8_E4M3: return WeightFormat::kFp8E4M3;
    case v1::QUANT_FORMAT_INT8_GROUP_SYM: return WeightFormat::kInt8GroupSym;
    case v1::QUANT_FORMAT_INT4_GROUP_SYM: return WeightFormat::kInt4GroupSym;
    default:
      return InvalidArgumentError(field, " ", v1::QuantFormat_Name(format),
                                  " is not a conversion target (GGUF experts come from ",
                                  "gguf_experts_path)");
  }
}

int32_t Int32(int64_t v) { return static_cast<int32_t>(v); }

}  // namespace

v1::ModelInfo ToModelInfo(const ModelRecord& record) {
  v1::ModelInfo info;
  info.set_id(record.id);
  info.set_path(record.path);
  info.set_architecture(record.architecture);
  info.set_model_type(record.model_type);
  info.set_num_layers(Int32(record.num_layers));
  info.set_num_experts(Int32(record.num_experts));
  info.set_experts_per_token(Int32(record.experts_per_token));
  info.set_total_params(record.total_params);
  info.set_active_params(record.active_params);
  info.set_size_bytes(record.size_bytes);
  info.set_context_length(Int32(record.context_length));
  info.set_format(v1::CHECKPOINT_FORMAT_SAFETENSORS);
  info.set_status(record.ok() ? v1::MODEL_STATUS_AVAILABLE : v1::MODEL_STATUS_INVALID);
  if (!record.ok()) info.set_status_message(std::string(record.status.message()));
  info.set_created_unix(record.created_unix);
  return info;
}

v1::ArchitectureConfig ToArchitectureConfig(const ModelRecord& record) {
  v1::ArchitectureConfig a;
  if (!record.config) return a;
  const ModelConfig& c = *record.config;
  a.set_architecture(record.architecture);
  a.set_model_type(c.model_type);
  a.set_hidden_size(Int32(c.hidden_size));
  a.set_intermediate_size(Int32(c.intermediate_size));
  a.set_moe_intermediate_size(Int32(c.moe_intermediate_size));
  a.set_shared_expert_intermediate_size(Int32(c.SharedExpertIntermediateSize()));
  a.set_num_layers(Int32(c.num_hidden_layers));
  a.set_num_attention_heads(Int32(c.num_attention_heads));
  a.set_num_kv_heads(Int32(c.num_key_value_heads));
  if (c.IsMla()) {  // head_dim is qk_nope + qk_rope; values have their own width
    a.set_head_dim(Int32(c.qk_nope_head_dim.value_or(0) + c.qk_rope_head_dim.value_or(0)));
    a.set_v_head_dim(Int32(c.v_head_dim.value_or(0)));
    a.set_kv_lora_rank(Int32(c.kv_lora_rank.value_or(0)));
    a.set_q_lora_rank(Int32(c.q_lora_rank.value_or(0)));
    a.set_qk_rope_head_dim(Int32(c.qk_rope_head_dim.value_or(0)));
    a.set_qk_nope_head_dim(Int32(c.qk_nope_head_dim.value_or(0)));
  } else {
    a.set_head_dim(Int32(c.head_dim));
  }
  a.set_vocab_size(Int32(c.vocab_size));
  a.set_max_position_embeddings(Int32(c.max_position_embeddings));
  a.set_num_experts(Int32(c.num_experts));
  a.set_num_experts_per_token(Int32(c.num_experts > 0 ? c.num_experts_per_tok.value_or(0) : 0));
  int64_t shared = c.n_shared_experts.value_or(0);
  if (c.architecture == Architecture::kQwen3Next && c.SharedExpertIntermediateSize() > 0) {
    shared = 1;
  }
  a.set_num_shared_experts(Int32(c.num_experts > 0 ? shared : 0));
  a.set_rope_theta(c.rope_theta);
  a.set_partial_rotary_factor(c.partial_rotary_factor);
  a.set_rms_norm_eps(c.rms_norm_eps);
  a.set_tie_word_embeddings(c.tie_word_embeddings);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    v1::LayerSpec* layer = a.add_layers();
    const int li = static_cast<int>(i);
    layer->set_attention(c.IsMla() ? v1::ATTENTION_KIND_MLA
                         : c.GetLayerType(li) == LayerType::kLinearAttention
                             ? v1::ATTENTION_KIND_LINEAR
                             : v1::ATTENTION_KIND_FULL);
    layer->set_moe(c.IsMoeLayer(li));
  }
  a.set_linear_num_key_heads(Int32(c.linear_num_key_heads.value_or(0)));
  a.set_linear_num_value_heads(Int32(c.linear_num_value_heads.value_or(0)));
  a.set_linear_key_head_dim(Int32(c.linear_key_head_dim.value_or(0)));
  a.set_linear_value_head_dim(Int32(c.linear_value_head_dim.value_or(0)));
  a.set_linear_conv_kernel_dim(Int32(c.linear_conv_kernel_dim.value_or(0)));
  a.set_scoring_func(c.scoring_func);
  a.set_norm_topk_prob(c.norm_topk_prob);
  a.set_routed_scaling_factor(c.routed_scaling_factor);
  a.set_num_expert_groups(Int32(c.n_group.value_or(0)));
  a.set_topk_groups(Int32(c.topk_group.value_or(0)));
  a.set_bos_token_id(Int32(c.bos_token_id.value_or(record.generation_bos_token_id.value_or(-1))));
  std::vector<int64_t> eos = c.eos_token_ids;
  for (int64_t id : record.generation_eos_token_ids) {
    if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  for (int64_t id : eos) a.add_eos_token_ids(Int32(id));
  a.set_torch_dtype(c.dtype.value_or(""));
  return a;
}

v1::FileEntry ToFileEntry(const ModelFile& file) {
  v1::FileEntry e;
  e.set_file(file.file);
  e.set_location(v1::LOCATION_MODEL_DIR);
  e.set_path(file.path);
  e.set_size_bytes(file.size_bytes);
  e.set_kind(ToProtoKind(file.kind));
  if (file.crc32c) e.set_crc32c(*file.crc32c);
  return e;
}

v1::TensorEntry ToTensorEntry(const ModelRecord& record, const ModelTensor& t) {
  v1::TensorEntry e;
  e.set_name(t.name);
  for (int64_t d : t.shape) e.add_shape(d);
  e.set_format(FormatOfDType(t.dtype));
  e.set_dtype(ToProtoDType(t.dtype));
  if (t.dtype == DType::kF8E4M3) {
    const std::string scale = t.name + "_scale_inv";
    if (record.FindTensor(scale) != nullptr) {
      e.set_scale_tensor(scale);
      const nlohmann::json* block = nullptr;
      if (record.config && record.config->raw.is_object()) {
        auto q = record.config->raw.find("quantization_config");
        if (q != record.config->raw.end() && q->is_object()) {
          auto b = q->find("weight_block_size");
          if (b != q->end() && b->is_array()) block = &*b;
        }
      }
      if (block != nullptr) {
        for (const auto& d : *block) {
          if (d.is_number_integer()) e.add_block_shape(d.get<int64_t>());
        }
      }
    }
  }
  e.set_file(t.file);
  e.set_location(v1::LOCATION_MODEL_DIR);
  e.set_path(t.path);
  e.set_offset(t.offset);
  e.set_byte_length(t.byte_length);
  if (t.crc32c) e.set_crc32c(*t.crc32c);
  if (t.layer) e.set_layer(*t.layer);
  if (t.expert) e.set_expert(*t.expert);
  return e;
}

absl::StatusOr<VariantSpec> FromPrepareOptions(const v1::PrepareOptions& options) {
  VariantSpec spec;
  ASSIGN_OR_RETURN(spec.decode_experts,
                   FromProtoFormat("decode_expert_format", options.decode_expert_format(),
                                   WeightFormat::kInt4GroupSym));
  ASSIGN_OR_RETURN(spec.prefill_experts,
                   FromProtoFormat("prefill_expert_format", options.prefill_expert_format(),
                                   WeightFormat::kAsStored));
  ASSIGN_OR_RETURN(
      spec.dense, FromProtoFormat("dense_format", options.dense_format(), WeightFormat::kAsStored));
  spec.decode_group_size = options.decode_expert_group_size();
  spec.prefill_group_size = options.prefill_expert_group_size();
  spec.gguf_experts_path = options.gguf_experts_path();
  return spec;
}

v1::PrepareProgress ToPrepareProgress(const PrepareState& s) {
  v1::PrepareProgress p;
  p.set_phase(ToProtoPhase(s.phase));
  p.set_bytes_done(s.bytes_done);
  p.set_bytes_total(s.bytes_total);
  p.set_tensors_done(Int32(s.tensors_done));
  p.set_tensors_total(Int32(s.tensors_total));
  p.set_current_tensor(s.current_tensor);
  p.set_bytes_per_second(s.bytes_per_second);
  p.set_eta_seconds(s.eta_seconds);
  p.set_elapsed_seconds(s.elapsed_seconds);
  if (s.phase == PreparePhase::kDone) {
    v1::PrepareResult* r = p.mutable_result();
    r->set_cache_key(s.cache_key);
    r->set_cache_dir(s.cache_dir);
    r->set_already_prepared(s.already_prepared);
    r->set_bytes_written(s.bytes_written);
    r->set_cache_size_bytes(s.cache_size_bytes);
    r->set_elapsed_seconds(s.elapsed_seconds);
  }
  if (s.phase == PreparePhase::kFailed) {
    p.mutable_error()->set_code(static_cast<int32_t>(s.error.code()));
    p.mutable_error()->set_message(std::string(s.error.message()));
  }
  return p;
}

absl::StatusOr<v1::Manifest> BuildManifest(const ModelRecord& record,
                                           const v1::GetManifestRequest& request,
                                           const std::string& hostname,
                                           const std::string& host_id) {
  if (!v1::Target_IsValid(request.target())) {
    return InvalidArgumentError("unknown target ", static_cast<int>(request.target()));
  }
  v1::Manifest m;
  if (request.target() != v1::TARGET_SOURCE) {
    ASSIGN_OR_RETURN(VariantSpec spec, FromPrepareOptions(request.options()));
    ASSIGN_OR_RETURN(ResolvedVariant variant, ResolveVariant(record, spec));
    if (variant.needs_conversion) {
      return FailedPreconditionError(
          "variant ", variant.cache_key, " of model '", record.id, "' is not prepared: it needs ",
          variant.conversion, ", and converted variants arrive with the conversion cache (not ",
          "implemented yet). TARGET_SOURCE, or the pass-through variant ",
          PassThroughCacheKey(record), " (decode_expert_format = the checkpoint's format), lists ",
          "the checkpoint as stored");
    }
    m.set_cache_key(variant.cache_key);
  }
  *m.mutable_model() = ToModelInfo(record);
  m.set_config_json(record.config_json);
  m.set_generation_config_json(record.generation_config_json);
  *m.mutable_arch() = ToArchitectureConfig(record);
  for (const ModelTensor& t : record.tensors) *m.add_tensors() = ToTensorEntry(record, t);
  for (const ModelFile& f : record.weight_files) *m.add_weight_files() = ToFileEntry(f);
  for (const ModelFile& f : record.tokenizer_files) *m.add_tokenizer_files() = ToFileEntry(f);
  m.set_model_dir(record.path);
  m.set_target(request.target());
  m.set_hostname(hostname);
  m.set_host_id(host_id);
  return m;
}

}  // namespace krasis
