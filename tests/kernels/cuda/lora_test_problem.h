// Random LoRA problems over a paged pool for the CUDA table tests and the GPU parity test: rank
// rows and DoRA factors sit in shuffled pool cells (as the runtime's pages place them), rows are
// fp32, bf16 or fp16, and segments mix weighted sets (negative weights too), DoRA and base-only
// rows. The same bytes feed kernels/cpu's LoraApplyReference, the host emulation and the GPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "kernels/plan/lora_plan.h"

namespace loraserve::kernels::testing {

struct AdapterSpec {
  int rank;
  LoraDtype dtype = LoraDtype::kF32;
};

struct SegmentSpec {
  int rows;
  std::vector<std::pair<int, float>> adapters;  // (adapter index, request weight)
  bool dora = false;
};

struct LoraProblem {
  int in_dim = 0, out_dim = 0, rows = 0;
  int64_t ldx = 0, ldy = 0;
  std::vector<float> pool, x, y;
  std::vector<std::vector<int64_t>> a_rows, b_cols;  // per adapter: unit offsets
  std::vector<LoraRef> refs;
  std::vector<LoraSegment> segments;
};

// Random 16-bit values with magnitudes in [2^-9, 2), fp16 subnormals included.
inline uint16_t RandomHalfBits(LoraDtype dtype, std::mt19937& rng) {
  const uint32_t r = rng();
  const auto sign = static_cast<uint16_t>((r & 1u) << 15);
  if (dtype == LoraDtype::kBF16) {
    const auto exponent = static_cast<uint16_t>(118 + (r >> 1) % 10);
    return sign | static_cast<uint16_t>(exponent << 7) | static_cast<uint16_t>((r >> 8) & 0x7f);
  }
  const auto exponent = static_cast<uint16_t>((r >> 1) % 17);
  return sign | static_cast<uint16_t>(exponent << 10) | static_cast<uint16_t>((r >> 8) & 0x3ff);
}

inline LoraProblem MakeLoraProblem(int in_dim, int out_dim,
                                   const std::vector<AdapterSpec>& adapters,
                                   const std::vector<SegmentSpec>& specs, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  LoraProblem p;
  p.in_dim = in_dim;
  p.out_dim = out_dim;
  p.ldx = in_dim + 3;  // leading dimensions wider than the rows
  p.ldy = out_dim + 5;
  // Cells of a multiple of 4 units (16 B), the alignment the device pool keeps.
  const int64_t cell = (std::max(in_dim, out_dim) + 4) / 4 * 4;
  int cells = 0;
  for (const AdapterSpec& a : adapters) cells += 2 * a.rank;
  for (const SegmentSpec& s : specs) cells += s.dora ? 1 : 0;
  std::vector<int64_t> order(cells);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  p.pool.resize(static_cast<size_t>(cells * cell));
  for (float& v : p.pool) v = uniform(rng);
  int next = 0;
  auto fill_row = [&](int64_t off, int length, LoraDtype dtype) {
    if (dtype == LoraDtype::kF32) return;  // keeps the uniform floats already there
    std::vector<uint16_t> bits(length);
    for (uint16_t& b : bits) b = RandomHalfBits(dtype, rng);
    std::memcpy(p.pool.data() + off, bits.data(), bits.size() * sizeof(uint16_t));
  };
  for (const AdapterSpec& a : adapters) {
    p.a_rows.emplace_back();
    p.b_cols.emplace_back();
    for (int k = 0; k < a.rank; ++k) {
      p.a_rows.back().push_back(order[next++] * cell);
      p.b_cols.back().push_back(order[next++] * cell);
      fill_row(p.a_rows.back().back(), in_dim, a.dtype);
      fill_row(p.b_cols.back().back(), out_dim, a.dtype);
    }
  }
  for (const SegmentSpec& s : specs) p.rows += s.rows;
  p.x.resize(static_cast<size_t>(p.rows * p.ldx));
  p.y.resize(static_cast<size_t>(p.rows * p.ldy));
  for (float& v : p.x) v = uniform(rng);
  for (float& v : p.y) v = uniform(rng);
  int row = 0;
  for (const SegmentSpec& s : specs) {
    const int refs_begin = static_cast<int>(p.refs.size());
    for (auto [adapter, weight] : s.adapters) {
      const AdapterSpec& a = adapters[adapter];
      p.refs.push_back({a.rank, weight * 2.0f / a.rank, p.a_rows[adapter].data(),
                        p.b_cols[adapter].data(), a.dtype});
    }
    const float* out_scale = nullptr;
    if (s.dora) {
      float* dora = p.pool.data() + order[next++] * cell;
      for (int j = 0; j < out_dim; ++j) dora[j] = 0.5f + std::abs(uniform(rng));
      out_scale = dora;
    }
    p.segments.push_back(
        {row, row + s.rows, refs_begin, static_cast<int>(p.refs.size()), out_scale});
    row += s.rows;
  }
  return p;
}

// Ranks {1, 8, 16, 64, 256, 512} in fp32, bf16 and fp16, and segments covering decode (BGMV)
// and prefill (SGMV) tiles: single adapters, weighted sets with negative weights and mixed
// dtypes, DoRA with and without refs, and base-only rows.
inline std::vector<AdapterSpec> MixedAdapters() {
  return {{1, LoraDtype::kF32},  {8, LoraDtype::kBF16},   {16, LoraDtype::kF16},
          {64, LoraDtype::kF32}, {256, LoraDtype::kBF16}, {512, LoraDtype::kF16},
          {16, LoraDtype::kF32}, {64, LoraDtype::kBF16}};
}

inline std::vector<SegmentSpec> MixedSegments() {
  return {
      {1, {{0, 1.0f}}},
      {3, {}},                                   // base-only
      {2, {{5, 0.7f}}},                          // rank 512, fp16
      {1, {{1, 1.0f}, {3, -0.5f}, {4, 0.25f}}},  // weighted, negative, mixed dtypes
      {5, {{2, 1.0f}}, true},                    // DoRA
      {2, {}, true},                             // DoRA without refs
      {9, {{6, -1.0f}, {7, 2.0f}}},              // two BGMV row tiles
      {40, {{4, 1.0f}, {2, -0.3f}}, true},       // SGMV: 32 + 8 rows
      {33, {{5, 0.5f}, {0, 1.5f}, {6, -2.0f}}},  // SGMV, rank 529 in total
  };
}

}  // namespace loraserve::kernels::testing
