// krasis-gateway: the gateway: OpenAI REST and the public gRPC Inference API.
// The API (proto/krasis/v1/inference.proto) is declared; the engine arrives with the
// cluster issue. Until then this binary serves health and reflection and answers
// every RPC with UNIMPLEMENTED, so the launcher and deployments can run it.
#include "krasis/v1/inference.grpc.pb.h"
#include "services/rpc/service_main.h"

int main(int argc, char** argv) {
  return krasis::RunDeclaredService<krasis::v1::Inference>(argc, argv, "gateway", "gateway: OpenAI REST and the public gRPC Inference API", "krasis.v1.Inference");
}
