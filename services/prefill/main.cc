// krasis-prefill: the prefill worker: runs new prompt tokens and ships KV to a decode worker.
// The API (proto/krasis/v1/prefill.proto) is declared; the engine arrives with the
// cluster issue. Until then this binary serves health and reflection and answers
// every RPC with UNIMPLEMENTED, so the launcher and deployments can run it.
#include "krasis/v1/prefill.grpc.pb.h"
#include "services/rpc/service_main.h"

int main(int argc, char** argv) {
  return krasis::RunDeclaredService<krasis::v1::Prefill>(argc, argv, "prefill", "prefill worker: runs new prompt tokens and ships KV to a decode worker", "krasis.v1.Prefill");
}
