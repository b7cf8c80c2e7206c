// Random paged-attention steps shared by the CPU table tests and the GPU parity test: several
// sequences mixing decode rows and prefill chunks at positions that cross pages and split-KV
// partitions, pages scattered over the pool, random keys, values and queries.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels::cuda::testing {

// One sequence of the step: `rows` new rows at positions [cached, cached + rows).
struct SeqShape {
  int cached = 0;
  int rows = 1;
};

struct AttentionShape {
  int num_heads = 8;
  int num_kv_heads = 2;
  int head_dim = 64;
  int block_size = 16;
  int num_layers = 2;
  int layer = 1;
  // Rows left out of every sequence, between the sequences (the kernels must not touch them).
  int gap_rows = 1;
};

struct AttentionProblem {
  AttentionShape shape;
  KvPageLayout layout;
  int32_t num_pages = 0;
  std::vector<float> pool;
  std::vector<std::vector<int32_t>> block_tables;  // one per sequence
  std::vector<AttentionSeq> seqs;
  std::vector<int32_t> positions;  // one per row; gap rows have position 0
  std::vector<float> q;            // rows x ldq
  int64_t ldq = 0;
  int64_t ldo = 0;  // out's leading dimension (wider than a row, to test ld)
  int rows() const { return static_cast<int>(positions.size()); }
  int width() const { return shape.num_heads * shape.head_dim; }
};

inline AttentionProblem MakeAttentionProblem(const AttentionShape& shape,
                                             std::span<const SeqShape> seq_shapes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  AttentionProblem p;
  p.shape = shape;
  p.layout = {shape.block_size, shape.num_layers, shape.num_kv_heads * shape.head_dim};
  for (const SeqShape& s : seq_shapes) {
    p.num_pages += (s.cached + s.rows + shape.block_size - 1) / shape.block_size;
  }
  p.num_pages += 3;  // pages no sequence owns
  std::vector<int32_t> pages(p.num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);
  p.pool.resize(static_cast<size_t>(p.num_pages * p.layout.page_floats()));
  for (float& v : p.pool) v = uniform(rng);
  size_t next_page = 0;
  for (const SeqShape& s : seq_shapes) {
    const int blocks = (s.cached + s.rows + shape.block_size - 1) / shape.block_size;
    p.block_tables.emplace_back(pages.begin() + next_page, pages.begin() + next_page + blocks);
    next_page += blocks;
  }
  for (size_t i = 0; i < seq_shapes.size(); ++i) {
    AttentionSeq seq;
    seq.token_begin = p.rows();
    for (int r = 0; r < seq_shapes[i].rows; ++r) p.positions.push_back(seq_shapes[i].cached + r);
    seq.token_end = p.rows();
    seq.block_table = p.block_tables[i].data();
    p.seqs.push_back(seq);
    for (int g = 0; g < shape.gap_rows && i + 1 < seq_shapes.size(); ++g) p.positions.push_back(0);
  }
  p.ldq = p.width() + 5;
  p.ldo = p.width() + 3;
  p.q.resize(static_cast<size_t>(p.rows() * p.ldq));
  // Queries of +-2 make the softmax peaked enough that the max subtraction matters.
  for (float& v : p.q) v = 2.0f * uniform(rng);
  return p;
}

// Decode rows at positions before, on and after partition and page boundaries, a prefill chunk
// after a cached prefix, and a fresh prefill.
inline std::vector<SeqShape> MixedSeqShapes() {
  return {{700, 1}, {500, 40}, {255, 1}, {256, 1}, {0, 1}, {0, 20}, {1100, 1}, {15, 2}};
}

}  // namespace loraserve::kernels::cuda::testing
