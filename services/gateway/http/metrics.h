// A small Prometheus registry for the gateway's /metrics endpoint.
//
// Counters, gauges and histograms (fixed buckets), each in a family with a name,
// help text and label names; a family hands out one child per combination of
// label values. Everything is thread-safe: children are updated with atomics (a
// histogram with a short lock so its buckets, sum and count stay consistent) and
// references to children stay valid for the registry's lifetime, so hot paths can
// look a child up once and keep it.
//
// Render() writes the text exposition format (version 0.0.4): families in
// registration order, children sorted by label values,
//   # HELP krasis_requests_total Requests by status.
//   # TYPE krasis_requests_total counter
//   krasis_requests_total{code="200"} 3
// and for histograms cumulative _bucket{le="..."} lines (ending with le="+Inf"),
// then _sum and _count.
//
//   MetricsRegistry registry;
//   auto& requests = registry.AddCounter("krasis_requests_total", "Requests.", {"code"});
//   requests.WithLabels({"200"}).Increment();
//   auto& ttft = registry.AddHistogram("krasis_ttft_seconds", "Time to first token.",
//                                      MetricsRegistry::DefaultLatencyBuckets());
//   ttft.Get().Observe(0.25);
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace krasis::http {

// Content-Type of Render()'s output.
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

class Counter {
 public:
  // Adds `amount` (negative amounts are ignored: counters only go up).
  void Increment(double amount = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double amount);
  void Sub(double amount) { Add(-amount); }
  void Increment() { Add(1.0); }
  void Decrement() { Add(-1.0); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds`: the upper bounds of the buckets, ascending (+Inf is implicit).
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then the +Inf bucket
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; guarded by mu_
  double sum_ = 0;                // guarded by mu_
  uint64_t count_ = 0;            // guarded by mu_
};

namespace detail {
// Shared part of a family: name, help, label names, children by label values.
template <typename Metric>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds = {});
  Family(const Family&) = delete;
  Family& operator=(const Family&) = delete;

  // The child for `values` (one per label name, in order), created on first use.
  // A wrong number of values is logged and padded or cut to fit.
  Metric& WithLabels(const std::vector<std::string>& values);
  // The child of a family without labels.
  Metric& Get() { return WithLabels({}); }

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Calls fn(label_values, metric) for each child, sorted by label values.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [values, metric] : children_) fn(values, *metric);
  }

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_;
};
}  // namespace detail

using CounterFamily = detail::Family<Counter>;
using GaugeFamily = detail::Family<Gauge>;
using HistogramFamily = detail::Family<Histogram>;

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers a family (or returns the one already registered under `name` with
  // the same type). Invalid characters in names become '_'. A family without
  // labels has its one child from the start (it renders as 0 before any update).
  // Registering a name again with another type logs an error and returns a family
  // that is not rendered.
  CounterFamily& AddCounter(std::string name, std::string help,
                            std::vector<std::string> label_names = {});
  GaugeFamily& AddGauge(std::string name, std::string help,
                        std::vector<std::string> label_names = {});
  // `buckets`: upper bounds; sorted, de-duplicated, +Inf dropped (always added).
  HistogramFamily& AddHistogram(std::string name, std::string help, std::vector<double> buckets,
                                std::vector<std::string> label_names = {});

  // The whole registry in the Prometheus text format.
  std::string Render() const;

  // Bucket helpers. Latency: 5 ms .. 60 s, suited to TTFT and request times.
  static std::vector<double> DefaultLatencyBuckets();
  // start, start*factor, ... (`count` bounds).
  static std::vector<double> ExponentialBuckets(double start, double factor, int count);
  // start, start+width, ... (`count` bounds).
  static std::vector<double> LinearBuckets(double start, double width, int count);

 private:
  struct Entry;
  template <typename FamilyT>
  FamilyT& Add(int kind, std::string name, std::string help, std::vector<std::string> labels,
               std::vector<double> bounds);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;  // registration order; guarded by mu_
  std::vector<std::unique_ptr<Entry>> detached_;  // type clashes; guarded by mu_
};

// Formats a sample value as Prometheus expects: shortest round-trip decimal,
// "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double value);

}  // namespace krasis::http
