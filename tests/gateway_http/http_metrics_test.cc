// The Prometheus registry: exact text exposition of counters, gauges and
// histograms (with and without labels, escaping, value formatting) and counts
// under concurrent updates.
#include "services/gateway/http/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

namespace krasis::http {
namespace {

TEST(MetricsTest, CounterWithAndWithoutLabels) {
  MetricsRegistry registry;
  auto& total = registry.AddCounter("krasis_prompt_tokens_total", "Prompt tokens processed.");
  auto& requests =
      registry.AddCounter("krasis_requests_total", "HTTP requests by status.", {"code", "path"});
  total.Get().Increment(12);
  total.Get().Increment(0.5);
  total.Get().Increment(-3);  // ignored
  requests.WithLabels({"200", "/v1/models"}).Increment();
  requests.WithLabels({"200", "/v1/models"}).Increment();
  requests.WithLabels({"404", "/x"}).Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP krasis_prompt_tokens_total Prompt tokens processed.\n"
            "# TYPE krasis_prompt_tokens_total counter\n"
            "krasis_prompt_tokens_total 12.5\n"
            "# HELP krasis_requests_total HTTP requests by status.\n"
            "# TYPE krasis_requests_total counter\n"
            "krasis_requests_total{code=\"200\",path=\"/v1/models\"} 2\n"
            "krasis_requests_total{code=\"404\",path=\"/x\"} 1\n");
}

TEST(MetricsTest, Gauge) {
  MetricsRegistry registry;
  auto& depth = registry.AddGauge("krasis_queue_depth", "Requests waiting.");
  auto& kv = registry.AddGauge("krasis_kv_cache_usage_ratio", "KV cache use.", {"worker"});
  depth.Get().Set(5);
  depth.Get().Increment();
  depth.Get().Sub(2.5);
  kv.WithLabels({"decode-0"}).Set(0.25);
  kv.WithLabels({"decode-1"}).Set(-1e-7);
  EXPECT_EQ(registry.Render(),
            "# HELP krasis_queue_depth Requests waiting.\n"
            "# TYPE krasis_queue_depth gauge\n"
            "krasis_queue_depth 3.5\n"
            "# HELP krasis_kv_cache_usage_ratio KV cache use.\n"
            "# TYPE krasis_kv_cache_usage_ratio gauge\n"
            "krasis_kv_cache_usage_ratio{worker=\"decode-0\"} 0.25\n"
            "krasis_kv_cache_usage_ratio{worker=\"decode-1\"} -1e-07\n");
}

TEST(MetricsTest, Histogram) {
  MetricsRegistry registry;
  auto& ttft = registry.AddHistogram("krasis_ttft_seconds", "Time to first token.",
                                     {1, 0.125, 0.5, std::numeric_limits<double>::infinity(), 0.5});
  ttft.Get().Observe(0.0625);
  ttft.Get().Observe(0.125);  // le is inclusive
  ttft.Get().Observe(0.75);
  ttft.Get().Observe(3);
  EXPECT_EQ(registry.Render(),
            "# HELP krasis_ttft_seconds Time to first token.\n"
            "# TYPE krasis_ttft_seconds histogram\n"
            "krasis_ttft_seconds_bucket{le=\"0.125\"} 2\n"
            "krasis_ttft_seconds_bucket{le=\"0.5\"} 2\n"
            "krasis_ttft_seconds_bucket{le=\"1\"} 3\n"
            "krasis_ttft_seconds_bucket{le=\"+Inf\"} 4\n"
            "krasis_ttft_seconds_sum 3.9375\n"
            "krasis_ttft_seconds_count 4\n");
}

TEST(MetricsTest, LabeledHistogramAndEmptyFamily) {
  MetricsRegistry registry;
  auto& itl = registry.AddHistogram("krasis_itl_seconds", "Inter-token latency.", {0.01, 0.1},
                                    {"model"});
  registry.AddCounter("krasis_errors_total", "Errors.", {"kind"});  // no children yet
  itl.WithLabels({"qwen"}).Observe(0.02);
  EXPECT_EQ(registry.Render(),
            "# HELP krasis_itl_seconds Inter-token latency.\n"
            "# TYPE krasis_itl_seconds histogram\n"
            "krasis_itl_seconds_bucket{model=\"qwen\",le=\"0.01\"} 0\n"
            "krasis_itl_seconds_bucket{model=\"qwen\",le=\"0.1\"} 1\n"
            "krasis_itl_seconds_bucket{model=\"qwen\",le=\"+Inf\"} 1\n"
            "krasis_itl_seconds_sum{model=\"qwen\"} 0.02\n"
            "krasis_itl_seconds_count{model=\"qwen\"} 1\n"
            "# HELP krasis_errors_total Errors.\n"
            "# TYPE krasis_errors_total counter\n");
}

TEST(MetricsTest, EscapingAndNames) {
  MetricsRegistry registry;
  auto& c = registry.AddCounter("bad-name.total", "Help with \\ and\nnewline.", {"label"});
  c.WithLabels({"quote\" back\\slash\nnl"}).Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP bad_name_total Help with \\\\ and\\nnewline.\n"
            "# TYPE bad_name_total counter\n"
            "bad_name_total{label=\"quote\\\" back\\\\slash\\nnl\"} 1\n");
}

TEST(MetricsTest, SameNameReturnsSameFamily) {
  MetricsRegistry registry;
  auto& a = registry.AddCounter("x_total", "X.");
  auto& b = registry.AddCounter("x_total", "X.");
  EXPECT_EQ(&a, &b);
  auto& clash = registry.AddGauge("x_total", "Not exported.");
  clash.Get().Set(7);
  a.Get().Increment();
  EXPECT_EQ(registry.Render(), "# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n");
}

TEST(MetricsTest, ValueFormatting) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(42), "42");
  EXPECT_EQ(FormatMetricValue(0.005), "0.005");
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
}

TEST(MetricsTest, ConcurrentUpdates) {
  MetricsRegistry registry;
  auto& counter = registry.AddCounter("c_total", "C.", {"t"});
  auto& hist = registry.AddHistogram("h", "H.", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        counter.WithLabels({std::to_string(t % 2)}).Increment();
        hist.Get().Observe(i % 2);
        if (i % 1000 == 0) registry.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter.WithLabels({"0"}).value(), 20000);
  EXPECT_EQ(counter.WithLabels({"1"}).value(), 20000);
  auto snapshot = hist.Get().snapshot();
  EXPECT_EQ(snapshot.count, 40000u);
  EXPECT_EQ(snapshot.cumulative.back(), 40000u);
  EXPECT_EQ(snapshot.sum, 20000);
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_EQ(MetricsRegistry::ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_EQ(MetricsRegistry::LinearBuckets(0, 5, 3), (std::vector<double>{0, 5, 10}));
  EXPECT_FALSE(MetricsRegistry::DefaultLatencyBuckets().empty());
}

}  // namespace
}  // namespace krasis::http
