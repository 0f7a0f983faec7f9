// krasis-loader: the model registry, validation, conversion cache and manifests.
// The API (proto/krasis/v1/loader.proto) is declared; the engine arrives with the
// cluster issue. Until then this binary serves health and reflection and answers
// every RPC with UNIMPLEMENTED, so the launcher and deployments can run it.
#include "krasis/v1/loader.grpc.pb.h"
#include "services/rpc/service_main.h"

int main(int argc, char** argv) {
  return krasis::RunDeclaredService<krasis::v1::Loader>(argc, argv, "loader", "model registry, validation, conversion cache and manifests", "krasis.v1.Loader");
}
