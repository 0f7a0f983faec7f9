// Continuous-batching decode engine (see decode_engine.h).
#include "services/decode/decode_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "common/logging.h"
#include "common/status.h"

namespace krasis {

namespace {
using Clock = std::chrono::steady_clock;
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
}  // namespace

struct DecodeEngine::Sequence {
  GenerationRequest request;
  EventSink sink;
  SequenceState state;
  std::vector<int32_t> tokens;  // prompt, then output
  std::vector<int32_t> output;
  std::unique_ptr<Sampler> sampler;
  std::vector<BlockHash> hashes;  // of full blocks computed so far
  int64_t cached_tokens = 0;
  bool cancelled = false;
  Clock::time_point submitted, admitted, first_token;
  int64_t prompt_size() const { return static_cast<int64_t>(request.prompt.size()); }
};

DecodeEngine::DecodeEngine(std::unique_ptr<DecoderModel> model, const EngineOptions& options,
                           std::vector<int32_t> eos_token_ids)
    : model_(std::move(model)),
      options_(options),
      eos_(std::move(eos_token_ids)),
      kv_(*model_, options.kv),
      started_(Clock::now()) {
  thread_ = std::thread([this] { Loop(); });
}

DecodeEngine::~DecodeEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& s : waiting_) s->cancelled = true;
    for (auto& s : running_) s->cancelled = true;
  }
  wake_.notify_all();
  thread_.join();
}

absl::Status DecodeEngine::Submit(GenerationRequest request, EventSink sink) {
  const ModelConfig& c = model_->config();
  if (request.id.empty()) return InvalidArgumentError("request id is empty");
  if (request.prompt.empty()) return InvalidArgumentError("prompt is empty");
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return InvalidArgumentError("prompt token id ", t, " is out of range [0, ", c.vocab_size, ")");
    }
  }
  if (request.max_tokens < 0) return InvalidArgumentError("max_tokens must be >= 0");
  if (request.min_tokens < 0) return InvalidArgumentError("min_tokens must be >= 0");
  RETURN_IF_ERROR(request.sampling.Validate(c.vocab_size));
  const int64_t limit = c.max_position_embeddings;
  if (limit > 0 && static_cast<int64_t>(request.prompt.size()) >= limit) {
    return InvalidArgumentError("prompt of ", request.prompt.size(),
                                " tokens does not fit the model's context of ", limit, " tokens");
  }
  auto seq = std::make_unique<Sequence>();
  seq->sampler = std::make_unique<Sampler>(request.sampling, c.vocab_size);
  seq->tokens = request.prompt;
  seq->request = std::move(request);
  seq->sink = std::move(sink);
  seq->submitted = Clock::now();
  int64_t blocks_needed = (seq->prompt_size() + 1 + kv_.block_size() - 1) / kv_.block_size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("decode engine is shutting down");
    if (blocks_needed > kv_.Stats().blocks_total) {
      return absl::ResourceExhaustedError(
          StrCat("prompt of ", seq->prompt_size(), " tokens needs ", blocks_needed,
                 " KV blocks; the cache has ", kv_.Stats().blocks_total));
    }
    if (by_id_.contains(seq->request.id)) {
      return absl::AlreadyExistsError(StrCat("request id '", seq->request.id, "' is already running"));
    }
    by_id_[seq->request.id] = seq.get();
    waiting_.push_back(std::move(seq));
  }
  wake_.notify_all();
  return absl::OkStatus();
}

bool DecodeEngine::Cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  it->second->cancelled = true;
  wake_.notify_all();
  return true;
}

int64_t DecodeEngine::LookupPrefix(std::span<const int32_t> tokens, std::vector<BlockHash>* hashes) {
  std::vector<BlockHash> all = ChainedBlockHashes(tokens, kv_.block_size());
  std::lock_guard<std::mutex> lock(mu_);
  int64_t blocks = kv_.MatchBlocks(all);
  if (hashes != nullptr) hashes->assign(all.begin(), all.begin() + blocks);
  return blocks * kv_.block_size();
}

EngineStats DecodeEngine::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.running = static_cast<int64_t>(running_.size());
  s.waiting = static_cast<int64_t>(waiting_.size());
  s.kv = kv_.Stats();
  s.uptime_s = Ms(Clock::now() - started_) / 1000.0;
  return s;
}

void DecodeEngine::Finish(Sequence& seq, FinishReason reason, std::optional<int32_t> stop_token,
                          std::vector<std::pair<EventSink, GenerationEvent>>& out, absl::Status error) {
  GenerationEvent e;
  e.final = true;
  e.finish_reason = reason;
  e.stop_token_id = stop_token;
  e.error = std::move(error);
  e.usage.prompt_tokens = seq.prompt_size();
  e.usage.cached_tokens = seq.cached_tokens;
  e.usage.completion_tokens = static_cast<int64_t>(seq.output.size());
  auto now = Clock::now();
  bool admitted = seq.admitted != Clock::time_point{};
  e.queue_ms = Ms((admitted ? seq.admitted : now) - seq.submitted);
  if (seq.first_token != Clock::time_point{}) {
    e.prefill_ms = Ms(seq.first_token - seq.admitted);
    e.first_token_ms = Ms(seq.first_token - seq.submitted);
    e.decode_ms = Ms(now - seq.first_token);
  }
  out.emplace_back(seq.sink, std::move(e));
  if (!seq.state.block_table.empty()) kv_.Release(seq.state);
  by_id_.erase(seq.request.id);
  ++stats_.requests_finished;
}

void DecodeEngine::Admit(std::vector<std::pair<EventSink, GenerationEvent>>& out) {
  while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < options_.max_batch) {
    Sequence& seq = *waiting_.front();
    if (seq.cancelled) {
      Finish(seq, FinishReason::kCancelled, std::nullopt, out);
      waiting_.pop_front();
      continue;
    }
    // Reuse cached blocks, but always compute at least the last prompt token
    // (its logits give the first output token).
    std::vector<BlockHash> hashes = ChainedBlockHashes(seq.request.prompt, kv_.block_size());
    int64_t max_blocks = (seq.prompt_size() - 1) / kv_.block_size();
    int64_t matched = std::min(kv_.MatchBlocks(hashes), max_blocks);
    int64_t new_blocks = (seq.prompt_size() + kv_.block_size() - 1) / kv_.block_size() - matched;
    if (new_blocks > kv_.AvailableBlocks()) break;  // wait for running sequences to finish
    model_->InitSequence(seq.state);
    kv_.Attach(seq.state, hashes, matched);
    absl::Status s = kv_.Reserve(seq.state, seq.prompt_size());
    if (!s.ok()) {  // cannot happen after the check above; fail cleanly anyway
      Finish(seq, FinishReason::kError, std::nullopt, out, s);
      waiting_.pop_front();
      continue;
    }
    seq.hashes.assign(hashes.begin(), hashes.begin() + matched);
    seq.cached_tokens = matched * kv_.block_size();
    seq.admitted = Clock::now();
    stats_.prefix_query_tokens += seq.prompt_size();
    stats_.prefix_hit_tokens += seq.cached_tokens;
    stats_.prompt_tokens += seq.prompt_size();
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void DecodeEngine::Loop() {
  const int64_t vocab = model_->config().vocab_size;
  const int64_t context = model_->config().max_position_embeddings;
  const int64_t bs = kv_.block_size();
  while (true) {
    std::vector<std::pair<EventSink, GenerationEvent>> events;
    std::vector<BatchItem> batch;
    std::vector<Sequence*> in_batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
      if (stopping_ && waiting_.empty() && running_.empty()) return;
      for (auto& s : waiting_) s->cancelled |= stopping_;
      // Retire cancelled sequences.
      for (auto& s : running_) {
        if (s->cancelled || stopping_) Finish(*s, FinishReason::kCancelled, std::nullopt, events);
      }
      std::erase_if(running_, [&](const auto& s) { return !by_id_.contains(s->request.id); });
      if (!stopping_) Admit(events);
      while (stopping_ && !waiting_.empty()) {
        Finish(*waiting_.front(), FinishReason::kCancelled, std::nullopt, events);
        waiting_.pop_front();
      }
      // Build the step: the next prompt chunk, or the last sampled token.
      for (auto& s : running_) {
        SequenceState& st = s->state;
        BatchItem item;
        item.seq = &st;
        if (st.num_tokens < s->prompt_size()) {
          int64_t end = std::min(s->prompt_size(), st.num_tokens + options_.prefill_chunk);
          // Hybrid models: stop chunks on block boundaries, where state is snapshotted.
          if (kv_.hybrid()) {
            int64_t boundary = (end / bs) * bs;
            if (boundary > st.num_tokens) end = boundary;
          }
          item.tokens.assign(s->tokens.begin() + st.num_tokens, s->tokens.begin() + end);
        } else {
          absl::Status r = kv_.Reserve(st, st.num_tokens + 1);
          if (!r.ok()) {
            Finish(*s, FinishReason::kError, std::nullopt, events, r);
            continue;
          }
          item.tokens = {s->tokens.back()};
        }
        batch.push_back(std::move(item));
        in_batch.push_back(s.get());
      }
      std::erase_if(running_, [&](const auto& s) { return !by_id_.contains(s->request.id); });
    }
    for (auto& [sink, e] : events) sink(e);
    events.clear();
    if (batch.empty()) continue;

    auto t0 = Clock::now();
    std::vector<std::vector<float>> logits;
    absl::Status fs = model_->Forward(batch, kv_.cache(), &logits);
    double step_ms = Ms(Clock::now() - t0);

    std::unique_lock<std::mutex> lock(mu_);
    for (size_t i = 0; i < in_batch.size(); ++i) {
      Sequence& s = *in_batch[i];
      if (!fs.ok()) {
        Finish(s, FinishReason::kError, std::nullopt, events, fs);
        continue;
      }
      SequenceState& st = s.state;
      // Publish newly full blocks (and, for hybrid models, the state at a boundary).
      while (static_cast<int64_t>(s.hashes.size()) < st.num_tokens / bs) {
        size_t b = s.hashes.size();
        BlockHash parent = b == 0 ? BlockHash() : s.hashes.back();
        s.hashes.push_back(HashBlock(parent, std::span(s.tokens).subspan(b * bs, bs)));
        kv_.Publish(st, static_cast<int64_t>(b), s.hashes.back());
      }
      if (kv_.hybrid() && st.num_tokens % bs == 0 && !s.hashes.empty()) kv_.Snapshot(st, s.hashes.back());
      if (st.num_tokens < s.prompt_size()) continue;  // more prompt to prefill

      std::vector<float>& l = logits[i];
      if (static_cast<int32_t>(s.output.size()) < s.request.min_tokens) {
        for (int32_t t : eos_) l[t] = -std::numeric_limits<float>::infinity();
        for (int32_t t : s.request.stop_token_ids) {
          if (t >= 0 && t < vocab) l[t] = -std::numeric_limits<float>::infinity();
        }
      }
      SampleResult r = s.sampler->Sample(l, s.request.prompt, s.output);
      if (s.output.empty()) s.first_token = Clock::now();
      s.output.push_back(r.token);
      s.tokens.push_back(r.token);
      ++stats_.generated_tokens;
      GenerationEvent e;
      e.token = r.token;
      e.index = static_cast<int32_t>(s.output.size()) - 1;
      e.logprob = r.logprob;
      e.top_logprobs = std::move(r.top_logprobs);
      e.step_ms = step_ms;
      e.batch_size = static_cast<int32_t>(batch.size());
      events.emplace_back(s.sink, std::move(e));

      bool is_stop = std::find(s.request.stop_token_ids.begin(), s.request.stop_token_ids.end(),
                               r.token) != s.request.stop_token_ids.end();
      bool is_eos = !s.request.ignore_eos && std::find(eos_.begin(), eos_.end(), r.token) != eos_.end();
      if (is_stop || is_eos) {
        Finish(s, FinishReason::kStop, r.token, events);
      } else if ((s.request.max_tokens > 0 &&
                  static_cast<int32_t>(s.output.size()) >= s.request.max_tokens) ||
                 (context > 0 && static_cast<int64_t>(s.tokens.size()) >= context)) {
        Finish(s, FinishReason::kLength, std::nullopt, events);
      }
    }
    std::erase_if(running_, [&](const auto& s) { return !by_id_.contains(s->request.id); });
    lock.unlock();
    for (auto& [sink, e] : events) sink(e);
  }
}

}  // namespace krasis
