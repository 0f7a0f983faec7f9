// gRPC adapter of the decode worker: krasis.v1.Decode on top of DecodeEngine.
// Only conversion between proto messages and engine types lives here; statuses
// are converted once, via services/rpc/grpc_status.h.
#pragma once

#include <memory>
#include <string>

#include "krasis/v1/decode.grpc.pb.h"
#include "services/decode/decode_engine.h"

namespace krasis {

class DecodeService final : public v1::Decode::Service {
 public:
  // engine may be null: the worker then runs without a model, and every RPC
  // answers FAILED_PRECONDITION.
  DecodeService(std::string model_id, DecodeEngine* engine)
      : model_id_(std::move(model_id)), engine_(engine) {}

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status LookupPrefix(grpc::ServerContext* context, const v1::LookupPrefixRequest* request,
                            v1::LookupPrefixResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* context, const v1::CancelRequest* request,
                      v1::CancelResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const v1::StatsRequest* request,
                     v1::StatsResponse* response) override;
  grpc::Status ImportKv(grpc::ServerContext* context, grpc::ServerReader<v1::KvTransfer>* reader,
                        v1::ImportKvResponse* response) override;
  grpc::Status ExportKv(grpc::ServerContext* context, const v1::ExportKvRequest* request,
                        grpc::ServerWriter<v1::KvTransfer>* writer) override;

 private:
  absl::Status CheckModel(const std::string& model_id) const;

  std::string model_id_;
  DecodeEngine* engine_;
};

// proto SamplingParams -> engine options (unset optional fields keep defaults).
SamplingOptions ToSamplingOptions(const v1::SamplingParams& params);

// KV rows on the wire: TensorData [tokens, elements per token] in the sender's
// cache dtype (BF16, F16 or F32; KvHeader.kv_dtype says which), little-endian.
// A KvBlock carries one layer's rows of tokens [block_index * block_size,
// block_index * block_size + num_tokens) in `key`; `value` stays empty because a
// Krasis cache row already holds everything the layer keeps per token (k then v
// for GQA, latent then rope key for MLA). Linear-attention state travels as
// F32 recurrent [heads, key_dim, value_dim] and conv [conv_dim, kernel - 1].
// PutFloats narrows to `dtype` (F32, BF16 or F16; rounding to nearest even, so
// values read from a cache of that dtype travel exactly); GetFloats widens any
// of the three and rejects other dtypes and sizes that disagree with the shape.
void PutFloats(std::span<const float> values, std::vector<int64_t> shape, v1::TensorData* out,
               DType dtype = DType::kF32);
absl::StatusOr<std::vector<float>> GetFloats(const v1::TensorData& data, std::string_view what);
// The wire spelling of a KV cache dtype (F32, BF16, F16).
v1::DType KvWireDType(DType dtype);

}  // namespace krasis
