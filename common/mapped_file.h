// Read-only memory maps of whole files, shared by the checkpoint readers
// (safetensors, GGUF) and the conversion cache: the kernel's page cache holds the
// bytes once however many mappings and processes read them.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace krasis {

// Maps the regular file at `path` (PROT_READ, MAP_SHARED). An empty file maps to
// an empty span. Errors name the path: kNotFound for a missing file, others as
// errno says, kInvalidArgument for something that is not a regular file.
absl::StatusOr<std::span<const std::byte>> MapFileReadOnly(const std::string& path);

// Undoes MapFileReadOnly (nothing for an empty span).
void UnmapFile(std::span<const std::byte> bytes);

// Drops this process's mapping of the whole pages inside `bytes` (part of a
// MapFileReadOnly map) once it no longer needs them, e.g. BF16 weights already
// converted to INT8/INT4: they stop counting in the process's resident memory,
// the page cache keeps them for other readers, and a later read faults them
// back in. Anything else (heap memory, partial pages) is left alone.
void ReleaseMappedPages(std::span<const std::byte> bytes);

}  // namespace krasis
