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
  std::vector<float> pending_logits;  // imported prompt: sample from these first
  Clock::time_point submitted, admitted, first_token;
  int64_t prompt_size() const { return static_cast<int64_t>(request.prompt.size()); }
};

struct DecodeEngine::Import {
  std::vector<int32_t> tokens;
  int64_t start = 0;
  SequenceState state;
  std::vector<bool> linear_received;  // per layer
  bool finished = false;
  std::vector<float> last_logits;
  Clock::time_point created;
  // ImportRows calls writing into the blocks right now (without the lock); the
  // import is not expired or dropped while this is above 0.
  int writers = 0;
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
    if (!seq->request.kv_import_id.empty()) {
      auto it = imports_.find(seq->request.kv_import_id);
      if (it == imports_.end() || !it->second->finished) {
        return FailedPreconditionError("no finished KV import '", seq->request.kv_import_id,
                                       "' on this worker");
      }
      if (it->second->tokens != seq->request.prompt) {
        return InvalidArgumentError("KV import '", seq->request.kv_import_id,
                                    "' was made for a different prompt");
      }
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
    if (!seq.request.kv_import_id.empty()) {
      auto it = imports_.find(seq.request.kv_import_id);
      if (it == imports_.end()) {
        Finish(seq, FinishReason::kError, std::nullopt, out,
               absl::FailedPreconditionError("KV import expired before the request was admitted"));
        waiting_.pop_front();
        continue;
      }
      Import& im = *it->second;
      seq.state = std::move(im.state);
      seq.pending_logits = std::move(im.last_logits);
      seq.cached_tokens = im.start;
      imports_.erase(it);
      seq.admitted = Clock::now();
      stats_.prefix_query_tokens += seq.prompt_size();
      stats_.prefix_hit_tokens += seq.cached_tokens;
      stats_.prompt_tokens += seq.prompt_size();
      ++stats_.imports;
      running_.push_back(std::move(waiting_.front()));
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

void DecodeEngine::PublishBlocks(Sequence& s) {
  const int64_t bs = kv_.block_size();
  SequenceState& st = s.state;
  while (static_cast<int64_t>(s.hashes.size()) < st.num_tokens / bs) {
    size_t b = s.hashes.size();
    BlockHash parent = b == 0 ? BlockHash() : s.hashes.back();
    s.hashes.push_back(HashBlock(parent, std::span(s.tokens).subspan(b * bs, bs)));
    kv_.Publish(st, static_cast<int64_t>(b), s.hashes.back());
  }
  // Hybrid models: keep the state at block boundaries so prefixes can resume.
  if (kv_.hybrid() && st.num_tokens % bs == 0 && !s.hashes.empty()) kv_.Snapshot(st, s.hashes.back());
}

void DecodeEngine::SampleAndEmit(Sequence& s, std::vector<float>& l, double step_ms,
                                 int32_t batch_size,
                                 std::vector<std::pair<EventSink, GenerationEvent>>& events) {
  const int64_t context = model_->config().max_position_embeddings;
  // Until min_tokens, EOS and stop tokens cannot be chosen (logprobs still
  // report their real values).
  std::vector<int32_t> banned;
  if (static_cast<int32_t>(s.output.size()) < s.request.min_tokens) {
    banned = eos_;
    banned.insert(banned.end(), s.request.stop_token_ids.begin(), s.request.stop_token_ids.end());
  }
  SampleResult r = s.sampler->Sample(l, s.request.prompt, s.output, banned);
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
  e.batch_size = batch_size;
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

void DecodeEngine::ExpireImports() {
  auto now = Clock::now();
  for (auto it = imports_.begin(); it != imports_.end();) {
    if (now - it->second->created > kImportExpiry && it->second->writers == 0) {
      KLOG_WARN("KV import {} expired unclaimed", it->first);
      kv_.Release(it->second->state);
      it = imports_.erase(it);
    } else {
      ++it;
    }
  }
}

void DecodeEngine::Loop() {
  const int64_t bs = kv_.block_size();
  auto gone = [&](const std::unique_ptr<Sequence>& s) { return !by_id_.contains(s->request.id); };
  while (true) {
    std::vector<std::pair<EventSink, GenerationEvent>> events;
    std::vector<BatchItem> batch;
    std::vector<Sequence*> in_batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, std::chrono::seconds(1),
                     [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
      ExpireImports();
      if (stopping_ && waiting_.empty() && running_.empty()) return;
      if (waiting_.empty() && running_.empty()) continue;
      // Retire cancelled sequences.
      for (auto& s : running_) {
        if (s->cancelled || stopping_) Finish(*s, FinishReason::kCancelled, std::nullopt, events);
      }
      std::erase_if(running_, gone);
      if (!stopping_) Admit(events);
      while (stopping_ && !waiting_.empty()) {
        Finish(*waiting_.front(), FinishReason::kCancelled, std::nullopt, events);
        waiting_.pop_front();
      }
      // Build the step: the next prompt chunk, or the last sampled token.
      for (auto& s : running_) {
        SequenceState& st = s->state;
        if (!s->pending_logits.empty()) {
          // Imported prompt: its KV is here; the first token comes from its logits.
          PublishBlocks(*s);
          SampleAndEmit(*s, s->pending_logits, 0.0, 1, events);
          s->pending_logits.clear();
          if (!by_id_.contains(s->request.id)) continue;
        }
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
      std::erase_if(running_, gone);
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
      PublishBlocks(s);
      if (s.state.num_tokens < s.prompt_size()) continue;  // more prompt to prefill
      SampleAndEmit(s, logits[i], step_ms, static_cast<int32_t>(batch.size()), events);
    }
    std::erase_if(running_, gone);
    lock.unlock();
    for (auto& [sink, e] : events) sink(e);
  }
}

absl::Status DecodeEngine::BeginImport(const std::string& import_id, std::vector<int32_t> tokens,
                                       int64_t start_token) {
  const ModelConfig& c = model_->config();
  const int64_t bs = kv_.block_size();
  if (import_id.empty()) return InvalidArgumentError("KV import id is empty");
  if (tokens.empty()) return InvalidArgumentError("KV import of an empty prompt");
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) return InvalidArgumentError("token id ", t, " is out of range");
  }
  if (start_token < 0 || start_token >= static_cast<int64_t>(tokens.size()) || start_token % bs != 0) {
    return InvalidArgumentError("import start_token ", start_token, " must be a multiple of the block size ",
                                bs, " below the prompt length ", tokens.size());
  }
  auto im = std::make_unique<Import>();
  im->start = start_token;
  im->created = Clock::now();
  im->linear_received.assign(model_->layers.size(), false);
  std::vector<BlockHash> hashes = ChainedBlockHashes(tokens, bs);
  std::lock_guard<std::mutex> lock(mu_);
  if (imports_.contains(import_id)) return absl::AlreadyExistsError(StrCat("KV import '", import_id, "' exists"));
  int64_t prefix_blocks = start_token / bs;
  if (kv_.MatchBlocks(hashes) < prefix_blocks) {
    return FailedPreconditionError("the first ", start_token, " tokens of import '", import_id,
                                   "' are no longer cached on this worker");
  }
  model_->InitSequence(im->state);
  kv_.Attach(im->state, hashes, prefix_blocks);
  absl::Status r = kv_.Reserve(im->state, static_cast<int64_t>(tokens.size()));
  if (!r.ok()) {
    kv_.Release(im->state);
    return r;
  }
  im->tokens = std::move(tokens);
  imports_[import_id] = std::move(im);
  return absl::OkStatus();
}

absl::Status DecodeEngine::ImportRows(const std::string& import_id, int layer, int64_t first,
                                      int64_t count, std::span<const float> rows) {
  Import* im = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = imports_.find(import_id);
    if (it == imports_.end()) return NotFoundError("no KV import '", import_id, "'");
    im = it->second.get();
    if (im->finished) return FailedPreconditionError("KV import '", import_id, "' is already finished");
    ++im->writers;
  }
  // Registered as a writer: the import stays until the matching decrement.
  struct WriterGuard {
    std::mutex& mu;
    Import* im;
    ~WriterGuard() {
      std::lock_guard<std::mutex> lock(mu);
      --im->writers;
    }
  } guard{mu_, im};
  if (layer < 0 || layer >= num_layers() || LayerFloats(layer) == 0) {
    return InvalidArgumentError("KV rows for layer ", layer, ", which keeps no KV");
  }
  if (first < im->start || count < 1 || first + count > static_cast<int64_t>(im->tokens.size())) {
    return InvalidArgumentError("KV rows [", first, ", ", first + count, ") are outside the imported range [",
                                im->start, ", ", im->tokens.size(), ")");
  }
  if (static_cast<int64_t>(rows.size()) != count * LayerFloats(layer)) {
    return InvalidArgumentError("layer ", layer, " KV rows carry ", rows.size(), " floats, expected ",
                                count * LayerFloats(layer));
  }
  // The import's blocks belong to it alone, and it cannot go away while we are a
  // registered writer: write without the lock.
  im->state.WriteRows(kv_.cache(), layer, first, count, rows.data());
  return absl::OkStatus();
}

absl::Status DecodeEngine::ImportLinearState(const std::string& import_id, int layer, LinearState state) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = imports_.find(import_id);
  if (it == imports_.end()) return NotFoundError("no KV import '", import_id, "'");
  Import& im = *it->second;
  if (layer < 0 || layer >= num_layers() || LayerFloats(layer) != 0) {
    return InvalidArgumentError("linear-attention state for layer ", layer, ", which is not linear attention");
  }
  const LinearState& want = im.state.linear[layer];
  if (state.conv.size() != want.conv.size() || state.recurrent.size() != want.recurrent.size()) {
    return InvalidArgumentError("linear-attention state for layer ", layer, " has the wrong size");
  }
  im.state.linear[layer] = std::move(state);
  im.linear_received[layer] = true;
  return absl::OkStatus();
}

absl::Status DecodeEngine::FinishImport(const std::string& import_id, std::vector<float> last_logits) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = imports_.find(import_id);
    if (it == imports_.end()) return NotFoundError("no KV import '", import_id, "'");
    Import& im = *it->second;
    if (static_cast<int64_t>(last_logits.size()) != model_->config().vocab_size) {
      return InvalidArgumentError("imported logits have ", last_logits.size(), " values, expected ",
                                  model_->config().vocab_size);
    }
    for (int l = 0; l < num_layers(); ++l) {
      if (LayerFloats(l) == 0 && !im.linear_received[l]) {
        return FailedPreconditionError("KV import '", import_id, "' lacks the state of linear-attention layer ", l);
      }
    }
    im.state.num_tokens = static_cast<int64_t>(im.tokens.size());
    im.last_logits = std::move(last_logits);
    im.finished = true;
  }
  wake_.notify_all();
  return absl::OkStatus();
}

void DecodeEngine::DropImport(const std::string& import_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = imports_.find(import_id);
  if (it == imports_.end() || it->second->writers > 0) return;  // a writer left: expiry cleans it up
  kv_.Release(it->second->state);
  imports_.erase(it);
}

absl::Status DecodeEngine::ExportPrefix(std::span<const int32_t> tokens, int64_t num_tokens,
                                        const ExportSink& sink) {
  const int64_t bs = kv_.block_size();
  if (num_tokens <= 0 || num_tokens % bs != 0 || num_tokens > static_cast<int64_t>(tokens.size())) {
    return InvalidArgumentError("export of ", num_tokens, " tokens: must be a positive multiple of ", bs,
                                " within the ", tokens.size(), " tokens given");
  }
  std::vector<BlockHash> hashes = ChainedBlockHashes(tokens.first(num_tokens), bs);
  SequenceState pinned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (kv_.MatchBlocks(hashes) < num_tokens / bs) {
      return NotFoundError("the first ", num_tokens, " tokens are not cached on this worker");
    }
    model_->InitSequence(pinned);
    kv_.Attach(pinned, hashes, num_tokens / bs);  // holds references while sending
  }
  absl::Status status;
  std::vector<float> rows;
  for (int l = 0; l < num_layers() && status.ok(); ++l) {
    if (LayerFloats(l) == 0) {
      status = sink.linear(l, pinned.linear[l]);
      continue;
    }
    for (int64_t first = 0; first < num_tokens && status.ok(); first += bs) {
      rows.resize(static_cast<size_t>(bs * LayerFloats(l)));
      pinned.ReadRows(kv_.cache(), l, first, bs, rows.data());
      status = sink.rows(l, first, bs, rows);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  kv_.Release(pinned);
  return status;
}

}  // namespace krasis
