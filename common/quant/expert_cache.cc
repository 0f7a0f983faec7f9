// Conversion cache files of quantized experts (see expert_cache.h).
#include "common/quant/expert_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/mapped_file.h"
#include "common/status.h"

namespace krasis::quant {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'K', 'R', 'A', 'S', 'I', 'S', 'X', 'Q'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kAlign = 4096;
constexpr size_t kTableStart = 128;

uint64_t AlignUp(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  void Add(const std::string& s) {
    Add(s.data(), s.size());
    Add("\0", 1);
  }
  template <typename T>
  void AddValue(T v) {
    Add(&v, sizeof(v));
  }
};

// A matrix of the layer with its shape and group size but no bytes: for sizes.
QuantizedMatrix Blank(QuantFormat format, int64_t rows, int64_t cols, int64_t group) {
  QuantizedMatrix m;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  m.group_size = ChooseGroupSize(cols, group);
  return m;
}

struct Part {
  uint64_t data_offset, data_bytes, scales_offset, scales_count;
};

struct Layout {
  uint64_t header_bytes = 0, total = 0;
  std::vector<Part> parts;  // expert-major, then gate, up, down
  QuantizedMatrix gate, down;  // blanks (up has gate's shape)
};

Layout ComputeLayout(const ExpertLayerShape& s) {
  Layout l;
  l.gate = Blank(s.format, s.inter, s.hidden, s.group_size);
  l.down = Blank(s.format, s.hidden, s.inter, s.group_size);
  l.header_bytes = AlignUp(kTableStart + static_cast<uint64_t>(s.num_experts) * 3 * sizeof(Part));
  uint64_t at = l.header_bytes;
  for (int64_t e = 0; e < s.num_experts; ++e) {
    for (const QuantizedMatrix* m : {&l.gate, &l.gate, &l.down}) {
      Part p;
      p.data_offset = at;
      p.data_bytes = m->data_bytes();
      at = AlignUp(at + p.data_bytes);
      p.scales_offset = at;
      p.scales_count = m->scale_count();
      at = AlignUp(at + p.scales_count * sizeof(float));
      l.parts.push_back(p);
    }
  }
  l.total = at;
  return l;
}

// The header fields after the magic, in file order.
struct Fields {
  uint32_t version, format;
  uint64_t group, hidden, inter, num_experts, fingerprint, total, checksum;
};

std::vector<uint8_t> Header(const ExpertLayerShape& s, const Layout& l) {
  std::vector<uint8_t> h(l.header_bytes, 0);
  std::memcpy(h.data(), kMagic, 8);
  Fields f{kVersion, static_cast<uint32_t>(s.format), static_cast<uint64_t>(s.group_size),
           static_cast<uint64_t>(s.hidden), static_cast<uint64_t>(s.inter), static_cast<uint64_t>(s.num_experts),
           s.fingerprint, l.total, 0};
  std::memcpy(h.data() + 8, &f, sizeof(f));
  std::memcpy(h.data() + kTableStart, l.parts.data(), l.parts.size() * sizeof(Part));
  Fnv sum;
  sum.Add(h.data(), h.size());
  f.checksum = sum.h;
  std::memcpy(h.data() + 8, &f, sizeof(f));
  return h;
}

absl::Status WriteAll(int fd, const void* data, size_t n, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return InternalError("cannot write ", path, ": ", std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> SourceFingerprint(const std::string& model_dir) {
  Fnv h;
  std::ifstream config(fs::path(model_dir) / "config.json", std::ios::binary);
  if (!config) return NotFoundError(model_dir, "/config.json cannot be read");
  std::string text((std::istreambuf_iterator<char>(config)), std::istreambuf_iterator<char>());
  h.Add(text);
  std::vector<fs::path> shards;
  for (const auto& e : fs::directory_iterator(model_dir)) {
    if (e.path().extension() == ".safetensors") shards.push_back(e.path());
  }
  std::sort(shards.begin(), shards.end());
  for (const fs::path& p : shards) {
    struct stat st {};
    if (stat(p.c_str(), &st) != 0) return NotFoundError(p.string(), " cannot be read");
    h.Add(p.filename().string());
    h.AddValue<int64_t>(st.st_size);
    h.AddValue<int64_t>(st.st_mtim.tv_sec);
    h.AddValue<int64_t>(st.st_mtim.tv_nsec);
    std::ifstream in(p, std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    if (!in || n > (uint64_t{100} << 20)) return DataLossError(p.string(), ": no readable safetensors header");
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    h.Add(header);  // the tensor index: names, dtypes, shapes, offsets
  }
  return h.h;
}

std::string ExpertCacheDir(const std::string& root, const std::string& model_dir, QuantFormat format,
                           int64_t group_size) {
  std::string name = fs::path(model_dir).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(model_dir).lexically_normal().parent_path().filename().string();
  return (fs::path(root) / name / StrCat("experts-", QuantFormatName(format), "g", group_size)).string();
}

MappedExpertLayer::~MappedExpertLayer() {
  UnmapFile({reinterpret_cast<const std::byte*>(base_), size_});
}

absl::StatusOr<std::unique_ptr<MappedExpertLayer>> MappedExpertLayer::Open(const std::string& path,
                                                                           const ExpertLayerShape& shape) {
  if (!fs::exists(path)) return NotFoundError(path, " does not exist");
  ASSIGN_OR_RETURN(std::span<const std::byte> bytes, MapFileReadOnly(path));
  const size_t size = bytes.size();
  if (size < kTableStart) {
    UnmapFile(bytes);
    return DataLossError(path, ": truncated (", size, " bytes)");
  }
  const void* base = bytes.data();
  std::unique_ptr<MappedExpertLayer> m(new MappedExpertLayer());
  m->base_ = static_cast<const uint8_t*>(base);
  m->size_ = size;
  m->shape_ = shape;
  if (std::memcmp(m->base_, kMagic, 8) != 0) return DataLossError(path, ": not a Krasis expert cache file");
  Fields f;
  std::memcpy(&f, m->base_ + 8, sizeof(f));
  if (f.version != kVersion) return DataLossError(path, ": cache format version ", f.version, ", expected ", kVersion);
  if (f.fingerprint != shape.fingerprint) {
    return DataLossError(path, ": stale (built from another config.json or other safetensors files)");
  }
  if (f.format != static_cast<uint32_t>(shape.format) || f.group != static_cast<uint64_t>(shape.group_size) ||
      f.hidden != static_cast<uint64_t>(shape.hidden) || f.inter != static_cast<uint64_t>(shape.inter) ||
      f.num_experts != static_cast<uint64_t>(shape.num_experts)) {
    return DataLossError(path, ": built for another format or shape");
  }
  const Layout layout = ComputeLayout(shape);
  if (f.total != layout.total || size != layout.total) {
    return DataLossError(path, ": truncated or padded (", size, " bytes, expected ", layout.total, ")");
  }
  std::vector<uint8_t> expected = Header(shape, layout);
  if (std::memcmp(expected.data(), m->base_, expected.size()) != 0) {
    return DataLossError(path, ": header checksum or layout table differs");
  }
  return m;
}

std::vector<QuantExpert> MappedExpertLayer::Experts() const {
  const Layout layout = ComputeLayout(shape_);
  std::vector<QuantExpert> out(static_cast<size_t>(shape_.num_experts));
  for (int64_t e = 0; e < shape_.num_experts; ++e) {
    QuantizedMatrix* mats[3] = {&out[e].gate, &out[e].up, &out[e].down};
    for (int k = 0; k < 3; ++k) {
      *mats[k] = k == 2 ? layout.down : layout.gate;
      const Part& p = layout.parts[static_cast<size_t>(e * 3 + k)];
      mats[k]->data = base_ + p.data_offset;
      mats[k]->scales = reinterpret_cast<const float*>(base_ + p.scales_offset);
    }
  }
  return out;
}

absl::Status WriteExpertLayer(const std::string& path, const ExpertLayerShape& shape,
                              const std::vector<QuantExpert>& experts) {
  const Layout layout = ComputeLayout(shape);
  if (static_cast<int64_t>(experts.size()) != shape.num_experts) {
    return InvalidArgumentError(path, ": ", experts.size(), " experts given, the layer has ", shape.num_experts);
  }
  const std::string tmp = StrCat(path, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("cannot create ", tmp, ": ", std::strerror(errno));
  absl::Status s = absl::OkStatus();
  for (int64_t e = 0; e < shape.num_experts && s.ok(); ++e) {
    const QuantizedMatrix* mats[3] = {&experts[e].gate, &experts[e].up, &experts[e].down};
    for (int k = 0; k < 3 && s.ok(); ++k) {
      const Part& p = layout.parts[static_cast<size_t>(e * 3 + k)];
      if (mats[k]->data_bytes() != p.data_bytes || mats[k]->scale_count() != p.scales_count ||
          mats[k]->format != shape.format) {
        s = InvalidArgumentError(path, ": expert ", e, " matrix ", k, " does not have the layer's shape");
        break;
      }
      s = WriteAll(fd, mats[k]->data, p.data_bytes, p.data_offset, tmp);
      if (s.ok()) s = WriteAll(fd, mats[k]->scales, p.scales_count * sizeof(float), p.scales_offset, tmp);
    }
  }
  // The header last, so a file cut short anywhere fails validation.
  if (s.ok() && ftruncate(fd, static_cast<off_t>(layout.total)) != 0) {
    s = InternalError("cannot size ", tmp, ": ", std::strerror(errno));
  }
  if (s.ok()) {
    std::vector<uint8_t> header = Header(shape, layout);
    s = WriteAll(fd, header.data(), header.size(), 0, tmp);
  }
  if (s.ok() && fsync(fd) != 0) s = InternalError("cannot sync ", tmp, ": ", std::strerror(errno));
  close(fd);
  if (s.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    s = InternalError("cannot rename ", tmp, ": ", std::strerror(errno));
  }
  if (!s.ok()) {
    std::remove(tmp.c_str());
    return s;
  }
  int dir = open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    fsync(dir);
    close(dir);
  }
  return absl::OkStatus();
}

absl::StatusOr<CacheLock> CacheLock::Acquire(const std::string& dir, double timeout_seconds) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InternalError("cannot create ", dir, ": ", ec.message());
  const std::string path = (fs::path(dir) / ".lock").string();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("cannot open ", path, ": ", std::strerror(errno));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      char buf[32] = {};
      ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
      close(fd);
      return absl::DeadlineExceededError(StrCat(dir, " is being built by process ",
                                                n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?",
                                                " (lock ", path, ")"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Ours now (a dead owner's flock is released by the kernel): leave our pid for
  // whoever waits, and remove leftovers of builds that died.
  const std::string pid = std::to_string(getpid());
  if (ftruncate(fd, 0) == 0) (void)!pwrite(fd, pid.data(), pid.size(), 0);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) fs::remove(e.path(), ec);
  }
  return CacheLock(fd);
}

CacheLock::~CacheLock() {
  if (fd_ >= 0) {
    flock(fd_, LOCK_UN);
    close(fd_);
  }
}

}  // namespace krasis::quant
