// Decode gRPC adapter (see decode_service.h).
#include "services/decode/decode_service.h"

#include <condition_variable>
#include <deque>
#include <cstring>
#include <mutex>

#include "common/status.h"
#include "services/rpc/grpc_status.h"

namespace krasis {

SamplingOptions ToSamplingOptions(const v1::SamplingParams& p) {
  SamplingOptions o;
  if (p.has_temperature()) o.temperature = p.temperature();
  o.top_k = p.top_k();
  if (p.has_top_p()) o.top_p = p.top_p();
  o.min_p = p.min_p();
  if (p.has_repetition_penalty()) o.repetition_penalty = p.repetition_penalty();
  o.presence_penalty = p.presence_penalty();
  o.frequency_penalty = p.frequency_penalty();
  for (const auto& [id, bias] : p.logit_bias()) o.logit_bias[id] = bias;
  if (p.has_seed()) o.seed = p.seed();
  o.logprobs = p.logprobs();
  o.top_logprobs = p.top_logprobs();
  return o;
}

v1::DType KvWireDType(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return v1::DTYPE_BF16;
    case DType::kF16: return v1::DTYPE_F16;
    default: return v1::DTYPE_F32;
  }
}

void PutFloats(std::span<const float> values, std::vector<int64_t> shape, v1::TensorData* out, DType dtype) {
  out->set_dtype(KvWireDType(dtype));
  out->clear_shape();
  for (int64_t d : shape) out->add_shape(d);
  const DType wire = dtype == DType::kBF16 || dtype == DType::kF16 ? dtype : DType::kF32;
  std::string* data = out->mutable_data();
  data->resize(values.size() * DTypeSize(wire));
  ConvertFromFloat(wire, values.data(), data->data(), values.size());
}

absl::StatusOr<std::vector<float>> GetFloats(const v1::TensorData& data, std::string_view what) {
  DType dtype;
  switch (data.dtype()) {
    case v1::DTYPE_F32: dtype = DType::kF32; break;
    case v1::DTYPE_BF16: dtype = DType::kBF16; break;
    case v1::DTYPE_F16: dtype = DType::kF16; break;
    default: return InvalidArgumentError(what, ": KV data must be F32, BF16 or F16");
  }
  const size_t esize = DTypeSize(dtype);
  if (data.data().size() % esize != 0) {
    return InvalidArgumentError(what, ": ", data.data().size(), " bytes is not a whole number of ",
                                DTypeName(dtype), " elements");
  }
  int64_t numel = 1;
  for (int64_t d : data.shape()) numel *= d;
  if (numel * static_cast<int64_t>(esize) != static_cast<int64_t>(data.data().size())) {
    return InvalidArgumentError(what, ": shape does not match ", data.data().size(), " bytes");
  }
  std::vector<float> out(data.data().size() / esize);
  ConvertToFloat(dtype, data.data().data(), out.data(), out.size());
  return out;
}

namespace {

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// Events from the engine's thread to the RPC's thread.
struct EventQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<GenerationEvent> events;
};

}  // namespace

absl::Status DecodeService::CheckModel(const std::string& model_id) const {
  if (engine_ == nullptr) {
    return FailedPreconditionError("this decode worker has no model loaded (start it with --model DIR)");
  }
  if (!model_id.empty() && model_id != model_id_) {
    return NotFoundError("this decode worker serves model '", model_id_, "', not '", model_id, "'");
  }
  return absl::OkStatus();
}

grpc::Status DecodeService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                     grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (auto s = CheckModel(request->model_id()); !s.ok()) return ToGrpcStatus(s);
  GenerationRequest r;
  r.id = request->request_id();
  r.prompt.assign(request->prompt_token_ids().begin(), request->prompt_token_ids().end());
  r.sampling = ToSamplingOptions(request->sampling());
  r.max_tokens = request->sampling().max_tokens();
  r.min_tokens = request->sampling().min_tokens();
  r.stop_token_ids.assign(request->sampling().stop_token_ids().begin(),
                          request->sampling().stop_token_ids().end());
  r.ignore_eos = request->sampling().ignore_eos();
  r.kv_import_id = request->kv_import_id();
  const bool want_logprobs = r.sampling.logprobs;
  auto queue = std::make_shared<EventQueue>();
  absl::Status submitted = engine_->Submit(std::move(r), [queue](const GenerationEvent& e) {
    std::lock_guard<std::mutex> lock(queue->mu);
    queue->events.push_back(e);
    queue->cv.notify_all();
  });
  if (!submitted.ok()) return ToGrpcStatus(submitted);

  bool cancel_sent = false, writer_ok = true;
  while (true) {
    std::deque<GenerationEvent> batch;
    {
      std::unique_lock<std::mutex> lock(queue->mu);
      queue->cv.wait_for(lock, std::chrono::milliseconds(50), [&] { return !queue->events.empty(); });
      batch.swap(queue->events);
    }
    if ((context->IsCancelled() || !writer_ok) && !cancel_sent) {
      engine_->Cancel(request->request_id());
      cancel_sent = true;
    }
    for (const GenerationEvent& e : batch) {
      v1::GenerateResponse out;
      if (!e.final) {
        v1::GeneratedToken* t = out.add_tokens();
        t->set_token_id(e.token);
        t->set_index(e.index);
        if (want_logprobs) {
          t->set_logprob(e.logprob);
          for (const auto& [id, lp] : e.top_logprobs) {
            v1::TopLogprob* top = t->add_top_logprobs();
            top->set_token_id(id);
            top->set_logprob(lp);
          }
        }
        t->mutable_timing()->set_step_ms(e.step_ms);
        t->mutable_timing()->set_batch_size(e.batch_size);
      } else {
        out.set_finish_reason(ToProto(e.finish_reason));
        if (e.stop_token_id) out.set_stop_token_id(*e.stop_token_id);
        v1::Usage* u = out.mutable_usage();
        u->set_prompt_tokens(static_cast<int32_t>(e.usage.prompt_tokens));
        u->set_completion_tokens(static_cast<int32_t>(e.usage.completion_tokens));
        u->set_total_tokens(static_cast<int32_t>(e.usage.prompt_tokens + e.usage.completion_tokens));
        u->set_cached_tokens(static_cast<int32_t>(e.usage.cached_tokens));
        v1::GenerateTiming* tm = out.mutable_timing();
        tm->set_queue_ms(e.queue_ms);
        tm->set_prefill_ms(e.prefill_ms);
        tm->set_first_token_ms(e.first_token_ms);
        tm->set_decode_ms(e.decode_ms);
        if (e.decode_ms > 0 && e.usage.completion_tokens > 1) {
          tm->set_tokens_per_second((e.usage.completion_tokens - 1) * 1000.0 / e.decode_ms);
        }
        if (!e.error.ok()) out.set_error_message(std::string(e.error.message()));
      }
      if (writer_ok && !writer->Write(out)) writer_ok = false;
      if (e.final) {
        if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
        return grpc::Status::OK;
      }
    }
  }
}

grpc::Status DecodeService::LookupPrefix(grpc::ServerContext*, const v1::LookupPrefixRequest* request,
                                         v1::LookupPrefixResponse* response) {
  if (auto s = CheckModel(request->model_id()); !s.ok()) return ToGrpcStatus(s);
  std::vector<int32_t> tokens(request->token_ids().begin(), request->token_ids().end());
  std::vector<BlockHash> hashes;
  int64_t cached = engine_->LookupPrefix(tokens, &hashes);
  response->set_cached_tokens(static_cast<int32_t>(cached));
  for (const auto& h : hashes) response->add_block_hashes(h);
  response->set_block_size(static_cast<int32_t>(engine_->block_size()));
  return grpc::Status::OK;
}

grpc::Status DecodeService::Cancel(grpc::ServerContext*, const v1::CancelRequest* request,
                                   v1::CancelResponse* response) {
  if (auto s = CheckModel(""); !s.ok()) return ToGrpcStatus(s);
  response->set_found(engine_->Cancel(request->request_id()));
  return grpc::Status::OK;
}

grpc::Status DecodeService::Stats(grpc::ServerContext*, const v1::StatsRequest*,
                                  v1::StatsResponse* response) {
  if (auto s = CheckModel(""); !s.ok()) return ToGrpcStatus(s);
  EngineStats s = engine_->Stats();
  response->set_model_id(model_id_);
  response->set_running_sequences(static_cast<int32_t>(s.running));
  response->set_waiting_sequences(static_cast<int32_t>(s.waiting));
  response->set_kv_blocks_used(s.kv.blocks_used);
  response->set_kv_blocks_total(s.kv.blocks_total);
  response->set_kv_bytes_used(static_cast<uint64_t>(s.kv.blocks_used * s.kv.bytes_per_block));
  response->set_kv_bytes_total(static_cast<uint64_t>(s.kv.blocks_total * s.kv.bytes_per_block));
  response->set_kv_block_size(static_cast<int32_t>(engine_->block_size()));
  response->set_prefix_cache_query_tokens(static_cast<uint64_t>(s.prefix_query_tokens));
  response->set_prefix_cache_hit_tokens(static_cast<uint64_t>(s.prefix_hit_tokens));
  response->set_tokens_generated(static_cast<uint64_t>(s.generated_tokens));
  response->set_prompt_tokens_computed(static_cast<uint64_t>(s.prompt_tokens - s.prefix_hit_tokens));
  response->set_requests_finished(static_cast<uint64_t>(s.requests_finished));
  response->set_uptime_seconds(s.uptime_s);
  return grpc::Status::OK;
}

namespace {

// Applies one KvTransfer message (after the header) to an import.
absl::Status ApplyTransfer(DecodeEngine& engine, const std::string& id, int64_t block_size,
                           const v1::KvTransfer& msg, v1::ImportKvResponse* response, bool* finished) {
  for (const v1::KvBlock& b : msg.blocks()) {
    ASSIGN_OR_RETURN(std::vector<float> rows, GetFloats(b.key(), StrCat("block ", b.block_index())));
    RETURN_IF_ERROR(engine.ImportRows(id, b.layer(), static_cast<int64_t>(b.block_index()) * block_size,
                                      b.num_tokens(), rows));
    response->set_blocks_received(response->blocks_received() + 1);
    response->set_bytes_received(response->bytes_received() + b.key().data().size());
  }
  for (const v1::LinearAttentionState& st : msg.linear_states()) {
    LinearState state;
    ASSIGN_OR_RETURN(state.recurrent, GetFloats(st.recurrent_state(), StrCat("layer ", st.layer(), " state")));
    ASSIGN_OR_RETURN(state.conv, GetFloats(st.conv_state(), StrCat("layer ", st.layer(), " conv state")));
    RETURN_IF_ERROR(engine.ImportLinearState(id, st.layer(), std::move(state)));
  }
  if (msg.has_trailer()) {
    ASSIGN_OR_RETURN(std::vector<float> logits, GetFloats(msg.trailer().last_logits(), "last logits"));
    RETURN_IF_ERROR(engine.FinishImport(id, std::move(logits)));
    *finished = true;
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status DecodeService::ImportKv(grpc::ServerContext*, grpc::ServerReader<v1::KvTransfer>* reader,
                                     v1::ImportKvResponse* response) {
  auto t0 = std::chrono::steady_clock::now();
  v1::KvTransfer msg;
  if (!reader->Read(&msg)) return ToGrpcStatus(InvalidArgumentError("ImportKv stream is empty"));
  if (!msg.has_header()) return ToGrpcStatus(InvalidArgumentError("ImportKv must start with a header"));
  const v1::KvHeader& h = msg.header();
  if (auto s = CheckModel(h.model_id()); !s.ok()) return ToGrpcStatus(s);
  if (h.block_size() != engine_->block_size()) {
    return ToGrpcStatus(InvalidArgumentError("KV block size ", h.block_size(), " differs from this worker's ",
                                             engine_->block_size()));
  }
  const std::string id = h.request_id();
  std::vector<int32_t> tokens(h.token_ids().begin(), h.token_ids().end());
  if (auto s = engine_->BeginImport(id, tokens, h.start_token()); !s.ok()) return ToGrpcStatus(s);
  response->set_request_id(id);
  bool finished = false;
  absl::Status status = ApplyTransfer(*engine_, id, engine_->block_size(), msg, response, &finished);
  while (status.ok() && !finished && reader->Read(&msg)) {
    status = ApplyTransfer(*engine_, id, engine_->block_size(), msg, response, &finished);
  }
  if (status.ok() && !finished) status = InvalidArgumentError("ImportKv stream ended without a trailer");
  if (!status.ok()) {
    engine_->DropImport(id);
    return ToGrpcStatus(status);
  }
  response->set_tokens_ready(static_cast<int32_t>(tokens.size()));
  response->set_elapsed_ms(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return grpc::Status::OK;
}

grpc::Status DecodeService::ExportKv(grpc::ServerContext*, const v1::ExportKvRequest* request,
                                     grpc::ServerWriter<v1::KvTransfer>* writer) {
  if (auto s = CheckModel(request->model_id()); !s.ok()) return ToGrpcStatus(s);
  std::vector<int32_t> tokens(request->token_ids().begin(), request->token_ids().end());
  const int64_t bs = engine_->block_size();
  const int64_t num_tokens = static_cast<int64_t>(request->block_hashes_size()) * bs;
  v1::KvTransfer head;
  v1::KvHeader* h = head.mutable_header();
  h->set_request_id(request->request_id());
  h->set_model_id(model_id_);
  h->set_block_size(static_cast<int32_t>(bs));
  h->mutable_token_ids()->Add(tokens.begin(), tokens.begin() + std::min<int64_t>(num_tokens, tokens.size()));
  h->set_num_layers(engine_->num_layers());
  const DType kv_dtype = engine_->kv_dtype();
  h->set_kv_dtype(KvWireDType(kv_dtype));
  for (const auto& hash : request->block_hashes()) h->add_prefix_block_hashes(hash);
  if (!writer->Write(head)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  int32_t blocks = 0, states = 0;
  uint64_t bytes = 0;
  ExportSink sink{
      [&](int layer, int64_t first, int64_t count, std::span<const float> rows) -> absl::Status {
        v1::KvTransfer msg;
        v1::KvBlock* b = msg.add_blocks();
        b->set_block_index(static_cast<int32_t>(first / bs));
        b->set_num_tokens(static_cast<int32_t>(count));
        b->set_layer(layer);
        PutFloats(rows, {count, engine_->LayerFloats(layer)}, b->mutable_key(), kv_dtype);
        bytes += b->key().data().size();
        ++blocks;
        if (!writer->Write(msg)) return absl::CancelledError("client went away");
        return absl::OkStatus();
      },
      [&](int layer, const LinearState& state) -> absl::Status {
        v1::KvTransfer msg;
        v1::LinearAttentionState* st = msg.add_linear_states();
        st->set_layer(layer);
        st->set_num_tokens(static_cast<int32_t>(num_tokens));
        PutFloats(state.recurrent, {static_cast<int64_t>(state.recurrent.size())}, st->mutable_recurrent_state());
        PutFloats(state.conv, {static_cast<int64_t>(state.conv.size())}, st->mutable_conv_state());
        ++states;
        if (!writer->Write(msg)) return absl::CancelledError("client went away");
        return absl::OkStatus();
      }};
  if (auto s = engine_->ExportPrefix(tokens, num_tokens, sink); !s.ok()) return ToGrpcStatus(s);
  v1::KvTransfer tail;
  tail.mutable_trailer()->set_num_blocks(blocks);
  tail.mutable_trailer()->set_num_states(states);
  tail.mutable_trailer()->set_total_bytes(bytes);
  writer->Write(tail);
  return grpc::Status::OK;
}

}  // namespace krasis
