// krasis-loader: the model registry, validation, manifests and weight streaming
// (krasis.v1.Loader, plus health and reflection).
//
//   krasis-loader [--models-dir ~/.krasis/models] [--cache-dir ~/.krasis/cache]
//                 [--model DIR]... [--chunk-mib 4] [--listen 127.0.0.1:0]
//
// Serves every model directory under --models-dir and each --model DIR. Models
// are scanned and validated at startup (problems are logged and reported by
// ListModels with include_invalid) and again whenever their files change.
// Conversion into the cache (quantized experts) arrives in a later issue.
#include <memory>
#include <string>
#include <vector>

#include "common/logging.h"
#include "services/loader/loader_service.h"
#include "services/loader/model_registry.h"
#include "services/rpc/service_main.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  krasis::ServiceCommandLine cl("loader",
                                "model registry, validation, manifests and weight streaming");
  krasis::RegistryOptions registry_options;
  registry_options.models_dir = krasis::DefaultKrasisDir("models");
  registry_options.cache_dir = krasis::DefaultKrasisDir("cache");
  int chunk_mib = 4;
  auto& models_dir = registry_options.models_dir;
  auto& cache_dir = registry_options.cache_dir;
  cl.options().add_options()
      ("models-dir", po::value(&models_dir)->default_value(models_dir),
       "folder scanned for model directories (Hugging Face layout: config.json, "
       "*.safetensors, tokenizer.json); need not exist")
      ("cache-dir", po::value(&cache_dir)->default_value(cache_dir), "conversion cache folder")
      ("model", po::value(&registry_options.model_dirs)->composing(),
       "serve this model directory too (repeatable); its id is the folder name")
      ("chunk-mib", po::value(&chunk_mib)->default_value(chunk_mib),
       "default chunk size of ReadFile/ReadTensor streams, MiB (1 to 64)");
  if (auto code = cl.Parse(argc, argv)) return *code;
  if (chunk_mib < 1 || chunk_mib > 64) {
    KLOG_ERROR("--chunk-mib must be from 1 to 64, got {}", chunk_mib);
    return 2;
  }

  krasis::ModelRegistry registry(registry_options);
  auto models = registry.List(/*rescan=*/true);
  size_t valid = 0;
  for (const auto& m : models) valid += m->ok() ? 1 : 0;
  KLOG_INFO("models dir {}: {} model(s), {} valid", registry.models_dir(), models.size(), valid);

  krasis::LoaderServiceOptions service_options;
  service_options.default_chunk_bytes = static_cast<size_t>(chunk_mib) << 20;
  krasis::LoaderService service(&registry, service_options);
  return krasis::ServeUntilSignal(cl, {krasis::ServedService{&service, "krasis.v1.Loader"}});
}
