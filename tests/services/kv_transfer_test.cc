// Prefill and decode workers over real gRPC on loopback: Prefill.Prefill streams
// KV to Decode.ImportKv, Generate with kv_import_id continues from it and gives
// the same tokens as the decode worker prefilling itself; a follow-up turn's
// cached prefix travels decode -> prefill with ExportKv and only the new tokens
// are computed. Bad requests get proper gRPC statuses.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "grpcpp/grpcpp.h"
#include "services/decode/decode_service.h"
#include "services/prefill/prefill_service.h"
#include "services/rpc/server.h"

namespace krasis {
namespace {

std::string Fixture(const std::string& arch) {
  return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + arch;
}

class KvTransferTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.kv.block_size = 4;
    o.kv.budget_bytes = 32 << 20;
    engine_ = std::make_unique<DecodeEngine>(*LoadModel(Fixture(GetParam())), o, std::vector<int32_t>{});
    decode_ = std::make_unique<DecodeService>("m", engine_.get());
    prefill_engine_ = std::make_unique<PrefillEngine>(*LoadModel(Fixture(GetParam())));
    prefill_ = std::make_unique<PrefillService>("m", prefill_engine_.get(), 8);
    auto ds = StartServer({}, {ServedService{decode_.get(), "krasis.v1.Decode"}});
    ASSERT_TRUE(ds.ok()) << ds.status();
    decode_server_ = std::make_unique<RunningServer>(std::move(*ds));
    auto ps = StartServer({}, {ServedService{prefill_.get(), "krasis.v1.Prefill"}});
    ASSERT_TRUE(ps.ok()) << ps.status();
    prefill_server_ = std::make_unique<RunningServer>(std::move(*ps));
    decode_stub_ = v1::Decode::NewStub(grpc::CreateChannel(decode_server_->address(), grpc::InsecureChannelCredentials()));
    prefill_stub_ = v1::Prefill::NewStub(grpc::CreateChannel(prefill_server_->address(), grpc::InsecureChannelCredentials()));
    std::ifstream in(Fixture(GetParam()) + "/reference.json");
    prompt_ = nlohmann::json::parse(in)["long_prompt_ids"].get<std::vector<int32_t>>();
  }

  std::vector<int32_t> Generate(const std::string& id, const std::vector<int32_t>& prompt, int n,
                                const std::string& import_id, v1::Usage* usage = nullptr) {
    grpc::ClientContext ctx;
    v1::GenerateRequest req;
    req.set_request_id(id);
    req.set_model_id("m");
    for (int32_t t : prompt) req.add_prompt_token_ids(t);
    req.mutable_sampling()->set_temperature(0.0f);
    req.mutable_sampling()->set_max_tokens(n);
    req.mutable_sampling()->set_ignore_eos(true);
    req.set_kv_import_id(import_id);
    auto reader = decode_stub_->Generate(&ctx, req);
    v1::GenerateResponse resp;
    std::vector<int32_t> out;
    while (reader->Read(&resp)) {
      for (const auto& t : resp.tokens()) out.push_back(t.token_id());
      if (resp.has_usage() && usage != nullptr) *usage = resp.usage();
    }
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  std::unique_ptr<DecodeEngine> engine_;
  std::unique_ptr<DecodeService> decode_;
  std::unique_ptr<PrefillEngine> prefill_engine_;
  std::unique_ptr<PrefillService> prefill_;
  std::unique_ptr<RunningServer> decode_server_, prefill_server_;
  std::unique_ptr<v1::Decode::Stub> decode_stub_;
  std::unique_ptr<v1::Prefill::Stub> prefill_stub_;
  std::vector<int32_t> prompt_;
};

// KV on the wire travels in the cache's dtype: values already rounded to it
// arrive exactly, at half the bytes of F32; anything else is refused by name.
TEST(KvWireTest, SixteenBitRowsTravelExactlyAtHalfTheBytes) {
  std::vector<float> rows = {1.0f, -2.5f, 3.140625f, 0.0f, -0.001953125f, 65504.0f};
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(DTypeName(dtype));
    v1::TensorData data;
    PutFloats(rows, {2, 3}, &data, dtype);
    EXPECT_EQ(data.dtype(), KvWireDType(dtype));
    EXPECT_EQ(data.data().size(), rows.size() * DTypeSize(dtype));
    auto back = GetFloats(data, "rows");
    ASSERT_TRUE(back.ok()) << back.status();
    for (size_t i = 0; i < rows.size(); ++i) {
      const float want = dtype == DType::kBF16  ? BF16ToFloat(FloatToBF16(rows[i]))
                         : dtype == DType::kF16 ? F16ToFloat(FloatToF16(rows[i]))
                                                : rows[i];
      EXPECT_EQ((*back)[i], want) << i;
    }
  }
  v1::TensorData data;
  PutFloats(rows, {2, 3}, &data, DType::kBF16);
  data.set_dtype(v1::DTYPE_I8);
  auto wrong_type = GetFloats(data, "block 3");
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_NE(wrong_type.status().message().find("block 3: KV data must be F32, BF16 or F16"), std::string::npos);
  data.set_dtype(v1::DTYPE_BF16);
  data.mutable_data()->pop_back();
  EXPECT_EQ(GetFloats(data, "block 3").status().code(), absl::StatusCode::kInvalidArgument);
  data.mutable_data()->pop_back();
  EXPECT_EQ(GetFloats(data, "block 3").status().code(), absl::StatusCode::kInvalidArgument);  // shape says 6
}

TEST_P(KvTransferTest, PrefillThenGenerateEqualsLocal) {
  std::vector<int32_t> p(prompt_.begin(), prompt_.begin() + 37);
  std::vector<int32_t> local = Generate("local", p, 8, "");
  // A different prompt first so the local run's cache cannot help.
  std::vector<int32_t> q(prompt_.begin() + 5, prompt_.begin() + 45);
  grpc::ClientContext ctx;
  v1::PrefillRequest req;
  req.set_request_id("q1");
  req.set_model_id("m");
  for (int32_t t : q) req.add_token_ids(t);
  req.set_destination(decode_server_->address());
  req.set_kv_block_size(4);
  v1::PrefillResponse resp;
  grpc::Status s = prefill_stub_->Prefill(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.computed_tokens(), 40);
  EXPECT_GT(resp.kv_blocks_sent(), 0);
  v1::Usage usage;
  std::vector<int32_t> remote = Generate("g1", q, 8, "q1", &usage);
  EXPECT_EQ(remote[0], resp.first_token().argmax_token_id());
  // Same as the decode worker computing q itself (on a fresh worker).
  EngineOptions o;
  o.kv.block_size = 4;
  o.kv.budget_bytes = 32 << 20;
  DecodeEngine fresh(*LoadModel(Fixture(GetParam())), o, {});
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> want;
  bool done = false;
  GenerationRequest r;
  r.id = "fresh";
  r.prompt = q;
  r.sampling.temperature = 0;
  r.max_tokens = 8;
  r.ignore_eos = true;
  ASSERT_TRUE(fresh.Submit(r, [&](const GenerationEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (!e.final) want.push_back(e.token);
    done |= e.final;
    cv.notify_all();
  }).ok());
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  EXPECT_EQ(remote, want);
  EXPECT_FALSE(local.empty());
}

TEST_P(KvTransferTest, FollowUpFetchesCachedPrefixWithExportKv) {
  std::vector<int32_t> first(prompt_.begin(), prompt_.begin() + 25);
  std::vector<int32_t> answer = Generate("t1", first, 6, "");
  std::vector<int32_t> follow = first;
  follow.insert(follow.end(), answer.begin(), answer.end());
  follow.insert(follow.end(), prompt_.begin() + 25, prompt_.begin() + 55);
  grpc::ClientContext lctx;
  v1::LookupPrefixRequest lreq;
  for (int32_t t : follow) lreq.add_token_ids(t);
  v1::LookupPrefixResponse lresp;
  ASSERT_TRUE(decode_stub_->LookupPrefix(&lctx, lreq, &lresp).ok());
  ASSERT_GE(lresp.cached_tokens(), 24);
  grpc::ClientContext ctx;
  v1::PrefillRequest req;
  req.set_request_id("t2");
  req.set_model_id("m");
  for (int32_t t : follow) req.add_token_ids(t);
  req.mutable_cached()->set_num_tokens(lresp.cached_tokens());
  req.mutable_cached()->set_source_address(decode_server_->address());
  req.mutable_cached()->mutable_block_hashes()->CopyFrom(lresp.block_hashes());
  req.set_destination(decode_server_->address());
  req.set_kv_block_size(4);
  v1::PrefillResponse resp;
  grpc::Status s = prefill_stub_->Prefill(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.cached_tokens(), lresp.cached_tokens());
  EXPECT_EQ(resp.computed_tokens(), static_cast<int>(follow.size()) - lresp.cached_tokens());
  v1::Usage usage;
  std::vector<int32_t> got = Generate("g2", follow, 6, "t2", &usage);
  EXPECT_EQ(usage.cached_tokens(), lresp.cached_tokens());
  // Equal to the decode worker doing the follow-up alone (it has the prefix too).
  EXPECT_EQ(got, Generate("g3", follow, 6, ""));
}

TEST_P(KvTransferTest, BadRequestsGetStatuses) {
  grpc::ClientContext c1;
  v1::PrefillRequest req;
  req.set_request_id("bad");
  v1::PrefillResponse resp;
  EXPECT_EQ(prefill_stub_->Prefill(&c1, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext c2;
  req.add_token_ids(1);
  req.set_model_id("other");
  EXPECT_EQ(prefill_stub_->Prefill(&c2, req, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  grpc::ClientContext c3;
  req.set_model_id("m");
  req.add_token_ids(2);
  req.set_destination("127.0.0.1:1");  // nothing listens there
  EXPECT_EQ(prefill_stub_->Prefill(&c3, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::ClientContext c4;
  v1::GenerateRequest g;
  g.set_request_id("g");
  g.add_prompt_token_ids(1);
  g.set_kv_import_id("missing");
  auto reader = decode_stub_->Generate(&c4, g);
  v1::GenerateResponse gr;
  EXPECT_FALSE(reader->Read(&gr));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KvTransferTest, ::testing::Values("qwen3_moe", "qwen3_next", "deepseek_v2"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace krasis
