// Portable LoRA micro-kernels: plain loops the compiler can vectorise for the baseline ISA.
// Used on CPUs without AVX2+FMA and by the tests, which check them against the reference.
#include <cstdint>

#include "kernels/cpu/lora_microkernels.h"

namespace loraserve::kernels::lora_internal {
namespace {

// Eight partial sums per dot product so the loop vectorises without reassociation flags.
constexpr int kLanes = 8;

template <LoraDtype D>
void Shrink(const void* const* a, int nk, const float* x, int64_t ldx, int nr, int i0, int i1,
            float scale, bool accumulate, float* out, int64_t ldo) {
  for (int r = 0; r < nr; ++r) {
    const float* xr = x + r * ldx;
    for (int k = 0; k < nk; ++k) {
      const void* ak = a[k];
      float lanes[kLanes] = {};
      int i = i0;
      for (; i + kLanes <= i1; i += kLanes)
        for (int l = 0; l < kLanes; ++l) lanes[l] += LoadElement<D>(ak, i + l) * xr[i + l];
      float s = 0.0f;
      for (int l = 0; l < kLanes; ++l) s += lanes[l];
      for (; i < i1; ++i) s += LoadElement<D>(ak, i) * xr[i];
      out[r * ldo + k] = accumulate ? out[r * ldo + k] + scale * s : scale * s;
    }
  }
}

template <LoraDtype D>
void Expand(const void* const* b, int nk, const float* v, int64_t ldv, int nr, int j0, int j1,
            const float* out_scale, float* y, int64_t ldy) {
  for (int r = 0; r < nr; ++r) {
    float* yr = y + r * ldy;
    for (int k = 0; k < nk; ++k) {
      const float vk = v[r * ldv + k];
      const void* bk = b[k];
      for (int j = j0; j < j1; ++j) yr[j] += vk * LoadElement<D>(bk, j);
    }
    if (out_scale != nullptr)
      for (int j = j0; j < j1; ++j) yr[j] *= out_scale[j];
  }
}

}  // namespace

MicroKernels PortableMicroKernels() {
  return {{&Shrink<LoraDtype::kF32>, &Shrink<LoraDtype::kBF16>, &Shrink<LoraDtype::kF16>},
          {&Expand<LoraDtype::kF32>, &Expand<LoraDtype::kBF16>, &Expand<LoraDtype::kF16>},
          {nullptr, nullptr, nullptr}};
}

}  // namespace loraserve::kernels::lora_internal
