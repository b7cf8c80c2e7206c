// Mirrors transformers' _compute_default_rope_parameters / _compute_llama3_parameters.
#include "runtime/rope_frequencies.h"

#include <cmath>
#include <numbers>

namespace loraserve {

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int dim = config.head_dim;
  std::vector<float> inv_freq(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    // transformers computes base ** (2i/dim) in fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv_freq[i] = 1.0f / std::pow(static_cast<float>(config.rope_theta), exponent);
  }
  if (!config.rope_scaling) return inv_freq;
  const RopeScaling& s = *config.rope_scaling;
  if (s.kind == RopeScaling::Kind::kLinear) {
    for (float& f : inv_freq) f = static_cast<float>(f / s.factor);
    return inv_freq;
  }
  const double low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (float& f : inv_freq) {
    const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
    const float scaled = wavelen > low_freq_wavelen ? static_cast<float>(f / s.factor) : f;
    if (wavelen < high_freq_wavelen || wavelen > low_freq_wavelen) {
      f = scaled;
      continue;
    }
    const float smooth = static_cast<float>(
        (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
        (s.high_freq_factor - s.low_freq_factor));
    f = (1.0f - smooth) * static_cast<float>(scaled / s.factor) + smooth * scaled;
  }
  return inv_freq;
}

}  // namespace loraserve
