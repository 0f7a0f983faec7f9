// The krasis-loader binary: --models-dir and repeated --model are served (ids,
// validity), SIGTERM stops it cleanly, bad flags exit 2. Runs the binary built
// next to the tests (scripts/build builds it; skipped when it is absent).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "krasis/v1/loader.grpc.pb.h"
#include "tests/loader/loader_test_util.h"

extern char** environ;

namespace krasis {
namespace {

using namespace krasis::testing_util;

std::string LoaderBinary() { return std::string(KRASIS_BINARY_DIR) + "/bin/krasis-loader"; }

TEST(LoaderMainTest, ServesModelsDirAndExplicitModels) {
  if (!fs::exists(LoaderBinary())) GTEST_SKIP() << LoaderBinary() << " is not built";
  TempDir tmp;
  CopyFixture("qwen3_next", tmp.path() / "models" / "org" / "tiny-next");
  CopyFixture("deepseek_v3", tmp.path() / "elsewhere" / "tiny-ds3");
  CopyFixture("glm4_moe", tmp.path() / "elsewhere" / "no-tokenizer", /*tokenizer=*/false);
  const fs::path ready = tmp.path() / "ready.json";
  std::vector<std::string> args = {LoaderBinary(),
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--ready-file",
                                   ready.string(),
                                   "--models-dir",
                                   (tmp.path() / "models").string(),
                                   "--model",
                                   (tmp.path() / "elsewhere" / "tiny-ds3").string(),
                                   "--model",
                                   (tmp.path() / "elsewhere" / "no-tokenizer").string(),
                                   "--log-level",
                                   "warn"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);

  nlohmann::json info;
  for (int i = 0; i < 300 && info.is_null(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (fs::exists(ready)) info = nlohmann::json::parse(ReadText(ready), nullptr, false);
    if (info.is_discarded()) info = nullptr;
  }
  if (info.is_null()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    FAIL() << "krasis-loader wrote no ready file";
  }
  {
    auto stub = v1::Loader::NewStub(grpc::CreateChannel(info["address"].get<std::string>(),
                                                        grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    v1::LoaderListModelsRequest req;
    req.set_include_invalid(true);
    v1::LoaderListModelsResponse resp;
    ASSERT_TRUE(stub->ListModels(&ctx, req, &resp).ok());
    std::vector<std::string> ids;
    for (const auto& m : resp.models()) {
      ids.push_back(m.id() + (m.status() == v1::MODEL_STATUS_AVAILABLE ? "" : " INVALID"));
    }
    EXPECT_THAT(ids, ::testing::ElementsAre("no-tokenizer INVALID", "org/tiny-next", "tiny-ds3"));
  }
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(fs::exists(ready));
}

TEST(LoaderMainTest, BadFlagsExitTwo) {
  if (!fs::exists(LoaderBinary())) GTEST_SKIP() << LoaderBinary() << " is not built";
  EXPECT_EQ(WEXITSTATUS(std::system((LoaderBinary() + " --chunk-mib 0 >/dev/null 2>&1").c_str())),
            2);
  EXPECT_EQ(WEXITSTATUS(std::system((LoaderBinary() + " --bogus >/dev/null 2>&1").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((LoaderBinary() + " --help >/dev/null 2>&1").c_str())), 0);
}

}  // namespace
}  // namespace krasis
