// Prometheus registry and text exposition (see metrics.h).
#include "services/gateway/http/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <type_traits>
#include <utility>
#include <variant>

#include "common/logging.h"

namespace krasis::http {
namespace {

enum Kind { kCounter = 0, kGauge = 1, kHistogram = 2 };
constexpr const char* kKindNames[] = {"counter", "gauge", "histogram"};

bool IsNameChar(char c, bool first, bool allow_colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (allow_colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

// Replaces characters Prometheus does not allow in names with '_'.
std::string SanitizeName(std::string name, bool allow_colon) {
  std::string original = name;
  if (name.empty()) name = "_";
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, allow_colon)) {
      name[i] = '_';
    }
  }
  if (name != original) KLOG_ERROR("metrics: invalid name '{}' renamed to '{}'", original, name);
  return name;
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// `{a="x",b="y"}` plus an optional extra pair (the histogram's le); "" when empty.
std::string LabelSet(const std::vector<std::string>& names, const std::vector<std::string>& values,
                     std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i];
    out += "=\"";
    out += EscapeLabelValue(values[i]);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
  return out;
}

void AtomicAdd(std::atomic<double>& target, double amount) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + amount, std::memory_order_relaxed)) {
  }
}

std::vector<double> NormalizeBounds(std::vector<double> bounds) {
  std::erase_if(bounds, [](double b) { return std::isnan(b) || std::isinf(b); });
  std::sort(bounds.begin(), bounds.end());
  bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());
  return bounds;
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

void Counter::Increment(double amount) {
  if (!(amount >= 0)) return;
  AtomicAdd(value_, amount);
}

void Gauge::Add(double amount) { AtomicAdd(value_, amount); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(NormalizeBounds(std::move(bounds))), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // Bucket i counts values <= bounds_[i]; the last bucket is +Inf.
  size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  std::lock_guard<std::mutex> lock(mu_);
  snapshot.cumulative.resize(counts_.size());
  uint64_t running = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    running += counts_[i];
    snapshot.cumulative[i] = running;
  }
  snapshot.sum = sum_;
  snapshot.count = count_;
  return snapshot;
}

namespace detail {

template <typename Metric>
Family<Metric>::Family(std::string name, std::string help, std::vector<std::string> label_names,
                       std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  if (label_names_.empty()) WithLabels({});
}

template <typename Metric>
Metric& Family<Metric>::WithLabels(const std::vector<std::string>& values) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> key = values;
  if (key.size() != label_names_.size()) {
    KLOG_ERROR("metrics: {} takes {} label value(s), got {}", name_, label_names_.size(),
               key.size());
    key.resize(label_names_.size());
  }
  auto it = children_.find(key);
  if (it == children_.end()) {
    std::unique_ptr<Metric> metric;
    if constexpr (std::is_same_v<Metric, Histogram>) {
      metric = std::make_unique<Histogram>(bounds_);
    } else {
      metric = std::make_unique<Metric>();
    }
    it = children_.emplace(std::move(key), std::move(metric)).first;
  }
  return *it->second;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

}  // namespace detail

struct MetricsRegistry::Entry {
  int kind;
  std::variant<std::unique_ptr<CounterFamily>, std::unique_ptr<GaugeFamily>,
               std::unique_ptr<HistogramFamily>>
      family;
  const std::string& name() const {
    return std::visit([](const auto& f) -> const std::string& { return f->name(); }, family);
  }
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

template <typename FamilyT>
FamilyT& MetricsRegistry::Add(int kind, std::string name, std::string help,
                              std::vector<std::string> labels, std::vector<double> bounds) {
  name = SanitizeName(std::move(name), true);
  for (std::string& label : labels) {
    label = SanitizeName(std::move(label), false);
    if (kind == kHistogram && label == "le") {
      KLOG_ERROR("metrics: histogram {} may not use the label 'le'; renamed to '_le'", name);
      label = "_le";
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& entry : entries_) {
    if (entry->name() != name) continue;
    if (entry->kind == kind) return *std::get<std::unique_ptr<FamilyT>>(entry->family);
    KLOG_ERROR("metrics: {} is already registered as a {}; the {} is not exported", name,
               kKindNames[entry->kind], kKindNames[kind]);
    auto detached = std::make_unique<Entry>(
        Entry{kind, std::make_unique<FamilyT>(name, std::move(help), std::move(labels),
                                              std::move(bounds))});
    FamilyT& family = *std::get<std::unique_ptr<FamilyT>>(detached->family);
    detached_.push_back(std::move(detached));
    return family;
  }
  auto entry = std::make_unique<Entry>(Entry{
      kind, std::make_unique<FamilyT>(name, std::move(help), std::move(labels), std::move(bounds))});
  FamilyT& family = *std::get<std::unique_ptr<FamilyT>>(entry->family);
  entries_.push_back(std::move(entry));
  return family;
}

CounterFamily& MetricsRegistry::AddCounter(std::string name, std::string help,
                                           std::vector<std::string> label_names) {
  return Add<CounterFamily>(kCounter, std::move(name), std::move(help), std::move(label_names), {});
}

GaugeFamily& MetricsRegistry::AddGauge(std::string name, std::string help,
                                       std::vector<std::string> label_names) {
  return Add<GaugeFamily>(kGauge, std::move(name), std::move(help), std::move(label_names), {});
}

HistogramFamily& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                               std::vector<double> buckets,
                                               std::vector<std::string> label_names) {
  return Add<HistogramFamily>(kHistogram, std::move(name), std::move(help),
                              std::move(label_names), NormalizeBounds(std::move(buckets)));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& entry : entries_) {
    const std::string& name = entry->name();
    std::visit(
        [&](const auto& family) {
          out += "# HELP " + name + " " + EscapeHelp(family->help()) + "\n";
          out += "# TYPE " + name + " " + kKindNames[entry->kind] + "\n";
          const auto& labels = family->label_names();
          family->ForEach([&](const std::vector<std::string>& values, const auto& metric) {
            using M = std::decay_t<decltype(metric)>;
            if constexpr (std::is_same_v<M, Histogram>) {
              Histogram::Snapshot s = metric.snapshot();
              const auto& bounds = metric.bounds();
              for (size_t i = 0; i < s.cumulative.size(); ++i) {
                std::string le = i < bounds.size() ? FormatMetricValue(bounds[i]) : "+Inf";
                out += name + "_bucket" + LabelSet(labels, values, "le", le) + " " +
                       std::to_string(s.cumulative[i]) + "\n";
              }
              out += name + "_sum" + LabelSet(labels, values) + " " + FormatMetricValue(s.sum) +
                     "\n";
              out += name + "_count" + LabelSet(labels, values) + " " + std::to_string(s.count) +
                     "\n";
            } else {
              out += name + LabelSet(labels, values) + " " + FormatMetricValue(metric.value()) +
                     "\n";
            }
          });
        },
        entry->family);
  }
  return out;
}

std::vector<double> MetricsRegistry::DefaultLatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> MetricsRegistry::ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

std::vector<double> MetricsRegistry::LinearBuckets(double start, double width, int count) {
  std::vector<double> bounds;
  for (int i = 0; i < count; ++i) bounds.push_back(start + width * i);
  return bounds;
}

}  // namespace krasis::http
