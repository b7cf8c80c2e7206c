// Internal to paged_attention.cc: the per-ISA inner loop of decode and prefill attention, for one
// query row and every query head of one KV head's group. Grouped heads share each K and V vector
// as it is loaded, so a GQA model reads its cache once per group, not once per query head.
// attention_avx512.cc, attention_avx2.cc and attention_portable.cc provide the same function.
#pragma once

#include <cstdint>

#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels::attention_internal {

struct AttendArgs {
  const float* pool = nullptr;
  KvPageLayout layout;
  int layer = 0;
  const int32_t* block_table = nullptr;
  int ctx = 0;         // positions [0, ctx) of the sequence are attended to
  int kv_offset = 0;   // the KV head's first element within a K or V vector
  const float* q = nullptr;  // group x head_dim, heads contiguous
  int group = 1;       // query heads sharing this KV head
  int head_dim = 0;
  float scale = 1.0f;  // 1 / sqrt(head_dim)
  float* scores = nullptr;  // scratch: group x ctx
  float* out = nullptr;     // group x head_dim, heads contiguous
};

using AttendFn = void (*)(const AttendArgs& args);

void PortableAttend(const AttendArgs& args);
// Only call when the CPU has the ISA (kernels::detail::CpuHasAvx2Fma / CpuHasAvx512).
AttendFn Avx2Attend();
AttendFn Avx512Attend();

}  // namespace loraserve::kernels::attention_internal
