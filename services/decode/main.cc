// krasis-decode: the decode worker: CPU token generation over a paged KV cache.
// The API (proto/krasis/v1/decode.proto) is declared; the engine arrives with the
// cluster issue. Until then this binary serves health and reflection and answers
// every RPC with UNIMPLEMENTED, so the launcher and deployments can run it.
#include "krasis/v1/decode.grpc.pb.h"
#include "services/rpc/service_main.h"

int main(int argc, char** argv) {
  return krasis::RunDeclaredService<krasis::v1::Decode>(argc, argv, "decode", "decode worker: CPU token generation over a paged KV cache", "krasis.v1.Decode");
}
