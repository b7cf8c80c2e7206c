// spdlog set-up for `serve`: text lines for people, or one JSON object per line for log
// pipelines (message and fields escaped properly, which a pattern string cannot do).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace loraserve::server {

// `format`: "text" or "json"; `level`: trace, debug, info, warn, error.
absl::Status SetupLogging(const std::string& format, const std::string& level);

// JSON string escaping (quotes, backslash, control characters).
std::string JsonEscape(const std::string& text);

}  // namespace loraserve::server
