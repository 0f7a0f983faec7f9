// Tests of services/rpc: the absl <-> gRPC status conversion for every code, and
// the common server setup end to end over loopback. Two small fake services
// (Decode::LookupPrefix and Inference::Tokenize, answering from the request) run
// on 127.0.0.1 port 0; real stubs call them, and generic stubs with the
// wire-compatible messages of grpc_wire.proto talk to the server's
// grpc.health.v1 and server reflection services.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "krasis/v1/decode.grpc.pb.h"
#include "krasis/v1/inference.grpc.pb.h"
#include "services/rpc/grpc_status.h"
#include "services/rpc/health_client.h"
#include "services/rpc/server.h"
#include "tests/services/grpc_wire.pb.h"

namespace krasis {
namespace {

constexpr int kBlockSize = 16;
constexpr char kModel[] = "tiny";
constexpr char kReflectionMethod[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// The fake's name for a block: the sum of its token ids, 8 bytes little-endian.
std::string FakeBlockHash(const int32_t* tokens) {
  int64_t sum = 0;
  for (int i = 0; i < kBlockSize; ++i) sum += tokens[i];
  std::string hash(8, '\0');
  for (int i = 0; i < 8; ++i) hash[i] = static_cast<char>((sum >> (8 * i)) & 0xff);
  return hash;
}

// Decode whose LookupPrefix claims every full block is cached. The logic is an
// absl::Status function, as engine code is; the adapter converts once.
class FakeDecode final : public v1::Decode::Service {
 public:
  grpc::Status LookupPrefix(grpc::ServerContext*, const v1::LookupPrefixRequest* request,
                            v1::LookupPrefixResponse* response) override {
    return ToGrpcStatus(Lookup(*request, *response));
  }

 private:
  static absl::Status Lookup(const v1::LookupPrefixRequest& request,
                             v1::LookupPrefixResponse& response) {
    if (request.model_id().empty()) return absl::InvalidArgumentError("model_id is empty");
    if (request.model_id() != kModel) {
      return absl::NotFoundError(absl::StrCat("unknown model ", request.model_id()));
    }
    const int blocks = request.token_ids_size() / kBlockSize;
    for (int b = 0; b < blocks; ++b) {
      response.add_block_hashes(FakeBlockHash(request.token_ids().data() + b * kBlockSize));
    }
    response.set_cached_tokens(blocks * kBlockSize);
    response.set_block_size(kBlockSize);
    return absl::OkStatus();
  }
};

// Inference whose Tokenize maps each byte of the prompt to one token.
class FakeInference final : public v1::Inference::Service {
 public:
  grpc::Status Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override {
    if (!request->has_prompt()) {
      return ToGrpcStatus(absl::UnimplementedError("only raw prompts"));
    }
    for (unsigned char c : request->prompt()) {
      response->add_tokens(c);
      if (request->return_token_strs()) response->add_token_strs(std::string(1, c));
    }
    response->set_count(response->tokens_size());
    response->set_max_model_len(4096);
    return grpc::Status::OK;
  }
};

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kDefaultMaxMessageBytes);
  args.SetMaxSendMessageSize(kDefaultMaxMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

void SetDeadline(grpc::ClientContext& context) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
}

// Waits for the next event of `cq`, which must carry `tag`; returns its ok flag.
bool Await(grpc::CompletionQueue& cq, intptr_t tag) {
  void* got = nullptr;
  bool ok = false;
  if (!cq.Next(&got, &ok)) return false;
  EXPECT_EQ(got, reinterpret_cast<void*>(tag));
  return ok;
}

void Drain(grpc::CompletionQueue& cq) {
  cq.Shutdown();
  void* got = nullptr;
  bool ok = false;
  while (cq.Next(&got, &ok)) {
  }
}

// Sends `requests` on one ServerReflectionInfo stream, one answer per request.
absl::StatusOr<std::vector<test::ServerReflectionResponse>> AskReflection(
    const std::shared_ptr<grpc::Channel>& channel,
    const std::vector<test::ServerReflectionRequest>& requests) {
  grpc::TemplatedGenericStub<test::ServerReflectionRequest, test::ServerReflectionResponse>
      stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  SetDeadline(context);
  std::vector<test::ServerReflectionResponse> responses;
  auto call = stub.PrepareCall(&context, kReflectionMethod, &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = Await(cq, 1);
  for (size_t i = 0; ok && i < requests.size(); ++i) {
    call->Write(requests[i], reinterpret_cast<void*>(2));
    if (!(ok = Await(cq, 2))) break;
    test::ServerReflectionResponse response;
    call->Read(&response, reinterpret_cast<void*>(3));
    if ((ok = Await(cq, 3))) responses.push_back(std::move(response));
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  Await(cq, 4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  Await(cq, 5);
  Drain(cq);
  if (!status.ok()) return FromGrpcStatus(status);
  if (responses.size() != requests.size()) {
    return absl::InternalError(absl::StrCat("got ", responses.size(), " reflection answers for ",
                                            requests.size(), " requests"));
  }
  return responses;
}

// --- Status conversion -------------------------------------------------------

struct CodePair {
  absl::StatusCode absl_code;
  grpc::StatusCode grpc_code;
};

// Every canonical code, spelled by name on both sides.
const CodePair kAllCodes[] = {
    {absl::StatusCode::kOk, grpc::StatusCode::OK},
    {absl::StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
    {absl::StatusCode::kUnknown, grpc::StatusCode::UNKNOWN},
    {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
    {absl::StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
    {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
    {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
    {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
    {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
    {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
    {absl::StatusCode::kAborted, grpc::StatusCode::ABORTED},
    {absl::StatusCode::kOutOfRange, grpc::StatusCode::OUT_OF_RANGE},
    {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
    {absl::StatusCode::kInternal, grpc::StatusCode::INTERNAL},
    {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
    {absl::StatusCode::kDataLoss, grpc::StatusCode::DATA_LOSS},
    {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
};

TEST(GrpcStatusTest, EveryCodeMapsToItsNamesake) {
  for (const CodePair& pair : kAllCodes) {
    SCOPED_TRACE(absl::StatusCodeToString(pair.absl_code));
    EXPECT_EQ(ToGrpcCode(pair.absl_code), pair.grpc_code);
    EXPECT_EQ(FromGrpcCode(pair.grpc_code), pair.absl_code);
  }
}

TEST(GrpcStatusTest, EveryErrorRoundTripsWithItsMessage) {
  for (const CodePair& pair : kAllCodes) {
    if (pair.absl_code == absl::StatusCode::kOk) continue;
    SCOPED_TRACE(absl::StatusCodeToString(pair.absl_code));
    const std::string message = absl::StrCat("shard 3 of ", static_cast<int>(pair.absl_code),
                                             ": \xe2\x9c\x97 failed");
    const absl::Status original(pair.absl_code, message);
    const grpc::Status converted = ToGrpcStatus(original);
    EXPECT_EQ(converted.error_code(), pair.grpc_code);
    EXPECT_EQ(converted.error_message(), message);
    EXPECT_EQ(FromGrpcStatus(converted), original);
  }
}

TEST(GrpcStatusTest, OkAndOutOfRangeCodes) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());

  const absl::Status odd(static_cast<absl::StatusCode>(42), "odd");
  EXPECT_EQ(ToGrpcStatus(odd).error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(ToGrpcStatus(odd).error_message(), "odd");

  const absl::Status back = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(42), "x"));
  EXPECT_EQ(back.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(back.message(), "x");

  // An error without a message stays an error.
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::ABORTED, "")).code(),
            absl::StatusCode::kAborted);
}

// --- Server ------------------------------------------------------------------

class GrpcServerTest : public testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<RunningServer> server =
        StartServer(ServerOptions{}, {{&decode_, v1::Decode::service_full_name()},
                                      {&inference_, v1::Inference::service_full_name()}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::make_unique<RunningServer>(*std::move(server));
    channel_ = Connect(server_->address());
  }

  FakeDecode decode_;
  FakeInference inference_;
  std::unique_ptr<RunningServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(GrpcServerTest, BindsPortZeroAndReportsTheBoundPort) {
  EXPECT_GT(server_->port(), 0);
  EXPECT_EQ(server_->address(), absl::StrCat("127.0.0.1:", server_->port()));
}

TEST_F(GrpcServerTest, LookupPrefixRoundTrip) {
  auto stub = v1::Decode::NewStub(channel_);
  v1::LookupPrefixRequest request;
  request.set_model_id(kModel);
  for (int i = 0; i < 3 * kBlockSize + 5; ++i) request.add_token_ids(1000 + 7 * i);
  v1::LookupPrefixResponse response;
  grpc::ClientContext context;
  SetDeadline(context);
  grpc::Status status = stub->LookupPrefix(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();

  EXPECT_EQ(response.cached_tokens(), 3 * kBlockSize);
  EXPECT_EQ(response.block_size(), kBlockSize);
  ASSERT_EQ(response.block_hashes_size(), 3);
  for (int b = 0; b < 3; ++b) {
    int64_t sum = 0;
    for (int i = b * kBlockSize; i < (b + 1) * kBlockSize; ++i) sum += 1000 + 7 * i;
    int64_t got = 0;
    ASSERT_EQ(response.block_hashes(b).size(), sizeof(got));
    std::memcpy(&got, response.block_hashes(b).data(), sizeof(got));  // little-endian host
    EXPECT_EQ(got, sum) << "block " << b;
  }
}

TEST_F(GrpcServerTest, EngineErrorsCrossTheWireWithCodeAndMessage) {
  auto stub = v1::Decode::NewStub(channel_);
  v1::LookupPrefixResponse response;
  {
    grpc::ClientContext context;
    SetDeadline(context);
    absl::Status status =
        FromGrpcStatus(stub->LookupPrefix(&context, v1::LookupPrefixRequest(), &response));
    EXPECT_EQ(status, absl::InvalidArgumentError("model_id is empty"));
  }
  {
    grpc::ClientContext context;
    SetDeadline(context);
    v1::LookupPrefixRequest request;
    request.set_model_id("huge");
    absl::Status status = FromGrpcStatus(stub->LookupPrefix(&context, request, &response));
    EXPECT_EQ(status, absl::NotFoundError("unknown model huge"));
  }
}

TEST_F(GrpcServerTest, TokenizeRoundTrip) {
  auto stub = v1::Inference::NewStub(channel_);
  v1::TokenizeRequest request;
  request.set_model(kModel);
  request.set_prompt("Hi!");
  request.set_return_token_strs(true);
  v1::TokenizeResponse response;
  grpc::ClientContext context;
  SetDeadline(context);
  grpc::Status status = stub->Tokenize(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(std::vector<int32_t>(response.tokens().begin(), response.tokens().end()),
            (std::vector<int32_t>{'H', 'i', '!'}));
  EXPECT_EQ(response.count(), 3);
  ASSERT_EQ(response.token_strs_size(), 3);
  EXPECT_EQ(response.token_strs(2), "!");

  grpc::ClientContext chat_context;
  SetDeadline(chat_context);
  v1::TokenizeRequest chat;
  chat.mutable_chat();
  EXPECT_EQ(stub->Tokenize(&chat_context, chat, &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(GrpcServerTest, AcceptsMessagesFarAboveGrpcsFourMiBDefault) {
  // 2M ids of 3-byte varints: about 6 MB, beyond gRPC's default 4 MiB limit.
  constexpr int kTokens = 2 << 20;
  auto stub = v1::Decode::NewStub(channel_);
  v1::LookupPrefixRequest request;
  request.set_model_id(kModel);
  request.mutable_token_ids()->Resize(kTokens, 100000);
  ASSERT_GT(request.ByteSizeLong(), size_t{4} << 20);
  v1::LookupPrefixResponse response;
  grpc::ClientContext context;
  SetDeadline(context);
  grpc::Status status = stub->LookupPrefix(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.cached_tokens(), kTokens);
  EXPECT_EQ(response.block_hashes_size(), kTokens / kBlockSize);
}

TEST_F(GrpcServerTest, ReflectionListsAndDescribesTheServices) {
  test::ServerReflectionRequest list;
  list.set_list_services("*");
  test::ServerReflectionRequest describe;
  describe.set_file_containing_symbol("krasis.v1.Decode");
  absl::StatusOr<std::vector<test::ServerReflectionResponse>> answers =
      AskReflection(channel_, {list, describe});
  ASSERT_TRUE(answers.ok()) << answers.status();

  const test::ServerReflectionResponse& listed = (*answers)[0];
  ASSERT_TRUE(listed.has_list_services_response()) << listed.DebugString();
  std::vector<std::string> names;
  for (const auto& service : listed.list_services_response().service()) {
    names.push_back(service.name());
  }
  for (const char* want : {"krasis.v1.Decode", "krasis.v1.Inference", "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }

  const test::ServerReflectionResponse& described = (*answers)[1];
  ASSERT_TRUE(described.has_file_descriptor_response()) << described.DebugString();
  bool found_decode = false;
  for (const std::string& bytes : described.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    if (file.name() != "krasis/v1/decode.proto") continue;
    found_decode = true;
    EXPECT_EQ(file.package(), "krasis.v1");
    ASSERT_EQ(file.service_size(), 1);
    const google::protobuf::ServiceDescriptorProto& service = file.service(0);
    EXPECT_EQ(service.name(), "Decode");
    bool generate_streams = false;
    bool import_streams = false;
    bool has_lookup = false;
    for (const auto& method : service.method()) {
      if (method.name() == "Generate") generate_streams = method.server_streaming();
      if (method.name() == "ImportKv") import_streams = method.client_streaming();
      if (method.name() == "LookupPrefix") has_lookup = true;
    }
    EXPECT_TRUE(generate_streams);
    EXPECT_TRUE(import_streams);
    EXPECT_TRUE(has_lookup);
  }
  EXPECT_TRUE(found_decode);
}

TEST_F(GrpcServerTest, HealthIsServedPerService) {
  EXPECT_EQ(CheckHealth(channel_, "").value_or(HealthStatus::kUnknown), HealthStatus::kServing);
  EXPECT_EQ(CheckHealth(channel_, "krasis.v1.Decode").value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);
  EXPECT_EQ(CheckHealth(channel_, "krasis.v1.Inference").value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);
  EXPECT_EQ(CheckHealth(channel_, "krasis.v1.Prefill").status().code(),
            absl::StatusCode::kNotFound);

  server_->SetServing("krasis.v1.Decode", false);
  EXPECT_EQ(CheckHealth(channel_, "krasis.v1.Decode").value_or(HealthStatus::kUnknown),
            HealthStatus::kNotServing);
  EXPECT_EQ(CheckHealth(channel_, "krasis.v1.Inference").value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);
  server_->SetServing("krasis.v1.Decode", true);
  EXPECT_EQ(CheckHealth(channel_, "krasis.v1.Decode").value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);
}

TEST_F(GrpcServerTest, ShutdownStopsServingAndIsIdempotent) {
  server_->Shutdown(absl::Now() + absl::Seconds(2));
  server_->Shutdown(absl::Now());
  server_->Wait();

  auto stub = v1::Inference::NewStub(channel_);
  v1::TokenizeRequest request;
  request.set_prompt("x");
  v1::TokenizeResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  EXPECT_FALSE(stub->Tokenize(&context, request, &response).ok());
}

// --- StartServer options -----------------------------------------------------

TEST(StartServerTest, InitialHealthCanBeNotServing) {
  FakeDecode decode;
  absl::StatusOr<RunningServer> server =
      StartServer(ServerOptions{}, {{&decode, v1::Decode::service_full_name(), false}});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = Connect(server->address());
  EXPECT_EQ(CheckHealth(channel, "krasis.v1.Decode").value_or(HealthStatus::kUnknown),
            HealthStatus::kNotServing);
  server->SetServing("krasis.v1.Decode", true);
  EXPECT_EQ(CheckHealth(channel, "krasis.v1.Decode").value_or(HealthStatus::kUnknown),
            HealthStatus::kServing);
}

TEST(StartServerTest, MessageLimitIsApplied) {
  FakeDecode decode;
  ServerOptions options;
  options.max_message_bytes = 64 << 10;
  absl::StatusOr<RunningServer> server =
      StartServer(options, {{&decode, v1::Decode::service_full_name()}});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::Decode::NewStub(Connect(server->address()));
  v1::LookupPrefixRequest request;
  request.set_model_id(kModel);
  request.mutable_token_ids()->Resize(100000, 100000);  // about 300 KB
  v1::LookupPrefixResponse response;
  grpc::ClientContext context;
  SetDeadline(context);
  EXPECT_EQ(stub->LookupPrefix(&context, request, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(StartServerTest, RejectsBadArguments) {
  FakeDecode decode;
  const std::string name = v1::Decode::service_full_name();
  EXPECT_EQ(StartServer({}, {{nullptr, name}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StartServer({}, {{&decode, ""}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StartServer({}, {{&decode, name}, {&decode, name}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ServerOptions no_port;
  no_port.address = "127.0.0.1";
  EXPECT_EQ(StartServer(no_port, {}).status().code(), absl::StatusCode::kInvalidArgument);
  ServerOptions no_limit;
  no_limit.max_message_bytes = 0;
  EXPECT_EQ(StartServer(no_limit, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StartServerTest, PortInUseIsAnError) {
  FakeDecode decode;
  absl::StatusOr<RunningServer> first =
      StartServer({}, {{&decode, v1::Decode::service_full_name()}});
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions same_port;
  same_port.address = first->address();
  FakeDecode other;
  absl::StatusOr<RunningServer> second =
      StartServer(same_port, {{&other, v1::Decode::service_full_name()}});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST(StartServerTest, ServesOnAUnixSocket) {
  FakeInference inference;
  ServerOptions options;
  options.address = absl::StrCat("unix:", testing::TempDir(), "krasis_rpc_", getpid(), ".sock");
  absl::StatusOr<RunningServer> server =
      StartServer(options, {{&inference, v1::Inference::service_full_name()}});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(server->address(), options.address);
  EXPECT_EQ(server->port(), 0);
  auto stub = v1::Inference::NewStub(Connect(server->address()));
  v1::TokenizeRequest request;
  request.set_prompt("ok");
  v1::TokenizeResponse response;
  grpc::ClientContext context;
  SetDeadline(context);
  ASSERT_TRUE(stub->Tokenize(&context, request, &response).ok());
  EXPECT_EQ(response.count(), 2);
}

}  // namespace
}  // namespace krasis
