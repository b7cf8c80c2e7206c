// Rotary position embedding in the Hugging Face "rotate_half" layout: dimension i pairs with
// i + head_dim/2. Frequencies (already scaled, e.g. Llama-3 rope_scaling) come from the caller.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

// Rotates `rows` rows of `num_heads * head_dim` values in place; row r uses positions[r].
// inv_freq has head_dim/2 entries.
void ApplyRope(float* x, int64_t ldx, int rows, int num_heads, int head_dim,
               const int32_t* positions, const float* inv_freq);

}  // namespace loraserve::kernels
