// The whole cluster end to end: `krasis serve` with the demo model starts the
// four real services on loopback; these tests drive the gateway over raw HTTP
// and its gRPC Inference API and look at the decode worker's Stats:
//   - greedy output through the cluster equals `krasis-cli logits --greedy`,
//     with the prompt prefilled on the decode worker and (long prompt) on the
//     prefill worker;
//   - a follow-up turn hits the prefix cache (usage and decode Stats);
//   - Inference: streaming chat and completion match the REST API, tokenize,
//     detokenize, list models, errors as gRPC codes, cancellation;
//   - a client that hangs up mid-stream cancels the work on the decode worker;
//   - killing the decode worker mid-stream ends the stream with an error event,
//     and the gateway serves again once the supervisor has restarted it.
// The tool-calling model (make_scripted_model) is served too: tool calls parsed
// from its real output, streamed and not, over REST and gRPC.
#include <gtest/gtest.h>

#include <cstdio>

#include "grpcpp/grpcpp.h"
#include "krasis/v1/decode.grpc.pb.h"
#include "krasis/v1/inference.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace krasis {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using testing::Cluster;
using testing::HttpExchange;
using testing::HttpPost;
using testing::SseEvents;

const std::string kDemo = std::string(KRASIS_SOURCE_DIR) + "/models/demo";
constexpr int32_t kEos = 2;  // <|im_end|> of the demo model

// Runs a command and returns its stdout.
std::string Capture(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

std::string Join(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

// The demo model's text for `ids` (special tokens skipped), from the gateway's
// Inference.Detokenize; "<failed>" if the call fails.
std::string Detokenize(v1::Inference::Stub& stub, const std::vector<int32_t>& ids) {
  grpc::ClientContext ctx;
  v1::DetokenizeRequest req;
  req.set_model("demo");
  req.mutable_tokens()->Assign(ids.begin(), ids.end());
  req.set_skip_special_tokens(true);
  v1::DetokenizeResponse resp;
  grpc::Status s = stub.Detokenize(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return s.ok() ? resp.text() : "<failed>";
}

class DemoClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster(::testing::TempDir() + "krasis-cluster-test-" + std::to_string(getpid()));
    std::string error;
    // Prompts of 48+ uncached tokens go to the prefill worker.
    if (!cluster_->Start(kDemo, {"--prefill-threshold", "48"}, &error)) {
      start_error_ = new std::string(error);
    }
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    if (start_error_ != nullptr) GTEST_FAIL() << "cluster did not start: " << *start_error_;
  }

  static v1::StatsResponse DecodeStats() {
    auto stub = v1::Decode::NewStub(
        grpc::CreateChannel(cluster_->service("decode"), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::StatsResponse stats;
    EXPECT_TRUE(stub->Stats(&ctx, v1::StatsRequest(), &stats).ok());
    return stats;
  }
  // Waits until the decode worker runs no sequence.
  static bool DecodeIdle(std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto s = DecodeStats();
      if (s.running_sequences() == 0 && s.waiting_sequences() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  static std::unique_ptr<v1::Inference::Stub> Inference() {
    return v1::Inference::NewStub(grpc::CreateChannel(cluster_->grpc(), grpc::InsecureChannelCredentials()));
  }

  static Cluster* cluster_;
  static std::string* start_error_;
};
Cluster* DemoClusterTest::cluster_ = nullptr;
std::string* DemoClusterTest::start_error_ = nullptr;

TEST_F(DemoClusterTest, GreedyOutputEqualsKrasisCliOnBothPrefillPaths) {
  ASSERT_EQ(HttpPost(cluster_->http(), "/v1/timing", R"({"enabled": true})").status, 200);
  auto stub = Inference();
  // Short prompt: prefilled on the decode worker. Long one: on the prefill worker.
  std::vector<int32_t> shortp = {1, 872, 198, 54, 1024, 77, 301, 12, 900, 33};
  std::vector<int32_t> longp;
  for (int i = 0; i < 90; ++i) longp.push_back(100 + (i * 37) % 3000);
  for (const auto& [prompt, remote] : {std::pair{shortp, false}, std::pair{longp, true}}) {
    const int n = 24;
    std::string out = Capture(std::string(KRASIS_BINARY_DIR) + "/bin/krasis-cli logits --model " + kDemo +
                              " --tokens " + Join(prompt) + " --greedy " + std::to_string(n) +
                              " --kv-cache-dtype bf16 --json");
    json cli = json::parse(out, nullptr, false);
    ASSERT_FALSE(cli.is_discarded()) << out;
    std::vector<int32_t> greedy = cli["greedy"].get<std::vector<int32_t>>();
    ASSERT_EQ(greedy.size(), static_cast<size_t>(n));
    // The cluster stops at EOS; compare up to it.
    auto eos = std::find(greedy.begin(), greedy.end(), kEos);
    std::vector<int32_t> expected_ids(greedy.begin(), eos);
    const std::string expected_text = Detokenize(*stub, expected_ids);

    json body = {{"model", "demo"}, {"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}};
    auto r = HttpPost(cluster_->http(), "/v1/completions", body.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    json j = json::parse(r.body);
    EXPECT_EQ(j["choices"][0]["text"], expected_text) << "prompt of " << prompt.size() << " tokens";
    EXPECT_EQ(j["choices"][0]["finish_reason"], eos == greedy.end() ? "length" : "stop");
    EXPECT_EQ(j["usage"]["completion_tokens"].get<size_t>(),
              eos == greedy.end() ? static_cast<size_t>(n) : expected_ids.size() + 1);
    EXPECT_EQ(j["timing"]["prefilled_remotely"], remote) << "prompt of " << prompt.size() << " tokens";
  }
  ASSERT_EQ(HttpPost(cluster_->http(), "/v1/timing", R"({"enabled": false})").status, 200);
}

TEST_F(DemoClusterTest, FollowUpTurnHitsThePrefixCache) {
  json messages = json::array({{{"role", "system"}, {"content", "You are a careful assistant who writes code."}},
                               {{"role", "user"}, {"content", "Write a function that adds two numbers in Python."}}});
  json req = {{"model", "demo"}, {"messages", messages}, {"max_tokens", 20}, {"temperature", 0}};
  auto first = HttpPost(cluster_->http(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(first.status, 200) << first.body;
  json j1 = json::parse(first.body);
  v1::StatsResponse before = DecodeStats();
  messages.push_back({{"role", "assistant"}, {"content", j1["choices"][0]["message"]["content"]}});
  messages.push_back({{"role", "user"}, {"content", "Now make it multiply."}});
  req["messages"] = messages;
  auto second = HttpPost(cluster_->http(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(second.status, 200) << second.body;
  json j2 = json::parse(second.body);
  v1::StatsResponse after = DecodeStats();
  const int64_t first_prompt = j1["usage"]["prompt_tokens"].get<int64_t>();
  const int64_t cached = j2["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>();
  // Whole blocks of the first turn's prompt are reused.
  const int64_t block = before.kv_block_size();
  EXPECT_GE(cached, first_prompt / block * block) << second.body;
  EXPECT_LT(cached, j2["usage"]["prompt_tokens"].get<int64_t>());
  EXPECT_GE(after.prefix_cache_hit_tokens() - before.prefix_cache_hit_tokens(), static_cast<uint64_t>(cached));
  // Only the new tokens were computed.
  EXPECT_LE(after.prompt_tokens_computed() - before.prompt_tokens_computed(),
            static_cast<uint64_t>(j2["usage"]["prompt_tokens"].get<int64_t>() - cached));
}

TEST_F(DemoClusterTest, InferenceChatStreamMatchesRestApi) {
  json req = {{"model", "demo"},
              {"messages", json::array({{{"role", "user"}, {"content", "Explain what a linked list is."}}})},
              {"max_tokens", 24},
              {"temperature", 0}};
  auto rest = HttpPost(cluster_->http(), "/v1/chat/completions", req.dump());
  ASSERT_EQ(rest.status, 200) << rest.body;
  json expected = json::parse(rest.body);

  auto stub = Inference();
  grpc::ClientContext ctx;
  v1::ChatCompletionRequest creq;
  creq.set_model("demo");
  auto* m = creq.add_messages();
  m->set_role("user");
  m->set_text("Explain what a linked list is.");
  creq.set_max_tokens(24);
  creq.set_temperature(0);
  creq.mutable_stream_options()->set_include_usage(true);
  auto reader = stub->ChatCompletion(&ctx, creq);
  v1::ChatCompletionChunk chunk;
  std::vector<v1::ChatCompletionChunk> chunks;
  while (reader->Read(&chunk)) chunks.push_back(chunk);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].choices(0).delta().role(), "assistant");
  EXPECT_EQ(chunks[0].object(), "chat.completion.chunk");
  EXPECT_EQ(chunks[0].model(), "demo");
  std::string text;
  int finishes = 0;
  for (const auto& c : chunks) {
    EXPECT_EQ(c.id(), chunks[0].id());
    if (c.choices_size() == 0) continue;
    text += c.choices(0).delta().content();
    if (c.choices(0).finish_reason() != v1::FINISH_REASON_UNSPECIFIED) ++finishes;
  }
  EXPECT_EQ(text, expected["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(finishes, 1);
  const auto& last = chunks.back();
  EXPECT_EQ(last.choices_size(), 0);
  EXPECT_EQ(last.usage().prompt_tokens(), expected["usage"]["prompt_tokens"].get<int>());
  EXPECT_EQ(last.usage().completion_tokens(), expected["usage"]["completion_tokens"].get<int>());
  EXPECT_EQ(last.usage().total_tokens(), last.usage().prompt_tokens() + last.usage().completion_tokens());
}

TEST_F(DemoClusterTest, InferenceCompletionTokenizeDetokenizeListModels) {
  auto stub = Inference();
  const std::string prompt = "def fibonacci(n):";
  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse resp;
    ASSERT_TRUE(stub->ListModels(&ctx, v1::ListModelsRequest(), &resp).ok());
    ASSERT_EQ(resp.data_size(), 1);
    EXPECT_EQ(resp.data(0).id(), "demo");
    EXPECT_EQ(resp.data(0).max_model_len(), 2048);
    EXPECT_EQ(resp.data(0).info().num_experts(), 8);
  }
  v1::TokenizeResponse tokens;
  {
    grpc::ClientContext ctx;
    v1::TokenizeRequest req;
    req.set_model("demo");
    req.set_prompt(prompt);
    req.set_return_token_strs(true);
    ASSERT_TRUE(stub->Tokenize(&ctx, req, &tokens).ok());
    EXPECT_EQ(tokens.count(), tokens.tokens_size());
    EXPECT_GT(tokens.count(), 2);
    std::string joined;
    for (const auto& s : tokens.token_strs()) joined += s;
    EXPECT_EQ(joined, prompt);
  }
  {
    grpc::ClientContext ctx;
    v1::DetokenizeRequest req;
    req.set_model("demo");
    *req.mutable_tokens() = tokens.tokens();
    v1::DetokenizeResponse resp;
    ASSERT_TRUE(stub->Detokenize(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.text(), prompt);
  }
  // Completion over gRPC (text prompt) equals REST with the token-id prompt.
  json body = {{"model", "demo"},
               {"prompt", std::vector<int32_t>(tokens.tokens().begin(), tokens.tokens().end())},
               {"max_tokens", 16},
               {"temperature", 0}};
  auto rest = HttpPost(cluster_->http(), "/v1/completions", body.dump());
  ASSERT_EQ(rest.status, 200) << rest.body;
  json expected = json::parse(rest.body);
  EXPECT_EQ(expected["usage"]["prompt_tokens"].get<int>(), tokens.count());
  grpc::ClientContext ctx;
  v1::CompletionRequest req;
  req.set_model("demo");
  req.add_prompt()->set_text(prompt);
  req.set_max_tokens(16);
  req.set_temperature(0);
  auto reader = stub->Completion(&ctx, req);
  v1::CompletionChunk chunk;
  std::string text;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.object(), "text_completion");
    if (chunk.choices_size() == 0) continue;
    text += chunk.choices(0).text();
    if (chunk.choices(0).finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = chunk.choices(0).finish_reason();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(text, expected["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(finish, expected["choices"][0]["finish_reason"] == "length" ? v1::FINISH_REASON_LENGTH
                                                                         : v1::FINISH_REASON_STOP);
}

TEST_F(DemoClusterTest, InferenceErrorsAreGrpcCodes) {
  auto stub = Inference();
  auto chat = [&](const std::function<void(v1::ChatCompletionRequest&)>& edit) {
    v1::ChatCompletionRequest req;
    req.set_model("demo");
    auto* m = req.add_messages();
    m->set_role("user");
    m->set_text("hello");
    edit(req);
    grpc::ClientContext ctx;
    auto reader = stub->ChatCompletion(&ctx, req);
    v1::ChatCompletionChunk chunk;
    int chunks = 0;
    while (reader->Read(&chunk)) ++chunks;
    grpc::Status s = reader->Finish();
    EXPECT_EQ(chunks, 0) << "an invalid request must fail before streaming";
    return s;
  };
  grpc::Status s = chat([](auto& r) { r.set_model("nope"); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_NE(s.error_message().find("nope"), std::string::npos);
  s = chat([](auto& r) { r.set_temperature(5); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("temperature"), std::string::npos) << s.error_message();
  s = chat([](auto& r) { r.set_max_tokens(5000); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("context_length_exceeded"), std::string::npos) << s.error_message();
  s = chat([](auto& r) { r.set_n(3); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  s = chat([](auto& r) { r.mutable_messages(0)->set_role("wizard"); });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  s = chat([](auto& r) {
    auto* t = r.add_tools();
    t->set_type("function");
    t->mutable_function()->set_name("f");
    t->mutable_function()->set_parameters("{not json");
  });
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  {
    grpc::ClientContext ctx;
    v1::DetokenizeRequest req;
    req.set_model("demo");
    req.add_tokens(999999);
    v1::DetokenizeResponse resp;
    EXPECT_EQ(stub->Detokenize(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    v1::TokenizeRequest req;
    req.set_model("demo");
    v1::TokenizeResponse resp;
    EXPECT_EQ(stub->Tokenize(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(DemoClusterTest, CancellingCancelsWorkOnTheDecodeWorker) {
  ASSERT_TRUE(DecodeIdle(std::chrono::seconds(10)));
  // gRPC: cancel the call after a few chunks.
  {
    auto stub = Inference();
    grpc::ClientContext ctx;
    v1::ChatCompletionRequest req;
    req.set_model("demo");
    auto* m = req.add_messages();
    m->set_role("user");
    m->set_text("Tell me a very long story.");
    req.set_max_tokens(1500);
    req.set_ignore_eos(true);
    auto reader = stub->ChatCompletion(&ctx, req);
    v1::ChatCompletionChunk chunk;
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(reader->Read(&chunk));
    EXPECT_EQ(DecodeStats().running_sequences(), 1);
    ctx.TryCancel();
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_TRUE(DecodeIdle(std::chrono::seconds(5))) << "decode worker still runs the cancelled request";
  }
  // HTTP: hang up in the middle of an SSE stream.
  {
    json req = {{"model", "demo"},
                {"messages", json::array({{{"role", "user"}, {"content", "Tell me a very long story."}}})},
                {"max_tokens", 1500},
                {"ignore_eos", true},
                {"stream", true}};
    bool was_running = false;
    HttpExchange(cluster_->http(), "POST", "/v1/chat/completions", req.dump(), [&](const std::string& raw) {
      if (SseEvents(raw).size() < 4) return true;
      was_running = DecodeStats().running_sequences() == 1;
      return false;  // hang up
    });
    EXPECT_TRUE(was_running);
    EXPECT_TRUE(DecodeIdle(std::chrono::seconds(5))) << "decode worker still runs after the client left";
  }
}

TEST_F(DemoClusterTest, SixtyFourConcurrentStreamsAllComplete) {
  std::atomic<int> good{0};
  std::vector<std::string> failures(64);
  std::vector<std::thread> clients;
  for (int c = 0; c < 64; ++c) {
    clients.emplace_back([&, c] {
      json req = {{"model", "demo"},
                  {"messages", json::array({{{"role", "user"}, {"content", "Question number " + std::to_string(c)}}})},
                  {"max_tokens", 8},
                  {"temperature", 0.8},
                  {"seed", c},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}}};
      auto r = HttpPost(cluster_->http(), "/v1/chat/completions", req.dump());
      auto events = SseEvents(r.body);
      int finishes = 0;
      bool usage = false, error = false;
      for (const json& e : events) {
        if (!e.is_object()) continue;
        error |= e.contains("error");
        if (!e["choices"].empty() && e["choices"][0]["finish_reason"].is_string()) ++finishes;
        usage |= e["usage"].is_object() && e["usage"]["completion_tokens"].get<int>() > 0;
      }
      if (r.status == 200 && finishes == 1 && usage && !error && events.back() == json("[DONE]")) {
        good.fetch_add(1);
      } else {
        failures[static_cast<size_t>(c)] = std::to_string(r.status) + " " + r.body.substr(0, 300);
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(good.load(), 64);
  for (const auto& f : failures) EXPECT_TRUE(f.empty()) << f;
}

// Runs last in this suite: it kills the decode worker.
TEST_F(DemoClusterTest, ZZDecodeWorkerDeathMidStreamGivesAnErrorEventThenServiceResumes) {
  pid_t decode = cluster_->ServicePid("decode");
  ASSERT_GT(decode, 0);
  json req = {{"model", "demo"},
              {"messages", json::array({{{"role", "user"}, {"content", "Tell me a very long story."}}})},
              {"max_tokens", 1500},
              {"ignore_eos", true},
              {"stream", true}};
  bool killed = false;
  auto start = std::chrono::steady_clock::now();
  auto r = HttpExchange(cluster_->http(), "POST", "/v1/chat/completions", req.dump(), [&](const std::string& raw) {
    if (!killed && SseEvents(raw).size() >= 4) {
      kill(decode, SIGKILL);
      killed = true;
    }
    return true;
  });
  ASSERT_TRUE(killed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30)) << "the stream hung";
  ASSERT_EQ(r.status, 200);
  auto events = SseEvents(r.body);
  ASSERT_FALSE(events.empty());
  const json& last = events.back();
  ASSERT_TRUE(last.is_object() && last.contains("error")) << "last event: " << last.dump();
  EXPECT_TRUE(last["error"]["message"].is_string());
  EXPECT_FALSE(last["error"]["message"].get<std::string>().empty());
  for (const auto& e : events) EXPECT_NE(e, json("[DONE]")) << "a failed stream must not end with [DONE]";

  // The supervisor restarts the worker; the gateway serves again.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  std::string body;
  json ok_req = {{"model", "demo"},
                 {"messages", json::array({{{"role", "user"}, {"content", "hello"}}})},
                 {"max_tokens", 4}};
  while (std::chrono::steady_clock::now() < deadline) {
    auto again = HttpPost(cluster_->http(), "/v1/chat/completions", ok_req.dump());
    status = again.status;
    body = again.body;
    if (status == 200) break;
    EXPECT_EQ(status, 503) << "while the worker is down the gateway answers 503, got: " << body;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(status, 200) << body;
  EXPECT_NE(cluster_->ServicePid("decode"), decode);
  EXPECT_EQ(json::parse(body)["object"], "chat.completion");
}

// The decode worker with INT8 experts: greedy through the cluster equals
// `krasis-cli logits --experts int8 --greedy` (the same quantized model).
TEST(QuantizedClusterTest, GreedyEqualsKrasisCliWithInt8Experts) {
  Cluster cluster(::testing::TempDir() + "krasis-int8-test-" + std::to_string(getpid()));
  std::string error;
  ASSERT_TRUE(cluster.Start(kDemo, {"--experts", "int8"}, &error)) << error;
  std::vector<int32_t> prompt = {1, 872, 198, 54, 1024, 77, 301, 12, 900, 33};
  const int n = 24;
  json cli = json::parse(Capture(std::string(KRASIS_BINARY_DIR) + "/bin/krasis-cli logits --model " + kDemo +
                                 " --experts int8 --cache-dir none --tokens " + Join(prompt) + " --greedy " + std::to_string(n) +
                                 " --json"));
  std::vector<int32_t> greedy = cli["greedy"].get<std::vector<int32_t>>();
  auto eos = std::find(greedy.begin(), greedy.end(), kEos);
  std::vector<int32_t> expected_ids(greedy.begin(), eos);
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(cluster.grpc(), grpc::InsecureChannelCredentials()));
  const std::string expected_text = Detokenize(*stub, expected_ids);
  json body = {{"model", "demo"}, {"prompt", prompt}, {"max_tokens", n}, {"temperature", 0}};
  auto r = HttpPost(cluster.http(), "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["text"], expected_text);
}

// Deployment across machines: a decode worker started with --loader instead of
// --model gets the model from krasis-loader (here on the same host, so it maps
// the loader's directory; streaming copies are tested in tests/loader) and serves.
TEST(LoaderDeploymentTest, DecodeWorkerGetsItsModelFromTheLoader) {
  const std::string bin = std::string(KRASIS_BINARY_DIR) + "/bin/";
  const fs::path tmp = fs::path(::testing::TempDir()) / ("krasis-loader-e2e-" + std::to_string(getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp / "models");
  fs::create_directory_symlink(kDemo, tmp / "models" / "demo");
  pid_t loader = testing::Spawn({bin + "krasis-loader", "--listen", "127.0.0.1:0", "--ready-file",
                                 (tmp / "loader.json").string(), "--models-dir", (tmp / "models").string(),
                                 "--cache-dir", (tmp / "cache").string()});
  ASSERT_GT(loader, 0);
  json lready = testing::WaitForJson(tmp / "loader.json", std::chrono::seconds(30));
  ASSERT_FALSE(lready.is_null());
  pid_t decode = testing::Spawn({bin + "krasis-decode", "--listen", "127.0.0.1:0", "--ready-file",
                                 (tmp / "decode.json").string(), "--loader", lready["address"].get<std::string>(),
                                 "--model-id", "demo", "--fetch-dir", (tmp / "fetched").string(),
                                 "--kv-budget-mb", "16"});
  ASSERT_GT(decode, 0);
  json dready = testing::WaitForJson(tmp / "decode.json", std::chrono::seconds(60));
  ASSERT_FALSE(dready.is_null()) << "decode worker did not start with --loader";
  auto stub = v1::Decode::NewStub(
      grpc::CreateChannel(dready["address"].get<std::string>(), grpc::InsecureChannelCredentials()));
  v1::GenerateRequest req;
  req.set_request_id("loader-e2e");
  req.set_model_id("demo");
  for (int32_t t : {1, 872, 198, 54}) req.add_prompt_token_ids(t);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_max_tokens(4);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse resp;
  int tokens = 0;
  while (reader->Read(&resp)) tokens += resp.tokens_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 4);
  stub.reset();
  EXPECT_EQ(testing::Terminate(decode), 0);

  // An unknown model id: the worker exits with an error naming it.
  std::string out = Capture(bin + "krasis-decode --listen 127.0.0.1:0 --loader " +
                            lready["address"].get<std::string>() + " --model-id nosuch 2>&1; echo exit=$?");
  EXPECT_NE(out.find("nosuch"), std::string::npos) << out;
  EXPECT_NE(out.find("exit=1"), std::string::npos) << out;
  EXPECT_EQ(testing::Terminate(loader), 0);
  fs::remove_all(tmp);
}

class ToolModelClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/tools-model-" + std::to_string(getpid()));
    cluster_ = new Cluster(::testing::TempDir() + "krasis-tools-test-" + std::to_string(getpid()));
    std::string out = Capture(std::string(KRASIS_BINARY_DIR) + "/bin/make_scripted_model --from " + kDemo +
                              " --out " + *dir_ + " 2>&1");
    std::string error;
    if (out.find("wrote") == std::string::npos) {
      start_error_ = new std::string("make_scripted_model failed: " + out);
    } else if (!cluster_->Start(*dir_, {}, &error)) {
      start_error_ = new std::string(error);
    }
  }
  static void TearDownTestSuite() {
    delete cluster_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    if (start_error_ != nullptr) GTEST_FAIL() << *start_error_;
  }
  static json Request(bool stream) {
    std::string model = std::filesystem::path(*dir_).filename().string();
    return {{"model", model},
            {"stream", stream},
            {"messages", json::array({{{"role", "user"}, {"content", "What is the weather in Paris?"}}})},
            {"tools", json::array({{{"type", "function"},
                                    {"function", {{"name", "get_weather"},
                                                  {"description", "Current weather of a city"},
                                                  {"parameters", {{"type", "object"},
                                                                  {"properties", {{"city", {{"type", "string"}}}}},
                                                                  {"required", {"city"}}}}}}}})},
            {"max_tokens", 64}};
  }
  static Cluster* cluster_;
  static std::string* dir_;
  static std::string* start_error_;
};
Cluster* ToolModelClusterTest::cluster_ = nullptr;
std::string* ToolModelClusterTest::dir_ = nullptr;
std::string* ToolModelClusterTest::start_error_ = nullptr;

TEST_F(ToolModelClusterTest, ToolCallsParsedFromModelOutput) {
  auto r = HttpPost(cluster_->http(), "/v1/chat/completions", Request(false).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  const json& choice = j["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls") << r.body;
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u) << r.body;
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_FALSE(call["id"].get<std::string>().empty());
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}}));
  EXPECT_TRUE(choice["message"]["content"].is_null()) << r.body;
}

TEST_F(ToolModelClusterTest, ToolCallsStreamedOverSseAndGrpc) {
  auto r = HttpPost(cluster_->http(), "/v1/chat/completions", Request(true).dump());
  ASSERT_EQ(r.status, 200);
  std::string name, args, id, content, finish;
  for (const json& e : SseEvents(r.body)) {
    if (!e.is_object()) continue;
    const json& c = e["choices"][0];
    if (c["delta"].contains("content") && c["delta"]["content"].is_string()) content += c["delta"]["content"];
    if (c["delta"].contains("tool_calls")) {
      for (const json& t : c["delta"]["tool_calls"]) {
        EXPECT_EQ(t["index"], 0);
        if (t.contains("id")) id += t["id"].get<std::string>();
        if (t["function"].contains("name")) name += t["function"]["name"].get<std::string>();
        if (t["function"].contains("arguments")) args += t["function"]["arguments"].get<std::string>();
      }
    }
    if (c["finish_reason"].is_string()) finish = c["finish_reason"];
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_FALSE(id.empty());
  EXPECT_EQ(json::parse(args, nullptr, false), json({{"city", "Paris"}})) << args;
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(content.find("<tool_call>"), std::string::npos) << "markup leaked into content: " << content;

  // The same over gRPC.
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(cluster_->grpc(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::ChatCompletionRequest req;
  req.set_model(std::filesystem::path(*dir_).filename().string());
  auto* m = req.add_messages();
  m->set_role("user");
  m->set_text("What is the weather in Paris?");
  auto* t = req.add_tools();
  t->set_type("function");
  t->mutable_function()->set_name("get_weather");
  t->mutable_function()->set_parameters(R"({"type":"object","properties":{"city":{"type":"string"}}})");
  auto reader = stub->ChatCompletion(&ctx, req);
  v1::ChatCompletionChunk chunk;
  std::string gname, gargs;
  v1::FinishReason gfinish = v1::FINISH_REASON_UNSPECIFIED;
  while (reader->Read(&chunk)) {
    if (chunk.choices_size() == 0) continue;
    for (const auto& d : chunk.choices(0).delta().tool_calls()) {
      gname += d.function_name();
      gargs += d.function_arguments();
    }
    if (chunk.choices(0).finish_reason() != v1::FINISH_REASON_UNSPECIFIED) gfinish = chunk.choices(0).finish_reason();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(gname, "get_weather");
  EXPECT_EQ(json::parse(gargs, nullptr, false), json({{"city", "Paris"}})) << gargs;
  EXPECT_EQ(gfinish, v1::FINISH_REASON_TOOL_CALLS);
}

}  // namespace
}  // namespace krasis
