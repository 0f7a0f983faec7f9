// Safetensors reader and writer: header validation (pure, fuzzed), mmap'ed files,
// sharded checkpoints behind model.safetensors.index.json. See safetensors.h.
#include "common/safetensors.h"

#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace krasis {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
constexpr std::string_view kSingleFileName = "model.safetensors";
constexpr uint64_t kMaxIndexBytes = 1ull << 30;

// A JSON value for an error message: numbers verbatim, anything else by type.
std::string Describe(const json& value) {
  if (value.is_number()) return value.dump();
  return std::string(value.type_name());
}

// The value of a non-negative JSON integer; nullopt for anything else.
std::optional<uint64_t> AsUnsigned(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v >= 0) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

std::string DimsToString(const std::vector<uint64_t>& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

uint64_t ReadLittleEndian64(const std::byte* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<uint64_t>(p[i]);
  return value;
}

// Validates one header entry (everything but overlaps with other entries).
absl::Status ParseEntry(const std::string& file, const std::string& name, const json& entry,
                        uint64_t data_size, TensorInfo* info) {
  const std::string where = absl::StrCat(file, ": tensor '", name, "': ");
  if (!entry.is_object()) {
    return InvalidArgumentError(where, "entry is ", Describe(entry), ", expected an object");
  }
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end()) return InvalidArgumentError(where, "missing \"dtype\"");
  if (shape_it == entry.end()) return InvalidArgumentError(where, "missing \"shape\"");
  if (offsets_it == entry.end()) return InvalidArgumentError(where, "missing \"data_offsets\"");

  if (!dtype_it->is_string()) {
    return InvalidArgumentError(where, "\"dtype\" is ", Describe(*dtype_it), ", expected a string");
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  std::optional<DType> dtype = ParseDType(dtype_name);
  if (!dtype) return InvalidArgumentError(where, "unknown dtype '", dtype_name, "'");

  if (!shape_it->is_array()) {
    return InvalidArgumentError(where, "\"shape\" is ", Describe(*shape_it), ", expected an array");
  }
  std::vector<uint64_t> dims;
  dims.reserve(shape_it->size());
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const json& dim = (*shape_it)[i];
    std::optional<uint64_t> value = AsUnsigned(dim);
    if (!value) {
      return InvalidArgumentError(where, "shape dimension ", i, " is ", Describe(dim),
                                  ", expected a non-negative integer");
    }
    dims.push_back(*value);
  }
  // Every partial product must fit, zero dimensions aside, so that later stride
  // arithmetic on this shape cannot overflow either.
  uint64_t numel = 1;
  uint64_t nonzero_product = 1;
  uint64_t nbytes = 0;
  bool overflow = false;
  for (uint64_t d : dims) {
    overflow |= d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    overflow |= __builtin_mul_overflow(nonzero_product, std::max<uint64_t>(d, 1), &nonzero_product);
    numel *= d;  // cannot overflow when nonzero_product does not
  }
  overflow |= nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  overflow |= __builtin_mul_overflow(numel, DTypeSize(*dtype), &nbytes);
  if (overflow) {
    return InvalidArgumentError(where, "shape ", DimsToString(dims), " of ", dtype_name,
                                " overflows");
  }

  const json& offsets = *offsets_it;
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = AsUnsigned(offsets[0]);
    end = AsUnsigned(offsets[1]);
  }
  if (!begin || !end) {
    std::string got;
    if (!offsets.is_array()) {
      got = Describe(offsets);
    } else if (offsets.size() != 2) {
      got = absl::StrCat("an array of ", offsets.size(), " elements");
    } else {
      got = absl::StrCat("[", Describe(offsets[0]), ", ", Describe(offsets[1]), "]");
    }
    return InvalidArgumentError(where, "\"data_offsets\" must be two non-negative integers, got ",
                                got);
  }
  const std::string offsets_str = absl::StrCat("[", *begin, ", ", *end, "]");
  if (*end < *begin) {
    return InvalidArgumentError(where, "data_offsets ", offsets_str, ": end is before begin");
  }
  if (*end > data_size) {
    return DataLossError(where, "data_offsets ", offsets_str,
                         " run past the end of the data section (", data_size,
                         " bytes); is the file truncated?");
  }
  if (*end - *begin != nbytes) {
    return InvalidArgumentError(where, "data_offsets ", offsets_str, " do not match shape ",
                                DimsToString(dims), " of ", dtype_name, " (", nbytes, " bytes)");
  }

  info->name = name;
  info->dtype = *dtype;
  info->shape.assign(dims.begin(), dims.end());
  info->begin = *begin;
  info->end = *end;
  info->file = file;
  return absl::OkStatus();
}

absl::Status ParseMetadata(const std::string& file, const json& value,
                           std::map<std::string, std::string>* metadata) {
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_object()) {
    return InvalidArgumentError(file, ": \"__metadata__\" is ", Describe(value),
                                ", expected an object of strings");
  }
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return InvalidArgumentError(file, ": \"__metadata__\" entry '", key, "' is ",
                                  Describe(item), ", expected a string");
    }
    (*metadata)[key] = item.get<std::string>();
  }
  return absl::OkStatus();
}

// Parses JSON text (discarded on error, no exceptions). With `duplicate`, reports
// the first repeated top-level key there (nlohmann would silently keep the last).
json ParseJson(std::string_view text, std::optional<std::string>* duplicate = nullptr) {
  if (duplicate == nullptr) {
    return json::parse(text.data(), text.data() + text.size(), nullptr,
                       /*allow_exceptions=*/false);
  }
  std::unordered_set<std::string> seen;
  json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && parsed.is_string() && !*duplicate) {
      if (!seen.insert(parsed.get<std::string>()).second) *duplicate = parsed.get<std::string>();
    }
    return true;
  };
  return json::parse(text.data(), text.data() + text.size(), callback,
                     /*allow_exceptions=*/false);
}

absl::Status StatusFromErrno(int error, const std::string& path, const char* what) {
  return absl::ErrnoToStatus(error, absl::StrCat(path, ": ", what));
}

}  // namespace

absl::StatusOr<ParsedHeader> ParseSafetensorsHeader(std::span<const std::byte> file_bytes,
                                                     std::string_view file_name_view) {
  // Debian's Abseil has its own string_view, which StrCat does not take std's for.
  const std::string file_name(file_name_view);
  const uint64_t size = file_bytes.size();
  if (size < 8) {
    return DataLossError(file_name, ": file is ", size,
                         " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_len = ReadLittleEndian64(file_bytes.data());
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return DataLossError(file_name, ": header length ", header_len, " is absurdly large (limit ",
                         kMaxSafetensorsHeaderBytes, "); not a safetensors file?");
  }
  if (header_len > size - 8) {
    return DataLossError(file_name, ": header length ", header_len, " runs past the end of the ",
                         size, "-byte file; is the file truncated?");
  }
  ParsedHeader result;
  result.data_offset = 8 + header_len;
  result.data_size = size - result.data_offset;

  std::string_view text(reinterpret_cast<const char*>(file_bytes.data()) + 8, header_len);
  std::optional<std::string> duplicate;
  json header = ParseJson(text, &duplicate);
  if (header.is_discarded()) {
    return InvalidArgumentError(file_name, ": header (", header_len,
                                " bytes) is not valid JSON");
  }
  if (!header.is_object()) {
    return InvalidArgumentError(file_name, ": header is ", Describe(header),
                                ", expected a JSON object");
  }
  if (duplicate) {
    return InvalidArgumentError(file_name, ": tensor '", *duplicate,
                                "' appears twice in the header");
  }

  result.tensors.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      RETURN_IF_ERROR(ParseMetadata(file_name, entry, &result.metadata));
      continue;
    }
    TensorInfo info;
    RETURN_IF_ERROR(ParseEntry(file_name, name, entry, result.data_size, &info));
    result.tensors.push_back(std::move(info));
  }

  std::sort(result.tensors.begin(), result.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  // Sorted by begin, a non-empty tensor overlaps an earlier one iff it begins before
  // the furthest end seen so far.
  const TensorInfo* furthest = nullptr;
  for (const TensorInfo& t : result.tensors) {
    if (t.begin == t.end) continue;
    if (furthest != nullptr && t.begin < furthest->end) {
      return InvalidArgumentError(file_name, ": tensor '", t.name, "': data_offsets [", t.begin,
                                  ", ", t.end, "] overlap tensor '", furthest->name,
                                  "' at [", furthest->begin, ", ", furthest->end, "]");
    }
    if (furthest == nullptr || t.end > furthest->end) furthest = &t;
  }
  return result;
}

// ---------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::span<const std::byte> bytes, MapFileReadOnly(path));
  const std::byte* map = bytes.empty() ? nullptr : bytes.data();
  const uint64_t size = bytes.size();
  absl::StatusOr<ParsedHeader> header = ParseSafetensorsHeader({map, size}, path);
  if (!header.ok()) {
    UnmapFile(bytes);
    return header.status();
  }
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, map, size, std::move(header).value()));
}

SafetensorsFile::SafetensorsFile(std::string path, const std::byte* map, uint64_t size,
                                 ParsedHeader header)
    : path_(std::move(path)), map_(map), size_(size), header_(std::move(header)) {
  index_.reserve(header_.tensors.size());
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  UnmapFile({map_, static_cast<size_t>(size_)});
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<TensorView> SafetensorsFile::GetTensor(std::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) return NotFoundError(path_, ": tensor '", std::string(name), "' not found");
  return View(*info);
}

TensorView SafetensorsFile::View(const TensorInfo& info) const {
  TensorView view;
  view.dtype = info.dtype;
  view.shape = info.shape;
  view.data = Bytes(info).data();
  return view;
}

bool SafetensorsFile::IsAligned(const TensorInfo& info) const {
  return (header_.data_offset + info.begin) % DTypeSize(info.dtype) == 0;
}

std::span<const std::byte> SafetensorsFile::Bytes(const TensorInfo& info) const {
  if (map_ == nullptr) return {};
  return {map_ + header_.data_offset + info.begin, info.nbytes()};
}

// ---------------------------------------------------------------------------
// SafetensorsModel

namespace {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat(path, ": cannot read"));
  if (size > kMaxIndexBytes) return InvalidArgumentError(path, ": ", size, " bytes is too large");
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return NotFoundError(path, ": cannot open");
  std::ostringstream contents;
  contents << in.rdbuf();
  if (!in) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return std::move(contents).str();
}

// Shard names come from the index; they must stay inside the checkpoint directory.
bool IsSafeShardName(const std::string& name) {
  if (name.empty()) return false;
  fs::path p(name);
  if (p.is_absolute()) return false;
  for (const fs::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

absl::Status SafetensorsModel::AddShard(std::unique_ptr<SafetensorsFile> shard) {
  for (const TensorInfo& info : shard->tensors()) {
    auto [it, inserted] = tensors_.try_emplace(info.name, Entry{shard.get(), &info});
    if (!inserted) {
      return InvalidArgumentError(root_, ": tensor '", info.name, "' appears in both ",
                                  it->second.shard->path(), " and ", shard->path());
    }
  }
  shards_.push_back(std::move(shard));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(
    const std::string& dir_or_file) {
  std::unique_ptr<SafetensorsModel> model(new SafetensorsModel());
  model->root_ = dir_or_file;
  std::error_code ec;
  const fs::file_status status = fs::status(dir_or_file, ec);
  if (!fs::exists(status)) return NotFoundError(dir_or_file, ": no such file or directory");
  if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat(dir_or_file, ": cannot stat"));

  std::vector<std::string> files;  // shards to open, in order
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard path
  fs::path dir;
  if (fs::is_directory(status)) {
    dir = dir_or_file;
    if (fs::exists(dir / kIndexFileName, ec)) {
      model->index_path_ = (dir / kIndexFileName).string();
    } else if (fs::is_regular_file(dir / kSingleFileName, ec)) {
      files.push_back((dir / kSingleFileName).string());
    } else {
      for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".safetensors" && it->is_regular_file(ec)) {
          files.push_back(it->path().string());
        }
      }
      if (ec) return absl::ErrnoToStatus(ec.value(), absl::StrCat(dir_or_file, ": cannot list"));
      if (files.empty()) return NotFoundError(dir_or_file, ": no .safetensors files");
      std::sort(files.begin(), files.end());
    }
  } else if (fs::path(dir_or_file).extension() == ".json") {
    model->index_path_ = dir_or_file;
    dir = fs::path(dir_or_file).parent_path();
  } else {
    files.push_back(dir_or_file);
  }

  if (!model->index_path_.empty()) {
    const std::string& index_path = model->index_path_;
    ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index_path));
    json index = ParseJson(text);
    if (index.is_discarded()) return InvalidArgumentError(index_path, ": not valid JSON");
    if (!index.is_object()) {
      return InvalidArgumentError(index_path, ": is ", Describe(index), ", expected an object");
    }
    auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object()) {
      return InvalidArgumentError(index_path, ": \"weight_map\" is ",
                                  map_it == index.end() ? "missing" : Describe(*map_it),
                                  ", expected an object of tensor name -> shard file");
    }
    std::set<std::string> shard_names;
    for (const auto& [name, shard] : map_it->items()) {
      if (!shard.is_string() || !IsSafeShardName(shard.get<std::string>())) {
        return InvalidArgumentError(index_path, ": tensor '", name, "' maps to ",
                                    shard.is_string() ? shard.dump() : Describe(shard),
                                    ", expected a shard file name in ", dir.string());
      }
      const std::string& shard_name = shard.get_ref<const std::string&>();
      const std::string shard_path = (dir / shard_name).string();
      if (shard_names.insert(shard_name).second && !fs::exists(shard_path, ec)) {
        return NotFoundError(index_path, ": shard ", shard_path, " (listed for tensor '", name,
                             "') is missing");
      }
      weight_map.emplace_back(name, shard_path);
    }
    for (const std::string& shard_name : shard_names) files.push_back((dir / shard_name).string());
  }

  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard, SafetensorsFile::Open(file));
    RETURN_IF_ERROR(model->AddShard(std::move(shard)));
  }
  for (const auto& [name, shard_path] : weight_map) {
    const SafetensorsFile* actual = model->ShardOf(name);
    if (actual == nullptr || actual->path() != shard_path) {
      return NotFoundError(model->index_path_, ": tensor '", name, "' is mapped to ", shard_path,
                           " but that shard does not contain it",
                           actual == nullptr ? "" : absl::StrCat(" (it is in ", actual->path(), ")"));
    }
  }
  return model;
}

std::vector<std::string> SafetensorsModel::shard_paths() const {
  std::vector<std::string> paths;
  for (const auto& shard : shards_) paths.push_back(shard->path());
  return paths;
}

std::vector<std::string> SafetensorsModel::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, entry] : tensors_) names.emplace_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

const TensorInfo* SafetensorsModel::Find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.info;
}

const SafetensorsFile* SafetensorsModel::ShardOf(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.shard;
}

absl::StatusOr<TensorView> SafetensorsModel::GetTensor(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFoundError("tensor '", std::string(name), "' not found in ", root_);
  return it->second.shard->View(*it->second.info);
}

// ---------------------------------------------------------------------------
// Writer

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, TensorView>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // Largest elements first, as the reference writer does: with the data section
  // 8-byte aligned, every tensor then starts at a multiple of its element size.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return DTypeSize(tensors[a].second.dtype) > DTypeSize(tensors[b].second.dtype);
  });
  json header = json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, view] = tensors[i];
    if (name == kMetadataKey || header.contains(name)) {
      return InvalidArgumentError(path, ": cannot write tensor '", name, "': duplicate name");
    }
    for (int64_t d : view.shape) {
      if (d < 0) return InvalidArgumentError(path, ": tensor '", name, "': negative dimension");
    }
    const uint64_t nbytes = view.nbytes();
    if (nbytes > 0 && view.data == nullptr) {
      return InvalidArgumentError(path, ": tensor '", name, "' has no data");
    }
    header[name] = {{"dtype", DTypeName(view.dtype)},
                    {"shape", view.shape},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not UTF-8
    return InvalidArgumentError(path, ": cannot encode header: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);

  const std::string tmp_path = path + ".tmp";
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return StatusFromErrno(errno, tmp_path, "cannot create");
  auto write_all = [fd](const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) errno = EIO;
      if (n <= 0) return false;
      p += n;
      size -= static_cast<size_t>(n);
    }
    return true;
  };
  bool ok = write_all(prefix.data(), prefix.size()) && write_all(text.data(), text.size());
  for (size_t i : order) {
    if (ok) ok = write_all(tensors[i].second.data, tensors[i].second.nbytes());
  }
  int error = ok ? 0 : errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    error = errno;
  }
  if (!ok) {
    ::unlink(tmp_path.c_str());
    return StatusFromErrno(error, tmp_path, "write failed");
  }
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int rename_error = errno;
    ::unlink(tmp_path.c_str());
    return StatusFromErrno(rename_error, path, "cannot rename temporary file");
  }
  return absl::OkStatus();
}

}  // namespace krasis
