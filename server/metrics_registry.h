// A small Prometheus exporter: counter, gauge and histogram families with labels, rendered in
// the text exposition format (HELP/TYPE lines, escaped label values, cumulative histogram
// buckets with _bucket/_sum/_count). No global state: the server owns one registry.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace loraserve::server {

using LabelValues = std::vector<std::string>;

// Metric, label and help text rules of the exposition format.
std::string EscapeLabelValue(const std::string& value);
std::string EscapeHelp(const std::string& help);
// Shortest round-trip text of a sample value ("+Inf", "NaN" included).
std::string FormatValue(double value);

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, std::string type,
               std::vector<std::string> label_names);
  virtual ~MetricFamily() = default;
  const std::string& name() const { return name_; }
  size_t label_count() const { return label_names_.size(); }
  void Render(std::string* out) const;

 protected:
  virtual void RenderSamples(std::string* out) const = 0;
  // `{a="x",b="y"}` (with `extra` appended, e.g. le="0.1"), or "" with no labels.
  std::string LabelText(const LabelValues& values, const std::string& extra = "") const;
  void CheckArity(const LabelValues& values) const;

 private:
  const std::string name_, help_, type_;
  const std::vector<std::string> label_names_;
};

// Counters and gauges: one double per label set.
class ScalarFamily : public MetricFamily {
 public:
  using MetricFamily::MetricFamily;
  void Add(const LabelValues& labels, double delta);
  void Set(const LabelValues& labels, double value);
  // Drops every series (for info gauges whose labels change).
  void Clear();
  double Get(const LabelValues& labels) const;

 protected:
  void RenderSamples(std::string* out) const override;

 private:
  mutable std::mutex mutex_;  // guards values_
  std::map<LabelValues, double> values_;
};

class HistogramFamily : public MetricFamily {
 public:
  // `bounds`: ascending finite upper bounds; +Inf is implied.
  HistogramFamily(std::string name, std::string help, std::vector<std::string> label_names,
                  std::vector<double> bounds);
  void Observe(const LabelValues& labels, double value);
  // Replaces a series with a histogram kept elsewhere (the engine's cumulative one), so any
  // number of scrapes read the same samples instead of draining them. `bucket_counts` are per
  // bucket, not cumulative: one per bound, then +Inf.
  void SetCumulative(const LabelValues& labels, const std::vector<uint64_t>& bucket_counts,
                     double sum, uint64_t count);
  uint64_t Count(const LabelValues& labels) const;

 protected:
  void RenderSamples(std::string* out) const override;

 private:
  struct Series {
    std::vector<uint64_t> buckets;  // per bound, not cumulative; last = +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  const std::vector<double> bounds_;
  mutable std::mutex mutex_;  // guards series_
  std::map<LabelValues, Series> series_;
};

class MetricsRegistry {
 public:
  ScalarFamily* AddCounter(std::string name, std::string help,
                           std::vector<std::string> label_names = {});
  ScalarFamily* AddGauge(std::string name, std::string help,
                         std::vector<std::string> label_names = {});
  HistogramFamily* AddHistogram(std::string name, std::string help,
                                std::vector<std::string> label_names, std::vector<double> bounds);
  // The whole exposition, families in registration order.
  std::string Render() const;

 private:
  ScalarFamily* AddScalar(std::string name, std::string help, const char* type,
                          std::vector<std::string> label_names);

  mutable std::mutex mutex_;  // guards families_ (the families guard their own series)
  std::vector<std::unique_ptr<MetricFamily>> families_;
};

}  // namespace loraserve::server
