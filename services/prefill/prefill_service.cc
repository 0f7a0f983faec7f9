// Prefill gRPC adapter (see prefill_service.h).
#include "services/prefill/prefill_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <thread>

#include "common/status.h"
#include "grpcpp/grpcpp.h"
#include "services/decode/decode_service.h"
#include "services/rpc/grpc_status.h"

namespace krasis {

namespace {
using Clock = std::chrono::steady_clock;
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Sends KvTransfer messages on an ImportKv stream from its own thread.
class Sender {
 public:
  explicit Sender(grpc::ClientWriter<v1::KvTransfer>* writer) : writer_(writer) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Sender() { Close(); }
  // False once the stream has failed.
  bool Push(v1::KvTransfer msg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_) return false;
    queue_.push_back(std::move(msg));
    cv_.notify_all();
    return true;
  }
  // Waits until everything queued was written; false if a write failed.
  bool Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    return !failed_;
  }

 private:
  void Loop() {
    while (true) {
      v1::KvTransfer msg;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return closing_ || !queue_.empty(); });
        if (queue_.empty()) return;
        msg = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!writer_->Write(msg)) {
        std::lock_guard<std::mutex> lock(mu_);
        failed_ = true;
        queue_.clear();
        return;
      }
    }
  }
  grpc::ClientWriter<v1::KvTransfer>* writer_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::KvTransfer> queue_;
  bool closing_ = false, failed_ = false;
  std::thread thread_;
};

}  // namespace

std::shared_ptr<v1::Decode::Stub> PrefillService::DecodeStub(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& stub = stubs_[address];
  if (!stub) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    stub = v1::Decode::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  return stub;
}

absl::StatusOr<PrefixKv> PrefillService::FetchPrefix(const v1::PrefillRequest& request) {
  PrefixKv prefix = engine_->EmptyPrefix();
  const auto& cached = request.cached();
  if (cached.num_tokens() == 0) return prefix;
  if (cached.source_address().empty()) {
    return InvalidArgumentError("cached prefix of ", cached.num_tokens(), " tokens has no source_address");
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::ExportKvRequest req;
  req.set_request_id(request.request_id());
  req.set_model_id(request.model_id());
  req.mutable_token_ids()->CopyFrom(request.token_ids());
  req.mutable_block_hashes()->CopyFrom(cached.block_hashes());
  auto reader = DecodeStub(cached.source_address())->ExportKv(&ctx, req);
  v1::KvTransfer msg;
  int64_t bs = 0;
  while (reader->Read(&msg)) {
    if (msg.has_header()) bs = msg.header().block_size();
    for (const v1::KvBlock& b : msg.blocks()) {
      if (b.layer() < 0 || b.layer() >= engine_->num_layers()) return InvalidArgumentError("bad layer in export");
      ASSIGN_OR_RETURN(std::vector<float> rows, GetFloats(b.key(), "exported block"));
      auto& dst = prefix.rows[b.layer()];
      size_t offset = static_cast<size_t>(b.block_index() * bs * engine_->LayerFloats(b.layer()));
      if (dst.size() < offset + rows.size()) dst.resize(offset + rows.size());
      std::copy(rows.begin(), rows.end(), dst.begin() + offset);
    }
    for (const v1::LinearAttentionState& st : msg.linear_states()) {
      if (st.layer() < 0 || st.layer() >= engine_->num_layers()) return InvalidArgumentError("bad layer in export");
      ASSIGN_OR_RETURN(prefix.linear[st.layer()].recurrent, GetFloats(st.recurrent_state(), "exported state"));
      ASSIGN_OR_RETURN(prefix.linear[st.layer()].conv, GetFloats(st.conv_state(), "exported conv state"));
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) {
    return Annotate(FromGrpcStatus(s), StrCat("fetching the cached prefix from ", cached.source_address()));
  }
  prefix.num_tokens = cached.num_tokens();
  return prefix;
}

absl::Status PrefillService::Run(grpc::ServerContext*, const v1::PrefillRequest& request,
                                 v1::PrefillResponse& response, const std::atomic<bool>& cancelled) {
  auto t0 = Clock::now();
  if (!request.model_id().empty() && request.model_id() != model_id_) {
    return FailedPreconditionError("this prefill worker serves model '", model_id_, "', not '",
                                   request.model_id(), "'");
  }
  std::vector<int32_t> tokens(request.token_ids().begin(), request.token_ids().end());
  if (tokens.empty()) return InvalidArgumentError("token_ids is empty");
  const int64_t vocab = engine_->config().vocab_size;
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab) return InvalidArgumentError("token id ", t, " is out of range [0, ", vocab, ")");
  }
  const int64_t bs = request.kv_block_size() > 0 ? request.kv_block_size() : 16;
  const int64_t cached = request.cached().num_tokens();
  if (cached < 0 || cached >= static_cast<int64_t>(tokens.size()) || cached % bs != 0) {
    return InvalidArgumentError("cached.num_tokens ", cached, " must be a multiple of ", bs,
                                " below the prompt length ", tokens.size());
  }
  ASSIGN_OR_RETURN(PrefixKv prefix, FetchPrefix(request));
  auto t_fetched = Clock::now();

  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<grpc::ClientWriter<v1::KvTransfer>> writer;
  std::unique_ptr<Sender> sender;
  v1::ImportKvResponse ack;
  if (!request.destination().empty()) {
    ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
    writer = DecodeStub(request.destination())->ImportKv(ctx.get(), &ack);
    sender = std::make_unique<Sender>(writer.get());
    v1::KvTransfer head;
    v1::KvHeader* h = head.mutable_header();
    h->set_request_id(request.request_id());
    h->set_model_id(request.model_id());
    h->set_block_size(static_cast<int32_t>(bs));
    h->mutable_token_ids()->CopyFrom(request.token_ids());
    h->set_start_token(static_cast<int32_t>(cached));
    h->mutable_prefix_block_hashes()->CopyFrom(request.cached().block_hashes());
    h->set_kv_dtype(KvWireDType(engine_->kv_dtype()));
    h->set_num_layers(engine_->num_layers());
    sender->Push(std::move(head));
  }
  int32_t blocks_sent = 0;
  uint64_t bytes_sent = 0;
  KvOutput out{
      [&](int layer, int64_t first, int64_t count, std::span<const float> rows) -> absl::Status {
        if (!sender) return absl::OkStatus();
        const int64_t f = engine_->LayerFloats(layer);
        v1::KvTransfer msg;
        for (int64_t start = first; start < first + count; start += bs) {
          int64_t n = std::min(bs, first + count - start);
          v1::KvBlock* b = msg.add_blocks();
          b->set_block_index(static_cast<int32_t>(start / bs));
          b->set_num_tokens(static_cast<int32_t>(n));
          b->set_layer(layer);
          PutFloats(rows.subspan(static_cast<size_t>((start - first) * f), static_cast<size_t>(n * f)), {n, f},
                    b->mutable_key(), engine_->kv_dtype());
          ++blocks_sent;
          bytes_sent += b->key().data().size();
        }
        if (!sender->Push(std::move(msg))) return absl::UnavailableError("the KV stream to the decode worker broke");
        return absl::OkStatus();
      },
      [&](int layer, const LinearState& state) -> absl::Status {
        if (!sender) return absl::OkStatus();
        v1::KvTransfer msg;
        v1::LinearAttentionState* st = msg.add_linear_states();
        st->set_layer(layer);
        st->set_num_tokens(static_cast<int32_t>(tokens.size()));
        PutFloats(state.recurrent, {static_cast<int64_t>(state.recurrent.size())}, st->mutable_recurrent_state());
        PutFloats(state.conv, {static_cast<int64_t>(state.conv.size())}, st->mutable_conv_state());
        if (!sender->Push(std::move(msg))) return absl::UnavailableError("the KV stream to the decode worker broke");
        return absl::OkStatus();
      }};
  auto result = engine_->Run(tokens, prefix, out, chunk_tokens_, bs, &cancelled);
  auto t_computed = Clock::now();
  if (sender) {
    if (result.ok()) {
      v1::KvTransfer tail;
      tail.mutable_trailer()->set_num_blocks(blocks_sent);
      tail.mutable_trailer()->set_total_bytes(bytes_sent);
      PutFloats(result->last_logits, {static_cast<int64_t>(result->last_logits.size())},
                tail.mutable_trailer()->mutable_last_logits());
      sender->Push(std::move(tail));
    } else {
      ctx->TryCancel();  // the decode worker drops the partial import
    }
    sender->Close();
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (result.ok() && !s.ok()) {
      return Annotate(FromGrpcStatus(s), StrCat("sending KV to ", request.destination()));
    }
  }
  if (!result.ok()) return result.status();
  auto t_done = Clock::now();

  response.set_request_id(request.request_id());
  response.set_prompt_tokens(static_cast<int32_t>(tokens.size()));
  response.set_cached_tokens(static_cast<int32_t>(cached));
  response.set_computed_tokens(static_cast<int32_t>(result->computed_tokens));
  response.set_kv_blocks_sent(blocks_sent);
  response.set_kv_bytes_sent(bytes_sent);
  v1::PrefillTiming* tm = response.mutable_timing();
  tm->set_fetch_ms(Ms(t_fetched - t0));
  tm->set_compute_ms(result->compute_ms);
  tm->set_transfer_ms(Ms(t_done - t_computed));
  tm->set_total_ms(Ms(t_done - t0));
  if (result->compute_ms > 0) tm->set_tokens_per_second(result->computed_tokens * 1000.0 / result->compute_ms);
  // Logits summary: argmax and the top-k log-probabilities.
  const std::vector<float>& l = result->last_logits;
  int k = request.summary_top_k() > 0 ? request.summary_top_k() : 5;
  float m = *std::max_element(l.begin(), l.end());
  double z = 0.0;
  for (float v : l) z += std::exp(static_cast<double>(v - m));
  std::vector<int> order(l.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  k = std::min<int>(k, static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return l[a] > l[b] || (l[a] == l[b] && a < b);
  });
  response.mutable_first_token()->set_argmax_token_id(order[0]);
  for (int i = 0; i < k; ++i) {
    v1::TopLogprob* t = response.mutable_first_token()->add_top();
    t->set_token_id(order[i]);
    t->set_logprob(static_cast<float>(l[order[i]] - m - std::log(z)));
  }
  return absl::OkStatus();
}

grpc::Status PrefillService::Prefill(grpc::ServerContext* context, const v1::PrefillRequest* request,
                                     v1::PrefillResponse* response) {
  if (engine_ == nullptr) {
    return ToGrpcStatus(FailedPreconditionError("this prefill worker has no model loaded (start it with --model DIR)"));
  }
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_.contains(request->request_id())) {
      return ToGrpcStatus(absl::AlreadyExistsError(StrCat("prefill '", request->request_id(), "' is running")));
    }
    running_[request->request_id()] = cancelled;
  }
  // A client that goes away cancels the prefill too.
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (context->IsCancelled()) cancelled->store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  absl::Status s = Run(context, *request, *response, *cancelled);
  done = true;
  watcher.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_.erase(request->request_id());
  }
  return ToGrpcStatus(s);
}

grpc::Status PrefillService::Cancel(grpc::ServerContext*, const v1::CancelRequest* request,
                                    v1::CancelResponse* response) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = running_.find(request->request_id());
  response->set_found(it != running_.end());
  if (it != running_.end()) it->second->store(true);
  return grpc::Status::OK;
}

}  // namespace krasis
