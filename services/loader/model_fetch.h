// The client side of the loader for the other services: a worker or gateway
// started with `--loader ADDR --model-id ID` (instead of `--model DIR`) asks the
// loader for the model's manifest and gets a local directory to open:
//   - on the loader's own host (same machine id, and every listed file readable
//     at its path with the listed size) the loader's model directory itself, so
//     the files are mapped directly and the page cache holds one copy;
//   - elsewhere, a copy under <fetch_dir>/<model id>/ streamed over ReadFile:
//     every chunk's CRC-32C and each file's whole-range CRC-32C are checked,
//     files are written as .part and renamed when complete, and files already
//     there with the right size and CRC are kept (a restart does not re-fetch).
// The loader may start after its clients: UNAVAILABLE is retried until `wait`.
#pragma once

#include <chrono>
#include <string>

#include <boost/program_options.hpp>

#include "absl/status/statusor.h"

namespace krasis {

struct ModelFetchOptions {
  std::string loader_address;  // host:port of krasis-loader
  std::string model_id;        // as the loader lists it
  std::string fetch_dir;       // where copies of remote models go
  std::chrono::seconds wait{60};  // how long to wait for the loader to answer
  std::string local_host_id;   // this host's machine id (empty: ReadMachineId())
};

// The local directory holding the model (see above). Errors: the loader's
// (NOT_FOUND for an unknown model id, ...), DATA_LOSS for a checksum mismatch,
// INTERNAL for local write failures, DEADLINE_EXCEEDED when the loader never answered.
absl::StatusOr<std::string> FetchModelFromLoader(const ModelFetchOptions& options);

// For a service's main(): `model_dir` when given, else (with `loader_address`)
// the loader's model `model_id` as FetchModelFromLoader finds it, else "".
absl::StatusOr<std::string> ResolveModelDir(const std::string& model_dir, const std::string& loader_address,
                                            const std::string& model_id, const std::string& fetch_dir);

// The --loader and --fetch-dir flags of a service main (added to `options`).
struct ModelSource {
  std::string loader, fetch_dir;
};
void AddModelSourceOptions(boost::program_options::options_description& options, ModelSource* source);

// For a service main: when *model_dir is empty and source.loader is set, fills it
// with ResolveModelDir's answer. Logs the reason and returns false on failure.
bool ResolveModelDirOrLog(const ModelSource& source, const std::string& model_id, std::string* model_dir);

// ~/.krasis/fetched (or /tmp/krasis-fetched without $HOME).
std::string DefaultFetchDir();

}  // namespace krasis
