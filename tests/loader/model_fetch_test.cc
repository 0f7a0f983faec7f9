// FetchModelFromLoader against the real LoaderService over gRPC: on the loader's
// host it returns the loader's own model directory; from "another host" it
// streams a byte-identical copy, keeps complete files on the next call, and
// re-fetches a truncated one; unknown models and unreachable loaders give clear
// errors.
#include "services/loader/model_fetch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/model_config.h"
#include "services/loader/loader_service.h"
#include "services/rpc/server.h"
#include "tests/loader/loader_test_util.h"

namespace krasis {
namespace {

using ::testing::HasSubstr;
using namespace krasis::testing_util;

class ModelFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CopyFixture("qwen3_moe", tmp_.path() / "models" / "tiny");
    RegistryOptions options;
    options.models_dir = (tmp_.path() / "models").string();
    options.cache_dir = (tmp_.path() / "cache").string();
    registry_ = std::make_unique<ModelRegistry>(options);
    LoaderServiceOptions service_options;
    service_options.host_id = "loader-host";
    service_options.min_chunk_bytes = 1024;
    service_options.default_chunk_bytes = 64 << 10;  // several chunks per file
    service_ = std::make_unique<LoaderService>(registry_.get(), service_options);
    auto server = StartServer(ServerOptions{}, {{service_.get(), "krasis.v1.Loader"}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<RunningServer>(std::move(*server));
  }

  ModelFetchOptions Options(const std::string& host) {
    ModelFetchOptions o;
    o.loader_address = server_->address();
    o.model_id = "tiny";
    o.fetch_dir = (tmp_.path() / "fetched").string();
    o.local_host_id = host;
    o.wait = std::chrono::seconds(5);
    return o;
  }

  TempDir tmp_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<LoaderService> service_;
  std::unique_ptr<RunningServer> server_;
};

TEST_F(ModelFetchTest, SameHostUsesTheLoadersDirectory) {
  auto dir = FetchModelFromLoader(Options("loader-host"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_TRUE(fs::equivalent(*dir, tmp_.path() / "models" / "tiny")) << *dir;
  EXPECT_FALSE(fs::exists(tmp_.path() / "fetched"));
}

TEST_F(ModelFetchTest, OtherHostStreamsAByteIdenticalCopy) {
  auto dir = FetchModelFromLoader(Options("worker-host"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(fs::path(*dir), tmp_.path() / "fetched" / "tiny");
  const fs::path source = tmp_.path() / "models" / "tiny";
  for (const char* name : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json"}) {
    ASSERT_TRUE(fs::exists(fs::path(*dir) / name)) << name;
    EXPECT_EQ(ReadText(fs::path(*dir) / name), ReadText(source / name)) << name;
  }
  for (const auto& e : fs::directory_iterator(*dir)) {
    EXPECT_NE(e.path().extension(), ".part") << "leftover " << e.path();
  }
  auto config = LoadModelConfig(*dir);
  ASSERT_TRUE(config.ok()) << config.status();

  // A second call keeps complete files; a truncated one is fetched again.
  const fs::path weights = fs::path(*dir) / "model.safetensors";
  const fs::path tokenizer = fs::path(*dir) / "tokenizer.json";
  const std::string original = ReadText(weights);
  fs::resize_file(weights, original.size() / 2);
  auto before = fs::last_write_time(tokenizer);
  auto again = FetchModelFromLoader(Options("worker-host"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(ReadText(weights), original);
  EXPECT_EQ(fs::last_write_time(tokenizer), before);
}

TEST_F(ModelFetchTest, ErrorsNameTheProblem) {
  auto o = Options("worker-host");
  o.model_id = "missing";
  auto r = FetchModelFromLoader(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("missing"));

  o = Options("worker-host");
  o.model_id = "";
  EXPECT_EQ(FetchModelFromLoader(o).status().code(), absl::StatusCode::kInvalidArgument);

  o = Options("worker-host");
  o.loader_address = "127.0.0.1:1";  // nothing listens there
  o.wait = std::chrono::seconds(1);
  r = FetchModelFromLoader(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("127.0.0.1:1"));

  // A model dir given directly wins; neither gives "".
  auto dir = ResolveModelDir("/some/dir", "127.0.0.1:1", "x", "");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(*dir, "/some/dir");
  dir = ResolveModelDir("", "", "x", "");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(*dir, "");
}

}  // namespace
}  // namespace krasis
