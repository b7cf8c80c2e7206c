#include "server/metrics_registry.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "absl/strings/str_cat.h"

namespace loraserve::server {

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", value);
  return buf;
}

MetricFamily::MetricFamily(std::string name, std::string help, std::string type,
                           std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(std::move(type)),
      label_names_(std::move(label_names)) {}

void MetricFamily::Render(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n");
  absl::StrAppend(out, "# TYPE ", name_, " ", type_, "\n");
  RenderSamples(out);
}

void MetricFamily::CheckArity(const LabelValues& values) const {
  // A programming error, not an input error: label sets are fixed at registration.
  if (values.size() != label_names_.size()) {
    throw std::logic_error(absl::StrCat("metric ", name_, " takes ", label_names_.size(),
                                        " labels, got ", values.size()));
  }
}

std::string MetricFamily::LabelText(const LabelValues& values, const std::string& extra) const {
  if (values.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, label_names_[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, values.empty() ? "" : ",", extra);
  return out + "}";
}

void ScalarFamily::Add(const LabelValues& labels, double delta) {
  CheckArity(labels);
  std::lock_guard lock(mutex_);
  values_[labels] += delta;
}

void ScalarFamily::Set(const LabelValues& labels, double value) {
  CheckArity(labels);
  std::lock_guard lock(mutex_);
  values_[labels] = value;
}

void ScalarFamily::Clear() {
  std::lock_guard lock(mutex_);
  values_.clear();
}

double ScalarFamily::Get(const LabelValues& labels) const {
  std::lock_guard lock(mutex_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void ScalarFamily::RenderSamples(std::string* out) const {
  std::lock_guard lock(mutex_);
  for (const auto& [labels, value] : values_) {
    absl::StrAppend(out, name(), LabelText(labels), " ", FormatValue(value), "\n");
  }
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> bounds)
    : MetricFamily(std::move(name), std::move(help), "histogram", std::move(label_names)),
      bounds_(std::move(bounds)) {}

void HistogramFamily::Observe(const LabelValues& labels, double value) {
  CheckArity(labels);
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  std::lock_guard lock(mutex_);
  Series& series = series_[labels];
  if (series.buckets.empty()) series.buckets.assign(bounds_.size() + 1, 0);
  ++series.buckets[bucket];
  series.sum += value;
  ++series.count;
}

void HistogramFamily::SetCumulative(const LabelValues& labels,
                                    const std::vector<uint64_t>& bucket_counts, double sum,
                                    uint64_t count) {
  CheckArity(labels);
  // A programming error: the source histogram must use this family's bounds.
  if (bucket_counts.size() != bounds_.size() + 1) {
    throw std::logic_error(absl::StrCat("histogram ", name(), " has ", bounds_.size() + 1,
                                        " buckets, got ", bucket_counts.size()));
  }
  std::lock_guard lock(mutex_);
  series_[labels] = Series{bucket_counts, sum, count};
}

uint64_t HistogramFamily::Count(const LabelValues& labels) const {
  std::lock_guard lock(mutex_);
  auto it = series_.find(labels);
  return it == series_.end() ? 0 : it->second.count;
}

void HistogramFamily::RenderSamples(std::string* out) const {
  std::lock_guard lock(mutex_);
  for (const auto& [labels, series] : series_) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += series.buckets[i];
      const std::string le =
          absl::StrCat("le=\"", i < bounds_.size() ? FormatValue(bounds_[i]) : "+Inf", "\"");
      absl::StrAppend(out, name(), "_bucket", LabelText(labels, le), " ", cumulative, "\n");
    }
    absl::StrAppend(out, name(), "_sum", LabelText(labels), " ", FormatValue(series.sum), "\n");
    absl::StrAppend(out, name(), "_count", LabelText(labels), " ", series.count, "\n");
  }
}

ScalarFamily* MetricsRegistry::AddScalar(std::string name, std::string help, const char* type,
                                         std::vector<std::string> label_names) {
  auto family = std::make_unique<ScalarFamily>(std::move(name), std::move(help), type,
                                               std::move(label_names));
  ScalarFamily* raw = family.get();
  if (raw->label_count() == 0) raw->Set({}, 0);  // unlabelled series exist from the start
  std::lock_guard lock(mutex_);
  families_.push_back(std::move(family));
  return raw;
}

ScalarFamily* MetricsRegistry::AddCounter(std::string name, std::string help,
                                          std::vector<std::string> label_names) {
  return AddScalar(std::move(name), std::move(help), "counter", std::move(label_names));
}

ScalarFamily* MetricsRegistry::AddGauge(std::string name, std::string help,
                                        std::vector<std::string> label_names) {
  return AddScalar(std::move(name), std::move(help), "gauge", std::move(label_names));
}

HistogramFamily* MetricsRegistry::AddHistogram(std::string name, std::string help,
                                               std::vector<std::string> label_names,
                                               std::vector<double> bounds) {
  auto family = std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                                  std::move(label_names), std::move(bounds));
  HistogramFamily* raw = family.get();
  std::lock_guard lock(mutex_);
  families_.push_back(std::move(family));
  return raw;
}

std::string MetricsRegistry::Render() const {
  std::string out;
  std::lock_guard lock(mutex_);
  for (const auto& family : families_) family->Render(&out);
  return out;
}

}  // namespace loraserve::server
