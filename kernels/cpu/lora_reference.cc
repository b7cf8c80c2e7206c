// The two yardsticks for the LoRA kernels: a scalar reference (the tests' oracle) and the naive
// per-request loop of two GEMVs per row (the benchmark's baseline). Neither is used for serving.
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/lora.h"
#include "kernels/cpu/lora_microkernels.h"

namespace loraserve::kernels {
namespace {

float Element(LoraDtype dtype, const float* row, int64_t i) {
  switch (dtype) {
    case LoraDtype::kBF16:
      return lora_internal::LoadElement<LoraDtype::kBF16>(row, i);
    case LoraDtype::kF16:
      return lora_internal::LoadElement<LoraDtype::kF16>(row, i);
    default:
      return row[i];
  }
}

}  // namespace

void LoraApplyReference(const float* pool, const float* x, int64_t ldx, float* y, int64_t ldy,
                        int in_dim, int out_dim, std::span<const LoraSegment> segments,
                        std::span<const LoraRef> refs) {
  std::vector<double> delta(out_dim);
  for (const LoraSegment& s : segments) {
    if (s.refs_begin == s.refs_end && s.out_scale == nullptr) continue;
    for (int row = s.row_begin; row < s.row_end; ++row) {
      const float* xr = x + row * ldx;
      float* yr = y + row * ldy;
      std::fill(delta.begin(), delta.end(), 0.0);
      for (int ref = s.refs_begin; ref < s.refs_end; ++ref) {
        const LoraRef& lr = refs[ref];
        for (int k = 0; k < lr.rank; ++k) {
          const float* a = pool + lr.a_rows[k];
          const float* b = pool + lr.b_cols[k];
          double shrunk = 0.0;
          for (int i = 0; i < in_dim; ++i) shrunk += static_cast<double>(Element(lr.dtype, a, i)) * xr[i];
          shrunk *= lr.scale;
          for (int j = 0; j < out_dim; ++j) delta[j] += shrunk * Element(lr.dtype, b, j);
        }
      }
      for (int j = 0; j < out_dim; ++j) {
        double value = static_cast<double>(yr[j]) + delta[j];
        if (s.out_scale != nullptr) value *= s.out_scale[j];
        yr[j] = static_cast<float>(value);
      }
    }
  }
}

void NaivePerRequestLora(const float* x, int64_t ldx, float* y, int64_t ldy, int in_dim,
                         int out_dim, std::span<const int> row_adapter,
                         std::span<const DenseLora> adapters) {
  int max_rank = 0;
  for (const DenseLora& d : adapters) max_rank = std::max(max_rank, d.rank);
  std::vector<float> v(max_rank);
  for (size_t row = 0; row < row_adapter.size(); ++row) {
    if (row_adapter[row] < 0) continue;
    const DenseLora& d = adapters[row_adapter[row]];
    cblas_sgemv(CblasRowMajor, CblasNoTrans, d.rank, in_dim, 1.0f, d.a, in_dim, x + row * ldx, 1,
                0.0f, v.data(), 1);
    cblas_sgemv(CblasRowMajor, CblasNoTrans, out_dim, d.rank, d.scale, d.b, d.rank, v.data(), 1,
                1.0f, y + row * ldy, 1);
  }
}

}  // namespace loraserve::kernels
