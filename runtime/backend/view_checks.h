// The argument checks every backend makes before an op touches memory, written once so the CPU
// and CUDA backends reject the same views with the same INVALID_ARGUMENT messages (each names the
// op, and the argument where there is one).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/plan/kv_layout.h"
#include "kernels/plan/lora_plan.h"
#include "runtime/backend/backend.h"

namespace loraserve {

// An fp32 view with data (unless empty) and ld >= cols.
absl::Status CheckF32(const Tensor& t, const char* op, const char* name);
// Equal rows and cols.
absl::Status CheckSame(const Tensor& a, const Tensor& b, const char* op);
// The shape holds exactly `values` elements.
absl::Status CheckElements(const std::vector<int64_t>& shape, size_t values);
// y = x W^T for a weight of `shape` ([out x in]): both fp32, and the shapes fit.
absl::Status CheckLinearViews(const Tensor& x, const std::vector<int64_t>& shape, const Tensor& y);
// x and y fp32, every segment's rows inside both, and its refs inside the plan's.
absl::Status CheckLoraSegments(const Tensor& x, const Tensor& y, const LoraModulePlan& plan);
// x holds num_heads x head_dim per row, one position per row, and inv_freq head_dim / 2 entries.
absl::Status CheckRopeViews(const Tensor& x, int num_heads, int head_dim,
                            std::span<const int32_t> positions, int64_t inv_freq_elements);
// k and v alike, as wide as the layout's kv_dim, and a KV block fits one pool page.
absl::Status CheckKvViews(const Tensor& k, const Tensor& v, const kernels::KvPageLayout& layout,
                          int64_t page_units);

}  // namespace loraserve
