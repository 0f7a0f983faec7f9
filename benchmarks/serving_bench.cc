// serving_bench: what the gateway costs and how it holds up under load.
//
//   1. Latency: the same kind of request (random prompt of --prompt-tokens ids,
//      --max-tokens greedy tokens, EOS ignored) sent one at a time, alternating
//      between the OpenAI API (HTTP streaming /v1/completions through the
//      gateway) and a direct gRPC Decode.Generate call to the decode worker.
//      Each request gets its own prompt, so no prefix-cache hits. Reports time to
//      first token and decode tokens/s of both paths and their ratio.
//   2. Load: --clients concurrent streaming chat clients for --duration-s
//      seconds; every response is checked (status 200, one finish_reason, usage,
//      [DONE], no error event). Reports requests, errors, tokens/s, TTFT p50/p99.
//
// By default it starts `krasis serve` on --model (the demo model) itself; give
// --http and --decode to measure a running cluster instead.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <numeric>
#include <random>

#include <boost/program_options.hpp>

#include "grpcpp/grpcpp.h"
#include "krasis/v1/decode.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace po = boost::program_options;
using krasis::testing::HttpExchange;
using krasis::testing::SseEvents;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

struct Sample {
  double ttft_ms = 0, decode_tps = 0;
  int tokens = 0;
  bool ok = false;
  std::string error;
};

// Streams one completion over HTTP; times the first and last text events.
Sample HttpCompletion(const std::string& http, const std::string& model, const std::vector<int32_t>& prompt,
                      int max_tokens) {
  json body = {{"model", model},          {"prompt", prompt},   {"max_tokens", max_tokens},
               {"temperature", 0},        {"ignore_eos", true}, {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  Sample s;
  auto t0 = Clock::now();
  std::optional<Clock::time_point> first, last;
  size_t seen = 0;
  auto r = HttpExchange(http, "POST", "/v1/completions", body.dump(), [&](const std::string& raw) {
    auto events = SseEvents(raw);
    for (; seen < events.size(); ++seen) {
      const json& e = events[seen];
      if (!e.is_object() || !e.contains("choices") || e["choices"].empty()) continue;
      if (!e["choices"][0]["text"].get<std::string>().empty()) {
        auto now = Clock::now();
        if (!first) first = now;
        last = now;
      }
    }
    return true;
  });
  auto events = SseEvents(r.body);
  if (r.status != 200 || events.size() < 2 || events.back() != json("[DONE]")) {
    s.error = "HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 200);
    return s;
  }
  const json& usage = events[events.size() - 2]["usage"];
  s.tokens = usage.is_object() ? usage["completion_tokens"].get<int>() : 0;
  if (!first || s.tokens < 2) {
    s.error = "no tokens";
    return s;
  }
  s.ttft_ms = Ms(*first - t0);
  s.decode_tps = (s.tokens - 1) / (Ms(*last - *first) / 1000.0);
  s.ok = true;
  return s;
}

// The same generation straight from the decode worker.
Sample GrpcGenerate(krasis::v1::Decode::Stub& stub, const std::string& model, const std::vector<int32_t>& prompt,
                    int max_tokens, int id) {
  krasis::v1::GenerateRequest req;
  req.set_request_id("bench-" + std::to_string(id));
  req.set_model_id(model);
  req.mutable_prompt_token_ids()->Assign(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  Sample s;
  auto t0 = Clock::now();
  std::optional<Clock::time_point> first, last;
  auto reader = stub.Generate(&ctx, req);
  krasis::v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.tokens_size() == 0) continue;
    auto now = Clock::now();
    if (!first) first = now;
    last = now;
    s.tokens += resp.tokens_size();
  }
  grpc::Status st = reader->Finish();
  if (!st.ok() || !first || s.tokens < 2) {
    s.error = "gRPC " + st.error_message();
    return s;
  }
  s.ttft_ms = Ms(*first - t0);
  s.decode_tps = (s.tokens - 1) / (Ms(*last - *first) / 1000.0);
  s.ok = true;
  return s;
}

struct LoadResult {
  std::atomic<int> ok{0}, errors{0};
  std::atomic<int64_t> tokens{0};
  std::mutex mu;
  std::vector<double> ttft_ms;
  std::vector<std::string> error_samples;
};

void LoadClient(const std::string& http, const std::string& model, int max_tokens, Clock::time_point deadline,
                int seed, LoadResult* out) {
  static const char* kPrompts[] = {"Write a function that reverses a string.", "What is a hash map?",
                                   "Explain recursion with an example.", "How do I read a file in Python?",
                                   "Sort a list of numbers.", "What does a compiler do?"};
  int i = seed;
  while (Clock::now() < deadline) {
    json body = {{"model", model},
                 {"messages", json::array({{{"role", "user"}, {"content", kPrompts[i++ % 6]}}})},
                 {"max_tokens", max_tokens},
                 {"temperature", 0.7},
                 {"seed", i},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    auto t0 = Clock::now();
    std::optional<double> ttft;
    auto r = HttpExchange(http, "POST", "/v1/chat/completions", body.dump(), [&](const std::string& raw) {
      if (!ttft && raw.find("\"content\":\"") != std::string::npos && SseEvents(raw).size() >= 2) {
        ttft = Ms(Clock::now() - t0);
      }
      return true;
    });
    auto events = SseEvents(r.body);
    int finishes = 0;
    bool error_event = false;
    int64_t tokens = -1;
    for (const json& e : events) {
      if (!e.is_object()) continue;
      if (e.contains("error")) error_event = true;
      if (e.contains("choices") && !e["choices"].empty() && e["choices"][0]["finish_reason"].is_string()) ++finishes;
      if (e.contains("usage") && e["usage"].is_object()) tokens = e["usage"]["completion_tokens"].get<int64_t>();
    }
    bool good = r.status == 200 && !error_event && finishes == 1 && tokens >= 0 && !events.empty() &&
                events.back() == json("[DONE]");
    if (good) {
      out->ok.fetch_add(1);
      out->tokens.fetch_add(tokens);
      std::lock_guard<std::mutex> lock(out->mu);
      if (ttft) out->ttft_ms.push_back(*ttft);
    } else {
      out->errors.fetch_add(1);
      std::lock_guard<std::mutex> lock(out->mu);
      if (out->error_samples.size() < 5) {
        out->error_samples.push_back("HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 300));
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = std::string(KRASIS_SOURCE_DIR) + "/models/demo", http, decode, model_id;
  int requests = 16, prompt_tokens = 128, max_tokens = 128, clients = 64, duration_s = 30, client_max_tokens = 32;
  po::options_description desc("serving_bench options");
  desc.add_options()("help,h", "print this help")(
      "model", po::value(&model_dir)->default_value(model_dir), "model to serve (ignored with --http)")(
      "http", po::value(&http), "gateway HTTP address of a running cluster (host:port)")(
      "decode", po::value(&decode), "decode worker gRPC address of that cluster")(
      "model-id", po::value(&model_id), "model id (default: the model folder's name)")(
      "requests", po::value(&requests)->default_value(requests), "latency requests per path")(
      "prompt-tokens", po::value(&prompt_tokens)->default_value(prompt_tokens), "prompt length (latency)")(
      "max-tokens", po::value(&max_tokens)->default_value(max_tokens), "tokens generated per request (latency)")(
      "clients", po::value(&clients)->default_value(clients), "concurrent streaming clients (load)")(
      "duration-s", po::value(&duration_s)->default_value(duration_s), "load phase length")(
      "client-max-tokens", po::value(&client_max_tokens)->default_value(client_max_tokens),
      "tokens per load request");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "serving_bench: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  std::unique_ptr<krasis::testing::Cluster> cluster;
  if (http.empty() != decode.empty()) {
    std::cerr << "serving_bench: give both --http and --decode, or neither\n";
    return 2;
  }
  if (http.empty()) {
    cluster = std::make_unique<krasis::testing::Cluster>("/tmp/krasis-serving-bench-" + std::to_string(getpid()));
    std::string error;
    if (!cluster->Start(model_dir, {"--kv-budget-mb", "512"}, &error)) {
      std::cerr << "serving_bench: cannot start the cluster: " << error << "\n";
      return 1;
    }
    http = cluster->http();
    decode = cluster->service("decode");
  }
  if (model_id.empty()) model_id = std::filesystem::path(model_dir).lexically_normal().filename().string();

  // 1. Latency, HTTP vs direct gRPC, alternating.
  auto stub = krasis::v1::Decode::NewStub(grpc::CreateChannel(decode, grpc::InsecureChannelCredentials()));
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> token(10, 4000);
  auto prompt = [&] {
    std::vector<int32_t> p(static_cast<size_t>(prompt_tokens));
    for (auto& t : p) t = token(rng);
    return p;
  };
  // Warm up both paths once.
  HttpCompletion(http, model_id, prompt(), 8);
  GrpcGenerate(*stub, model_id, prompt(), 8, -1);
  std::vector<double> http_ttft, http_tps, grpc_ttft, grpc_tps;
  int failures = 0;
  for (int i = 0; i < requests; ++i) {
    Sample h = HttpCompletion(http, model_id, prompt(), max_tokens);
    Sample g = GrpcGenerate(*stub, model_id, prompt(), max_tokens, i);
    for (const Sample* s : {&h, &g}) {
      if (!s->ok) {
        ++failures;
        std::cerr << "request failed: " << s->error << "\n";
      }
    }
    if (h.ok) {
      http_ttft.push_back(h.ttft_ms);
      http_tps.push_back(h.decode_tps);
    }
    if (g.ok) {
      grpc_ttft.push_back(g.ttft_ms);
      grpc_tps.push_back(g.decode_tps);
    }
  }
  std::printf("\nLatency: %d requests per path, prompt %d tokens, %d generated tokens, model %s\n", requests,
              prompt_tokens, max_tokens, model_id.c_str());
  std::printf("%-34s %14s %14s %10s\n", "", "HTTP gateway", "gRPC decode", "ratio");
  std::printf("%-34s %14.2f %14.2f %9.1f%%\n", "TTFT p50 (ms)", Percentile(http_ttft, 0.5),
              Percentile(grpc_ttft, 0.5), 100.0 * Percentile(grpc_ttft, 0.5) / Percentile(http_ttft, 0.5));
  std::printf("%-34s %14.2f %14.2f %9.1f%%\n", "TTFT mean (ms)", Mean(http_ttft), Mean(grpc_ttft),
              100.0 * Mean(grpc_ttft) / Mean(http_ttft));
  std::printf("%-34s %14.1f %14.1f %9.1f%%\n", "decode tokens/s (mean)", Mean(http_tps), Mean(grpc_tps),
              100.0 * Mean(http_tps) / Mean(grpc_tps));
  std::printf("%-34s %14d\n", "failed requests", failures);
  std::printf("(ratio: HTTP decode tokens/s over gRPC's; for TTFT, gRPC's time over HTTP's)\n");

  // 2. Load.
  LoadResult load;
  auto start = Clock::now();
  auto deadline = start + std::chrono::seconds(duration_s);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back(LoadClient, http, model_id, client_max_tokens, deadline, c, &load);
  }
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("\nLoad: %d concurrent streaming chat clients for %d s, %d tokens per request\n", clients, duration_s,
              client_max_tokens);
  std::printf("%-34s %14d\n", "requests completed", load.ok.load());
  std::printf("%-34s %14d\n", "errors", load.errors.load());
  std::printf("%-34s %14.1f\n", "requests/s", load.ok.load() / seconds);
  std::printf("%-34s %14.1f\n", "generated tokens/s (all clients)", static_cast<double>(load.tokens.load()) / seconds);
  std::printf("%-34s %14.1f\n", "TTFT p50 (ms)", Percentile(load.ttft_ms, 0.5));
  std::printf("%-34s %14.1f\n", "TTFT p99 (ms)", Percentile(load.ttft_ms, 0.99));
  for (const auto& e : load.error_samples) std::printf("error: %s\n", e.c_str());
  return (failures == 0 && load.errors.load() == 0) ? 0 : 1;
}
