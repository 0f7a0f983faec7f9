// `krasis prepare`: builds a model's conversion cache (quantized routed experts,
// common/quant/expert_cache.h) ahead of serving, with a progress bar.
//
//   krasis prepare --model DIR [--cpu-experts int4|int8] [--gpu-experts bf16|int8|int4]
//                  [--group-size 128] [--cache-dir ~/.krasis/cache] [--gguf-experts FILE]
//
// The decode worker (--experts int4 --cache-dir ...) then maps the files instead
// of quantizing at start. GPU expert formats are the same files: --gpu-experts
// int8|int4 builds that format too; bf16 uses the checkpoint as stored.
#pragma once

namespace krasis {

int PrepareCommand(int argc, char** argv, const char* default_model_dir, const char* default_home);

}  // namespace krasis
