// Offline fusion of several LoRA adapters into one, following peft 0.13.2's
// LoraModel.add_weighted_adapter combination types, so a fused adapter can be stored and served
// like any upload. Pure math on parsed adapters: no I/O (peft_writer.h writes the result).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"

namespace loraserve {

// PEFT's combination_type values. "Factor-wise" types (linear, ties, dare_linear, dare_ties,
// magnitude_prune) merge the A and B factors separately with weights sqrt(w_i * s_i) and need equal
// ranks; cat stacks the factors (exact); the *_svd types merge the full deltas and re-factor them
// with a truncated SVD.
enum class FuseCombination {
  kLinear,
  kCat,
  kSvd,
  kTies,
  kTiesSvd,
  kDareLinear,
  kDareTies,
  kDareLinearSvd,
  kDareTiesSvd,
  kMagnitudePrune,
  kMagnitudePruneSvd,
};

// PEFT spelling ("dare_ties_svd"); InvalidArgument listing the valid names otherwise.
absl::StatusOr<FuseCombination> ParseFuseCombination(std::string_view name);
const char* FuseCombinationName(FuseCombination combination);

// TIES sign election: "total" sums the values, "frequency" counts the signs.
enum class MajoritySign { kTotal, kFrequency };

struct FuseSource {
  const LoraAdapter* adapter = nullptr;
  double weight = 1.0;
};

struct FuseOptions {
  FuseCombination combination = FuseCombination::kSvd;  // PEFT's default
  // Rank of the *_svd results; nullopt = the largest source `r`.
  std::optional<int> svd_rank;
  // PEFT's svd_clamp: the SVD factors are clamped to +-(this quantile, in [0, 1], of their
  // values); nullopt = no clamping.
  std::optional<double> svd_clamp;
  // Fraction of values kept by TIES, DARE and magnitude pruning, in (0, 1]; required by them.
  std::optional<double> density;
  MajoritySign majority_sign = MajoritySign::kTotal;
  // DARE's random drop; the same seed and sources give the same adapter on every platform.
  uint64_t seed = 0;
};

// Fuses `sources` (at least one; all parsed against the same base model) into a new adapter
// `new_id` whose every module has scaling 1 (lora_alpha = r), as PEFT's result does.
//
// Where this deliberately differs from peft 0.13.2 (each difference is a PEFT bug):
// - *_svd: the merged delta is sum_i w_i * s_i * B_i A_i. PEFT multiplies the already scaled
//   get_delta_weight() by w_i * s_i again, so its deltas carry s_i^2; with
//   alpha == r (s = 1) the two agree, otherwise PEFT's result equals ours for
//   weights w_i / s_i.
// - DARE rescales the kept values by 1 / density as the DARE paper and PEFT's docstring say;
//   PEFT 0.13.2 discards the result of its torch.div, so it never rescales.
// - The result never inherits use_rslora or rank/alpha patterns from the first source. Like PEFT, a
//   single source is always fused with "linear".
absl::StatusOr<LoraAdapter> FuseAdapters(std::string_view new_id,
                                         std::span<const FuseSource> sources,
                                         const FuseOptions& options);

}  // namespace loraserve
