// Decode gRPC adapter (see decode_service.h).
#include "services/decode/decode_service.h"

#include <condition_variable>
#include <deque>
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
  if (!request->kv_import_id().empty()) {
    return ToGrpcStatus(FailedPreconditionError("no KV import '", request->kv_import_id(),
                                                "' is pending on this worker"));
  }
  GenerationRequest r;
  r.id = request->request_id();
  r.prompt.assign(request->prompt_token_ids().begin(), request->prompt_token_ids().end());
  r.sampling = ToSamplingOptions(request->sampling());
  r.max_tokens = request->sampling().max_tokens();
  r.min_tokens = request->sampling().min_tokens();
  r.stop_token_ids.assign(request->sampling().stop_token_ids().begin(),
                          request->sampling().stop_token_ids().end());
  r.ignore_eos = request->sampling().ignore_eos();
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

}  // namespace krasis
