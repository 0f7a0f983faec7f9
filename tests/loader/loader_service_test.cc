// The real LoaderService over gRPC on 127.0.0.1:0 (StartServer): ListModels,
// GetManifest (offsets checked against SafetensorsFile and raw reads), ReadTensor
// and ReadFile streams reassembled with per-chunk and whole CRC-32C checks,
// Prepare streams, and the error codes of bad requests.
#include "services/loader/loader_service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/safetensors.h"
#include "services/loader/crc32c.h"
#include "services/rpc/server.h"
#include "tests/loader/loader_test_util.h"

namespace krasis {
namespace {

using ::testing::HasSubstr;
using namespace krasis::testing_util;

// A reassembled ReadFile/ReadTensor stream.
struct Received {
  grpc::Status status;
  v1::ReadHeader header;
  std::string data;
  int chunks = 0;
  bool trailer = false;
};

template <typename Reader>
Received Drain(Reader& reader) {
  Received r;
  v1::ReadResponse msg;
  uint32_t crc = 0;
  bool first = true;
  while (reader->Read(&msg)) {
    if (first) {
      EXPECT_TRUE(msg.has_header());
      r.header = msg.header();
      first = false;
      continue;
    }
    EXPECT_FALSE(r.trailer) << "message after the trailer";
    if (msg.has_chunk()) {
      EXPECT_EQ(msg.chunk().offset(), r.header.range_offset() + r.data.size());
      EXPECT_EQ(msg.chunk().crc32c(), Crc32c(msg.chunk().data()));
      crc = Crc32cExtend(crc, msg.chunk().data().data(), msg.chunk().data().size());
      r.data += msg.chunk().data();
      ++r.chunks;
    } else if (msg.has_trailer()) {
      EXPECT_EQ(msg.trailer().bytes_sent(), r.data.size());
      EXPECT_EQ(msg.trailer().range_crc32c(), crc);
      r.trailer = true;
    }
  }
  r.status = reader->Finish();
  if (r.status.ok()) {
    EXPECT_TRUE(r.trailer);
    EXPECT_EQ(r.data.size(), r.header.range_length());
  }
  return r;
}

class LoaderServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const std::string& arch : FixtureArchs()) CopyFixture(arch, tmp_.path() / "models" / arch);
    CopyFixture("qwen3_moe", tmp_.path() / "models" / "broken", /*tokenizer=*/false);
    RegistryOptions options;
    options.models_dir = (tmp_.path() / "models").string();
    options.cache_dir = (tmp_.path() / "cache").string();
    registry_ = std::make_unique<ModelRegistry>(options);
    service_ = std::make_unique<LoaderService>(registry_.get());
    auto server = StartServer(ServerOptions{}, {{service_.get(), "krasis.v1.Loader"}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<RunningServer>(std::move(*server));
    stub_ = v1::Loader::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    stub_.reset();
    if (server_) server_->Shutdown(absl::Now() + absl::Seconds(1));
  }

  Received ReadTensor(const std::string& model, const std::string& name, uint64_t offset = 0,
                      uint64_t length = 0, uint32_t chunk = 0, const std::string& key = "") {
    grpc::ClientContext ctx;
    v1::ReadTensorRequest req;
    req.set_model_id(model);
    req.set_name(name);
    req.set_offset(offset);
    req.set_length(length);
    req.set_chunk_size(chunk);
    req.set_cache_key(key);
    auto reader = stub_->ReadTensor(&ctx, req);
    return Drain(reader);
  }
  Received ReadFile(const std::string& model, const std::string& file, uint64_t offset = 0,
                    uint64_t length = 0, uint32_t chunk = 0,
                    v1::Location location = v1::LOCATION_MODEL_DIR) {
    grpc::ClientContext ctx;
    v1::ReadFileRequest req;
    req.set_model_id(model);
    req.set_file(file);
    req.set_offset(offset);
    req.set_length(length);
    req.set_chunk_size(chunk);
    req.set_location(location);
    auto reader = stub_->ReadFile(&ctx, req);
    return Drain(reader);
  }
  grpc::Status GetManifest(const std::string& model, v1::Manifest* manifest,
                           v1::Target target = v1::TARGET_SOURCE,
                           const v1::PrepareOptions& options = {}) {
    grpc::ClientContext ctx;
    v1::GetManifestRequest req;
    req.set_model_id(model);
    req.set_target(target);
    *req.mutable_options() = options;
    return stub_->GetManifest(&ctx, req, manifest);
  }
  std::vector<v1::PrepareProgress> Prepare(const std::string& model,
                                           const v1::PrepareOptions& options,
                                           grpc::Status* status) {
    grpc::ClientContext ctx;
    v1::PrepareRequest req;
    req.set_model_id(model);
    *req.mutable_options() = options;
    auto reader = stub_->Prepare(&ctx, req);
    std::vector<v1::PrepareProgress> out;
    v1::PrepareProgress p;
    while (reader->Read(&p)) out.push_back(p);
    *status = reader->Finish();
    return out;
  }

  TempDir tmp_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<LoaderService> service_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<v1::Loader::Stub> stub_;
};

TEST_F(LoaderServiceTest, ListModels) {
  grpc::ClientContext ctx;
  v1::LoaderListModelsRequest req;
  v1::LoaderListModelsResponse resp;
  ASSERT_TRUE(stub_->ListModels(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.models_dir(), (tmp_.path() / "models").string());
  EXPECT_EQ(resp.cache_dir(), (tmp_.path() / "cache").string());
  ASSERT_EQ(resp.models_size(), 5);  // the broken one only with include_invalid
  for (int i = 0; i < resp.models_size(); ++i) {
    const v1::ModelInfo& m = resp.models(i);
    EXPECT_EQ(m.id(), FixtureArchs()[static_cast<size_t>(i)]);
    EXPECT_EQ(m.status(), v1::MODEL_STATUS_AVAILABLE);
    EXPECT_EQ(m.format(), v1::CHECKPOINT_FORMAT_SAFETENSORS);
    ExpectedCounts want = IndependentCounts(tmp_.path() / "models" / m.id());
    EXPECT_EQ(m.total_params(), want.total) << m.id();
    EXPECT_EQ(m.active_params(), want.active) << m.id();
    EXPECT_EQ(m.num_layers(), 4);
    EXPECT_EQ(m.num_experts(), 8);
    EXPECT_GT(m.size_bytes(), 0u);
    EXPECT_GT(m.created_unix(), 0);
  }
  grpc::ClientContext ctx2;
  req.set_include_invalid(true);
  req.set_rescan(true);
  v1::LoaderListModelsResponse all;
  ASSERT_TRUE(stub_->ListModels(&ctx2, req, &all).ok());
  ASSERT_EQ(all.models_size(), 6);
  EXPECT_EQ(all.models(0).id(), "broken");
  EXPECT_EQ(all.models(0).status(), v1::MODEL_STATUS_INVALID);
  EXPECT_THAT(all.models(0).status_message(), HasSubstr("missing tokenizer"));
}

TEST_F(LoaderServiceTest, ManifestDescribesTheCheckpoint) {
  v1::Manifest m;
  ASSERT_TRUE(GetManifest("qwen3_next", &m).ok());
  const fs::path dir = tmp_.path() / "models" / "qwen3_next";
  EXPECT_EQ(m.model_dir(), dir.string());
  EXPECT_EQ(m.config_json(), ReadText(dir / "config.json"));
  EXPECT_EQ(m.generation_config_json(), ReadText(dir / "generation_config.json"));
  EXPECT_EQ(m.host_id(), ReadMachineId());
  EXPECT_TRUE(m.cache_key().empty());
  EXPECT_EQ(m.model().id(), "qwen3_next");
  // Architecture fields.
  const v1::ArchitectureConfig& a = m.arch();
  EXPECT_EQ(a.architecture(), "Qwen3NextForCausalLM");
  EXPECT_EQ(a.hidden_size(), 64);
  EXPECT_EQ(a.vocab_size(), 512);
  EXPECT_EQ(a.num_experts(), 8);
  EXPECT_EQ(a.num_experts_per_token(), 2);
  EXPECT_EQ(a.num_shared_experts(), 1);
  EXPECT_EQ(a.shared_expert_intermediate_size(), 32);
  EXPECT_DOUBLE_EQ(a.partial_rotary_factor(), 0.25);
  ASSERT_EQ(a.layers_size(), 4);
  EXPECT_EQ(a.layers(0).attention(), v1::ATTENTION_KIND_LINEAR);
  EXPECT_EQ(a.layers(1).attention(), v1::ATTENTION_KIND_FULL);
  EXPECT_TRUE(a.layers(0).moe());
  EXPECT_EQ(a.linear_num_value_heads(), 4);
  EXPECT_EQ(a.bos_token_id(), 1);
  EXPECT_THAT(a.eos_token_ids(), ::testing::Contains(2));
  // Files.
  ASSERT_EQ(m.weight_files_size(), 1);
  EXPECT_EQ(m.weight_files(0).file(), "model.safetensors");
  EXPECT_EQ(m.weight_files(0).kind(), v1::FILE_KIND_WEIGHTS);
  std::vector<std::string> tok;
  for (const auto& f : m.tokenizer_files()) tok.push_back(f.file());
  EXPECT_THAT(tok, ::testing::ElementsAre("config.json", "generation_config.json", "tokenizer.json",
                                          "tokenizer_config.json"));
  // Every tensor: offsets point at the bytes SafetensorsFile sees, sorted by name.
  auto file = SafetensorsFile::Open((dir / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  ASSERT_EQ(m.tensors_size(), static_cast<int>((*file)->tensors().size()));
  for (int i = 0; i < m.tensors_size(); ++i) {
    const v1::TensorEntry& t = m.tensors(i);
    if (i > 0) {
      EXPECT_LT(m.tensors(i - 1).name(), t.name());
    }
    const TensorInfo* info = (*file)->Find(t.name());
    ASSERT_NE(info, nullptr) << t.name();
    EXPECT_EQ(t.offset(), (*file)->data_offset() + info->begin);
    EXPECT_EQ(t.byte_length(), info->nbytes());
    EXPECT_EQ(t.path(), (dir / "model.safetensors").string());
    EXPECT_EQ(t.location(), v1::LOCATION_MODEL_DIR);
    EXPECT_EQ(t.format(), v1::QUANT_FORMAT_BF16);
    EXPECT_EQ(t.dtype(), v1::DTYPE_BF16);
    EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()), info->shape);
    auto bytes = (*file)->Bytes(*info);
    EXPECT_EQ(ReadRange(t.path(), t.offset(), t.byte_length()),
              std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
}

TEST_F(LoaderServiceTest, ManifestOfDeepseekHasMlaFields) {
  v1::Manifest m;
  ASSERT_TRUE(GetManifest("deepseek_v3", &m).ok());
  EXPECT_EQ(m.arch().layers(0).attention(), v1::ATTENTION_KIND_MLA);
  EXPECT_FALSE(m.arch().layers(0).moe());
  EXPECT_TRUE(m.arch().layers(1).moe());
  EXPECT_GT(m.arch().kv_lora_rank(), 0);
  EXPECT_EQ(m.arch().head_dim(), m.arch().qk_nope_head_dim() + m.arch().qk_rope_head_dim());
  EXPECT_EQ(m.arch().scoring_func(), "sigmoid");
}

TEST_F(LoaderServiceTest, VariantsInManifests) {
  v1::Manifest m;
  // The standard variant (INT4 decode experts) needs a conversion: not prepared.
  grpc::Status s = GetManifest("glm4_moe", &m, v1::TARGET_DECODE);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("int4g128-bf16"));
  // The pass-through variant lists the checkpoint.
  v1::PrepareOptions pass;
  pass.set_decode_expert_format(v1::QUANT_FORMAT_BF16);
  ASSERT_TRUE(GetManifest("glm4_moe", &m, v1::TARGET_DECODE, pass).ok());
  EXPECT_EQ(m.cache_key(), "bf16-bf16");
  EXPECT_GT(m.tensors_size(), 0);
  pass.set_decode_expert_format(v1::QUANT_FORMAT_GGUF_Q4_K);
  EXPECT_EQ(GetManifest("glm4_moe", &m, v1::TARGET_DECODE, pass).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(LoaderServiceTest, ReadTensorStreamsExactBytes) {
  v1::Manifest m;
  ASSERT_TRUE(GetManifest("deepseek_v2", &m).ok());
  for (const v1::TensorEntry& t : m.tensors()) {
    if (t.name() != "model.embed_tokens.weight" && t.name() != "model.norm.weight") continue;
    const std::string want = ReadRange(t.path(), t.offset(), t.byte_length());
    Received r = ReadTensor("deepseek_v2", t.name(), 0, 0, 4096);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.data, want);
    EXPECT_EQ(r.header.object_size(), t.byte_length());
    EXPECT_EQ(r.header.tensor().name(), t.name());
    EXPECT_EQ(r.header.tensor().offset(), t.offset());
    EXPECT_EQ(r.chunks, static_cast<int>((t.byte_length() + 4095) / 4096));
    // A sub-range.
    Received part = ReadTensor("deepseek_v2", t.name(), 10, 20);
    ASSERT_TRUE(part.status.ok());
    EXPECT_EQ(part.data, want.substr(10, 20));
    EXPECT_EQ(part.header.range_offset(), 10u);
  }
  // Pass-through cache key works too; other keys are not prepared.
  EXPECT_TRUE(ReadTensor("deepseek_v2", "model.norm.weight", 0, 0, 0, "bf16-bf16").status.ok());
  EXPECT_EQ(
      ReadTensor("deepseek_v2", "model.norm.weight", 0, 0, 0, "int4g128-bf16").status.error_code(),
      grpc::StatusCode::NOT_FOUND);
}

TEST_F(LoaderServiceTest, ReadFileStreamsExactBytes) {
  const fs::path path = tmp_.path() / "models" / "glm4_moe" / "model.safetensors";
  const std::string want = ReadText(path);
  Received r = ReadFile("glm4_moe", "model.safetensors", 0, 0, 64 << 10);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.data, want);
  EXPECT_EQ(r.chunks, static_cast<int>((want.size() + (64 << 10) - 1) / (64 << 10)));
  EXPECT_EQ(r.header.object_size(), want.size());
  Received tail = ReadFile("glm4_moe", "model.safetensors", want.size() - 1000);
  ASSERT_TRUE(tail.status.ok());
  EXPECT_EQ(tail.data, want.substr(want.size() - 1000));
  Received config = ReadFile("glm4_moe", "config.json");
  ASSERT_TRUE(config.status.ok());
  EXPECT_EQ(config.data, ReadText(path.parent_path() / "config.json"));
}

TEST_F(LoaderServiceTest, ErrorCodes) {
  EXPECT_EQ(ReadFile("nope", "config.json").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ReadTensor("nope", "lm_head.weight").status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::Manifest m;
  EXPECT_EQ(GetManifest("nope", &m).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::Status invalid = GetManifest("broken", &m);
  EXPECT_EQ(invalid.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(invalid.error_message(), HasSubstr("tokenizer.json"));
  // Traversal and absolute paths are rejected before anything is opened.
  for (const char* bad : {"../../etc/passwd", "/etc/passwd", "../qwen3_moe/config.json",
                          "sub/../../x", "./config.json", ""}) {
    EXPECT_EQ(ReadFile("glm4_moe", bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad;
  }
  // Files that exist but are not in the manifest.
  WriteText(tmp_.path() / "models" / "glm4_moe" / "README.md", "hi");
  EXPECT_EQ(ReadFile("glm4_moe", "README.md").status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(
      ReadFile("glm4_moe", "config.json", 0, 0, 0, v1::LOCATION_CACHE_DIR).status.error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);  // no cache_key
  // Out of range.
  const uint64_t size = fs::file_size(tmp_.path() / "models" / "glm4_moe" / "config.json");
  EXPECT_EQ(ReadFile("glm4_moe", "config.json", size + 1).status.error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(ReadFile("glm4_moe", "config.json", 10, size).status.error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(ReadTensor("glm4_moe", "model.norm.weight", 0, 1000).status.error_code(),
            grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(ReadTensor("glm4_moe", "no.such.tensor").status.error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(LoaderServiceTest, PrepareStreams) {
  grpc::Status status;
  // Default options ask for INT4 decode experts: built into the conversion cache.
  auto built = Prepare("qwen3_moe", {}, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(built.empty());
  EXPECT_EQ(built.back().phase(), v1::PREPARE_PHASE_DONE);
  EXPECT_EQ(built.back().result().cache_key(), "int4g128-bf16");
  EXPECT_FALSE(built.back().result().cache_dir().empty());
  bool converting = false;
  for (const auto& p : built) converting |= p.phase() == v1::PREPARE_PHASE_CONVERTING;
  EXPECT_TRUE(converting);
  // A conversion not built yet (dense weights to F32) fails with UNIMPLEMENTED.
  v1::PrepareOptions dense;
  dense.set_dense_format(v1::QUANT_FORMAT_F32);
  auto failed = Prepare("qwen3_moe", dense, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  ASSERT_FALSE(failed.empty());
  EXPECT_EQ(failed.back().phase(), v1::PREPARE_PHASE_FAILED);
  EXPECT_EQ(failed.back().error().code(), static_cast<int>(grpc::StatusCode::UNIMPLEMENTED));
  EXPECT_EQ(failed.back().error().message(), status.error_message());

  // Pass-through with verify: validation, verification, done; CRCs in the manifest.
  v1::PrepareOptions pass;
  pass.set_decode_expert_format(v1::QUANT_FORMAT_BF16);
  pass.set_verify(true);
  auto done = Prepare("qwen3_moe", pass, &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(done.empty());
  EXPECT_EQ(done.back().phase(), v1::PREPARE_PHASE_DONE);
  EXPECT_EQ(done.back().result().cache_key(), "bf16-bf16");
  EXPECT_TRUE(done.back().result().already_prepared());
  std::vector<int> phases;
  for (const auto& p : done) {
    if (phases.empty() || phases.back() != p.phase()) phases.push_back(p.phase());
  }
  EXPECT_THAT(phases, ::testing::ElementsAre(v1::PREPARE_PHASE_QUEUED, v1::PREPARE_PHASE_VALIDATING,
                                             v1::PREPARE_PHASE_VERIFYING,
                                             v1::PREPARE_PHASE_FINALIZING, v1::PREPARE_PHASE_DONE));
  v1::Manifest m;
  ASSERT_TRUE(GetManifest("qwen3_moe", &m).ok());
  ASSERT_TRUE(m.weight_files(0).has_crc32c());
  for (const v1::TensorEntry& t : m.tensors()) {
    if (t.name() != "lm_head.weight") continue;
    ASSERT_TRUE(t.has_crc32c());
    EXPECT_EQ(t.crc32c(), Crc32c(ReadRange(t.path(), t.offset(), t.byte_length())));
  }
  Received whole = ReadFile("qwen3_moe", "model.safetensors");
  ASSERT_TRUE(whole.status.ok());
  EXPECT_EQ(Crc32c(whole.data), m.weight_files(0).crc32c());

  EXPECT_TRUE(Prepare("nope", pass, &status).back().has_error());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace krasis
