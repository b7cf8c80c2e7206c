// The timed window of a decode benchmark run, from per-request token timestamps: it opens when
// the last request receives its first token (every prefill is done, every request decodes) and
// closes at the last token, and counts the tokens emitted strictly inside it. Prefill, queueing
// and the ragged tail of requests that started late stay out of the rate.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace loraserve {

struct DecodeWindow {
  double begin = 0;  // seconds, on the timestamps' clock
  double end = 0;
  int64_t tokens = 0;
  double seconds = 0;
  double tokens_per_s = 0;  // 0 when the window is empty (every request had one token at most)
};

// `token_times[i]`: request i's token timestamps in seconds, ascending. A request without any
// token leaves the window empty: the run never reached the state the window measures.
inline DecodeWindow MeasureDecodeWindow(const std::vector<std::vector<double>>& token_times) {
  DecodeWindow w;
  if (token_times.empty()) return w;
  bool first = true;
  for (const std::vector<double>& times : token_times) {
    if (times.empty()) return DecodeWindow{};
    w.begin = first ? times.front() : std::max(w.begin, times.front());
    w.end = first ? times.back() : std::max(w.end, times.back());
    first = false;
  }
  for (const std::vector<double>& times : token_times) {
    w.tokens +=
        static_cast<int64_t>(times.end() - std::upper_bound(times.begin(), times.end(), w.begin));
  }
  w.seconds = w.end - w.begin;
  if (w.tokens > 0 && w.seconds > 0) w.tokens_per_s = static_cast<double>(w.tokens) / w.seconds;
  return w;
}

}  // namespace loraserve
