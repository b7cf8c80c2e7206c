// The Prometheus exporter's text format: HELP/TYPE lines, label escaping, cumulative buckets.
#include "server/metrics_registry.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loraserve::server {
namespace {

using ::testing::HasSubstr;

TEST(MetricsRegistryTest, CounterWithLabelsRendersHelpTypeAndSamples) {
  MetricsRegistry registry;
  ScalarFamily* requests =
      registry.AddCounter("x_requests_total", "Requests.", {"adapter", "status"});
  requests->Add({"a", "OK"}, 2);
  requests->Add({"a", "OK"}, 1);
  EXPECT_EQ(registry.Render(),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n"
            "x_requests_total{adapter=\"a\",status=\"OK\"} 3\n");
}

TEST(MetricsRegistryTest, UnlabelledFamiliesStartAtZero) {
  MetricsRegistry registry;
  registry.AddGauge("x_waiting", "Waiting.");
  EXPECT_THAT(registry.Render(), HasSubstr("\nx_waiting 0\n"));
}

TEST(MetricsRegistryTest, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry registry;
  ScalarFamily* g = registry.AddGauge("x_info", "Line one\nback\\slash", {"v"});
  g->Set({"a\"b\\c\nd"}, 1);
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("# HELP x_info Line one\\nback\\\\slash\n"));
  EXPECT_THAT(text, HasSubstr("x_info{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeWithSumAndCount) {
  MetricsRegistry registry;
  HistogramFamily* h = registry.AddHistogram("x_seconds", "Latency.", {}, {0.1, 1});
  h->Observe({}, 0.05);
  h->Observe({}, 0.5);
  h->Observe({}, 5);
  EXPECT_EQ(registry.Render(),
            "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
            "x_seconds_bucket{le=\"0.10000000000000001\"} 1\nx_seconds_bucket{le=\"1\"} 2\n"
            "x_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 5.5499999999999998\n"
            "x_seconds_count 3\n");
}

TEST(MetricsRegistryTest, SetCumulativeReplacesTheSeriesAndSurvivesRenders) {
  MetricsRegistry registry;
  HistogramFamily* h = registry.AddHistogram("x_seconds", "Latency.", {}, {1});
  h->Observe({}, 0.5);  // replaced, not added to
  h->SetCumulative({}, {2, 1}, 7.5, 3);
  const std::string expected =
      "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
      "x_seconds_bucket{le=\"1\"} 2\nx_seconds_bucket{le=\"+Inf\"} 3\nx_seconds_sum 7.5\n"
      "x_seconds_count 3\n";
  EXPECT_EQ(registry.Render(), expected);
  EXPECT_EQ(registry.Render(), expected) << "a render must not consume the samples";
  EXPECT_EQ(h->Count({}), 3u);
  EXPECT_THROW(h->SetCumulative({}, {1, 2, 3}, 0, 6), std::logic_error) << "wrong bucket count";
}

TEST(MetricsRegistryTest, ClearDropsEverySeriesForInfoGauges) {
  MetricsRegistry registry;
  ScalarFamily* info = registry.AddGauge("x_info", "Info.", {"running"});
  info->Set({"a,b"}, 1);
  info->Clear();
  info->Set({"c"}, 1);
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("x_info{running=\"c\"} 1\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("a,b")));
}

TEST(MetricsRegistryTest, FormatValueHandlesSpecialValues) {
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(0.5), "0.5");
  EXPECT_EQ(FormatValue(1.0 / 0.0), "+Inf");
  EXPECT_EQ(FormatValue(-1.0 / 0.0), "-Inf");
}

}  // namespace
}  // namespace loraserve::server
