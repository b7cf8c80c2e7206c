// PagedAttention against a double-precision reference on every inner loop this CPU runs
// (AVX-512, AVX2, portable): GQA groups of 1 to 5 query heads per KV head (tiles of 4 plus a
// remainder), head sizes with and without vector tails, contexts that end mid-page, block tables
// that scatter a sequence over the pool, decode rows and causal prefill rows in one call.
#include "kernels/cpu/paged_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/lora.h"

namespace loraserve::kernels {
namespace {

struct Shape {
  int num_heads, num_kv_heads, head_dim, block_size;
};

struct Variant {
  const char* name;
  detail::AttentionOptions options;
  bool supported;
};

// Only the inner loops this CPU runs (the portable one always).
std::vector<Variant> Variants() {
  std::vector<Variant> all = {{"avx512", {true, true}, detail::CpuHasAvx512()},
                              {"avx2", {false, true}, detail::CpuHasAvx2Fma()},
                              {"portable", {false, false}, true}};
  std::erase_if(all, [](const Variant& v) { return !v.supported; });
  return all;
}

void ExpectMatchesReference(const Shape& shape, const detail::AttentionOptions& options) {
  const int layers = 2, layer = 1;
  const int kv_dim = shape.num_kv_heads * shape.head_dim;
  const KvPageLayout layout{shape.block_size, layers, kv_dim};
  // Sequence 0 decodes one row at position 37; sequence 1 prefills rows at positions 0..20;
  // sequence 2 decodes at position block_size - 1 (exactly one full page).
  const std::vector<std::vector<int32_t>> row_positions = {
      {37}, [] { std::vector<int32_t> p(21); std::iota(p.begin(), p.end(), 0); return p; }(),
      {shape.block_size - 1}};
  const int num_pages = 24;  // the three sequences need at most 17 pages (block size 4)
  std::mt19937 rng(shape.num_heads * 100 + shape.head_dim);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> pool(static_cast<size_t>(layout.page_floats()) * num_pages);
  for (float& v : pool) v = 2.0f * uniform(rng);
  std::vector<int32_t> page_order(num_pages);
  std::iota(page_order.begin(), page_order.end(), 0);
  std::shuffle(page_order.begin(), page_order.end(), rng);
  std::vector<std::vector<int32_t>> tables;
  int next_page = 0;
  std::vector<AttentionSeq> seqs;
  std::vector<int32_t> positions;
  for (const auto& rows : row_positions) {
    const int pages = rows.back() / shape.block_size + 1;
    tables.emplace_back(page_order.begin() + next_page, page_order.begin() + next_page + pages);
    next_page += pages;
  }
  for (size_t s = 0; s < row_positions.size(); ++s) {
    const int begin = static_cast<int>(positions.size());
    positions.insert(positions.end(), row_positions[s].begin(), row_positions[s].end());
    seqs.push_back({begin, static_cast<int>(positions.size()), tables[s].data()});
  }
  const int rows = static_cast<int>(positions.size());
  const int q_dim = shape.num_heads * shape.head_dim;
  const int64_t ld = q_dim + 7;
  std::vector<float> q(rows * ld);
  for (float& v : q) v = uniform(rng);
  std::vector<float> out(rows * ld, 123.0f);
  detail::PagedAttention(pool.data(), layout, layer, seqs, positions.data(), q.data(), ld,
                         shape.num_heads, shape.num_kv_heads, shape.head_dim, out.data(), ld,
                         options);
  const int group = shape.num_heads / shape.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(shape.head_dim));
  for (const AttentionSeq& seq : seqs) {
    for (int r = seq.token_begin; r < seq.token_end; ++r) {
      const int ctx = positions[r] + 1;
      for (int h = 0; h < shape.num_heads; ++h) {
        const int kv_off = (h / group) * shape.head_dim;
        std::vector<double> w(ctx);
        double max_w = -INFINITY;
        for (int p = 0; p < ctx; ++p) {
          const float* k = pool.data() +
                           layout.Offset(seq.block_table[p / shape.block_size], layer, 0,
                                         p % shape.block_size) + kv_off;
          double dot = 0;
          for (int i = 0; i < shape.head_dim; ++i) dot += double{q[r * ld + h * shape.head_dim + i]} * k[i];
          w[p] = dot * scale;
          max_w = std::max(max_w, w[p]);
        }
        double denom = 0;
        for (double& v : w) denom += (v = std::exp(v - max_w));
        for (int i = 0; i < shape.head_dim; ++i) {
          double want = 0;
          for (int p = 0; p < ctx; ++p) {
            want += w[p] / denom *
                    pool[layout.Offset(seq.block_table[p / shape.block_size], layer, 1,
                                       p % shape.block_size) + kv_off + i];
          }
          ASSERT_NEAR(out[r * ld + h * shape.head_dim + i], want, 2e-5)
              << "row " << r << " head " << h << " element " << i;
        }
      }
      for (int64_t i = q_dim; i < ld; ++i) EXPECT_EQ(out[r * ld + i], 123.0f) << "padding";
    }
  }
}

class PagedAttentionTest : public testing::TestWithParam<Variant> {};

TEST_P(PagedAttentionTest, MatchesReference) {
  for (const Shape& shape : {Shape{9, 3, 64, 16},   // SmolLM2: group 3, 4 zmm / 8 ymm per head
                             Shape{8, 2, 128, 16},  // Llama: group 4, long heads
                             Shape{10, 2, 40, 8},   // group 5 (a tile of 4 + 1), vector tails
                             Shape{4, 4, 24, 4},    // MHA (group 1), 24 = 16 + 8 lanes
                             Shape{2, 1, 7, 16}}) {  // shorter than one vector
    SCOPED_TRACE(testing::Message() << shape.num_heads << "/" << shape.num_kv_heads << " heads, "
                                    << shape.head_dim << " dims, block " << shape.block_size);
    ExpectMatchesReference(shape, GetParam().options);
  }
}

// Large score gaps: the softmax must subtract the max before exp (no overflow to inf or NaN) and
// weights far below the max must vanish rather than turn denormal or negative.
TEST_P(PagedAttentionTest, ExtremeScoresStayFinite) {
  const int head_dim = 32, block = 16, ctx = 40;
  const KvPageLayout layout{block, 1, head_dim};
  std::vector<float> pool(static_cast<size_t>(layout.page_floats()) * 3, 0.0f);
  const int32_t table[3] = {2, 0, 1};
  for (int p = 0; p < ctx; ++p) {
    float* k = pool.data() + layout.Offset(table[p / block], 0, 0, p % block);
    float* v = pool.data() + layout.Offset(table[p / block], 0, 1, p % block);
    k[0] = p == 17 ? 400.0f : -400.0f + p;  // position 17 dominates by e^(~800 / sqrt(32))
    for (int i = 0; i < head_dim; ++i) v[i] = static_cast<float>(p);
  }
  std::vector<float> q(head_dim, 0.0f), out(head_dim, -1.0f);
  q[0] = 1.0f;
  const AttentionSeq seq{0, 1, table};
  const int32_t position = ctx - 1;
  detail::PagedAttention(pool.data(), layout, 0, {&seq, 1}, &position, q.data(), head_dim, 1, 1,
                         head_dim, out.data(), head_dim, GetParam().options);
  for (int i = 0; i < head_dim; ++i) EXPECT_FLOAT_EQ(out[i], 17.0f) << i;
}

INSTANTIATE_TEST_SUITE_P(Isa, PagedAttentionTest, testing::ValuesIn(Variants()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace loraserve::kernels
