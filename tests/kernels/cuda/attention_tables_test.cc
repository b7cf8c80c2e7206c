// The CUDA attention tables on the CPU: the step -> table builder, the index math the kernels
// use (layout, partitions, pool offsets, partial slots, grids, tail neutralisation), capacity
// and validation errors, and a host emulation of the split-KV partition and merge kernels
// (same index functions, same arithmetic order) against kernels/cpu's PagedAttention and a
// direct double-precision softmax. Runs without nvcc or a GPU.
#include "kernels/cuda/attention_tables.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/paged_attention.h"
#include "kernels/cuda/attention_table_builder.h"
#include "tests/kernels/cuda/attention_test_problem.h"

namespace loraserve::kernels::cuda {
namespace {

using testing::AttentionProblem;
using testing::AttentionShape;
using testing::MakeAttentionProblem;
using testing::MixedSeqShapes;
using testing::SeqShape;

// Host memory laid out like the device table buffer, pre-filled with increasing words so an
// entry the builder forgets to write is visible (a forgotten item would not be empty by luck).
struct TableBuffer {
  explicit TableBuffer(const AttentionTableCapacity& capacity) {
    bytes = AttentionTableLayoutFor(capacity).bytes;
    storage.reset(static_cast<char*>(std::aligned_alloc(
        kAttentionTableAlign, static_cast<size_t>(bytes + kAttentionTableAlign))));
    for (int64_t i = 0; i + 4 <= bytes; i += 4) {
      const auto word = static_cast<int32_t>(i / 4 + 1);
      std::memcpy(storage.get() + i, &word, sizeof(word));
    }
    tables = AttentionTablesAt(storage.get(), capacity);
  }
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> storage;
  int64_t bytes = 0;
  AttentionTables tables{};
};

AttentionTableCapacity WithSlack(const AttentionTableCounts& n, int slack) {
  return {n.seqs + slack, n.rows + slack, n.blocks + slack, n.items + slack};
}

absl::StatusOr<AttentionTableCounts> Build(const AttentionProblem& p, const AttentionTables& t) {
  return BuildAttentionTables(p.seqs, p.positions, p.shape.block_size, p.num_pages, t);
}

// The partition kernel and the merge kernel of attention.cu, one CTA at a time, in the same
// order of operations where it decides the result (per-partition exact max, exp-sum, merge in
// item order); the dot products and sums run sequentially here rather than as warp trees.
std::vector<float> EmulatePagedAttention(const AttentionProblem& p, const AttentionTables& t,
                                         std::vector<float> out) {
  const AttentionShape& s = p.shape;
  const int group = s.num_heads / s.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  std::vector<float> scratch(
      static_cast<size_t>(AttentionScratchFloats(t.capacity, s.num_heads, s.head_dim)), NAN);
  const int64_t v_shift = AttentionValueShift(p.layout);
  for (int32_t it = 0; it < t.capacity.items; ++it) {
    const AttentionWorkItem item = t.items[it];
    if (AttentionIsEmpty(item)) continue;
    const AttentionSeqEntry seq = t.seqs[item.seq];
    const int n = item.kv_end - item.kv_begin;
    EXPECT_LE(n, kAttentionPartition);
    for (int kv_head = 0; kv_head < s.num_kv_heads; ++kv_head) {
      std::vector<int64_t> k_off(n);
      for (int j = 0; j < n; ++j) {
        k_off[j] = AttentionKvOffset(p.layout, t.block_table, seq, s.layer, 0, item.kv_begin + j,
                                     kv_head, s.head_dim);
      }
      for (int g = 0; g < group; ++g) {
        const int head = kv_head * group + g;
        const float* q = p.q.data() + item.row * p.ldq + int64_t{head} * s.head_dim;
        std::vector<float> ps(n);
        float m = -INFINITY;
        for (int j = 0; j < n; ++j) {
          const float* k = p.pool.data() + k_off[j];
          float dot = 0.0f;
          for (int d = 0; d < s.head_dim; ++d) dot = std::fma(q[d], k[d], dot);
          ps[j] = dot * scale;
          m = std::max(m, ps[j]);
        }
        float l = 0.0f;
        for (int j = 0; j < n; ++j) {
          ps[j] = std::exp(ps[j] - m);
          l += ps[j];
        }
        scratch[AttentionPartialMaxIndex(t.capacity, it, head, s.num_heads, s.head_dim)] = m;
        scratch[AttentionPartialSumIndex(t.capacity, it, head, s.num_heads, s.head_dim)] = l;
        for (int d = 0; d < s.head_dim; ++d) {
          float acc = 0.0f;
          for (int j = 0; j < n; ++j) acc = std::fma(ps[j], p.pool[k_off[j] + v_shift + d], acc);
          scratch[AttentionPartialOutIndex(it, head, s.num_heads, s.head_dim) + d] = acc;
        }
      }
    }
  }
  for (int row = 0; row < t.capacity.rows; ++row) {
    const AttentionRowItems items = t.row_items[row];
    if (AttentionIsEmpty(items)) continue;
    for (int head = 0; head < s.num_heads; ++head) {
      float m = -INFINITY;
      for (int32_t i = items.item_begin; i < items.item_end; ++i) {
        m = std::max(
            m, scratch[AttentionPartialMaxIndex(t.capacity, i, head, s.num_heads, s.head_dim)]);
      }
      float l = 0.0f;
      for (int32_t i = items.item_begin; i < items.item_end; ++i) {
        const float mi =
            scratch[AttentionPartialMaxIndex(t.capacity, i, head, s.num_heads, s.head_dim)];
        l = std::fma(
            scratch[AttentionPartialSumIndex(t.capacity, i, head, s.num_heads, s.head_dim)],
            AttentionRescale(mi, m), l);
      }
      for (int d = 0; d < s.head_dim; ++d) {
        float sum = 0.0f;
        for (int32_t i = items.item_begin; i < items.item_end; ++i) {
          const float mi =
              scratch[AttentionPartialMaxIndex(t.capacity, i, head, s.num_heads, s.head_dim)];
          sum = std::fma(scratch[AttentionPartialOutIndex(i, head, s.num_heads, s.head_dim) + d],
                         AttentionRescale(mi, m), sum);
        }
        out[row * p.ldo + int64_t{head} * s.head_dim + d] = sum / l;
      }
    }
  }
  return out;
}

// softmax(q K^T / sqrt(d)) V in double, straight from the host block tables.
std::vector<double> DirectAttention(const AttentionProblem& p, int row, int head) {
  const AttentionShape& s = p.shape;
  const AttentionSeq* seq = nullptr;
  for (const AttentionSeq& candidate : p.seqs) {
    if (row >= candidate.token_begin && row < candidate.token_end) seq = &candidate;
  }
  const int kv_head = head / (s.num_heads / s.num_kv_heads);
  const int ctx = p.positions[row] + 1;
  const float* q = p.q.data() + row * p.ldq + int64_t{head} * s.head_dim;
  std::vector<double> scores(ctx);
  double m = -INFINITY;
  for (int pos = 0; pos < ctx; ++pos) {
    const float* k =
        p.pool.data() +
        p.layout.Offset(seq->block_table[pos / s.block_size], s.layer, 0, pos % s.block_size) +
        kv_head * s.head_dim;
    double dot = 0.0;
    for (int d = 0; d < s.head_dim; ++d) dot += double{q[d]} * k[d];
    scores[pos] = dot / std::sqrt(static_cast<double>(s.head_dim));
    m = std::max(m, scores[pos]);
  }
  double l = 0.0;
  for (double& v : scores) l += (v = std::exp(v - m));
  std::vector<double> o(s.head_dim, 0.0);
  for (int pos = 0; pos < ctx; ++pos) {
    const float* v =
        p.pool.data() +
        p.layout.Offset(seq->block_table[pos / s.block_size], s.layer, 1, pos % s.block_size) +
        kv_head * s.head_dim;
    for (int d = 0; d < s.head_dim; ++d) o[d] += scores[pos] / l * v[d];
  }
  return o;
}

TEST(AttentionTablesTest, PartitionsCoverEveryPositionOnce) {
  EXPECT_EQ(AttentionNumPartitions(1), 1);
  EXPECT_EQ(AttentionNumPartitions(kAttentionPartition), 1);
  EXPECT_EQ(AttentionNumPartitions(kAttentionPartition + 1), 2);
  for (int ctx : {1, 17, 255, 256, 257, 511, 512, 513, 8192, 8193}) {
    int next = 0;
    for (int part = 0; part < AttentionNumPartitions(ctx); ++part) {
      EXPECT_EQ(AttentionPartitionBegin(part), next) << ctx;
      EXPECT_GT(AttentionPartitionEnd(part, ctx), AttentionPartitionBegin(part)) << ctx;
      EXPECT_LE(AttentionPartitionEnd(part, ctx) - AttentionPartitionBegin(part),
                kAttentionPartition);
      next = AttentionPartitionEnd(part, ctx);
    }
    EXPECT_EQ(next, ctx);
  }
  // Whole pages per partition for the block sizes the pool uses.
  for (int bs : {1, 2, 8, 16, 32, 64, 128, 256}) EXPECT_EQ(kAttentionPartition % bs, 0) << bs;
}

TEST(AttentionTablesTest, LayoutAlignsEveryTableAndOffsetsMatchTheCpuLayout) {
  const AttentionTableCapacity c{3, 7, 11, 13};
  const AttentionTableLayout l = AttentionTableLayoutFor(c);
  for (int64_t off : {l.seqs, l.block_table, l.positions, l.row_seq, l.row_items, l.items}) {
    EXPECT_EQ(off % kAttentionTableAlign, 0);
  }
  EXPECT_GE(l.block_table - l.seqs, 3 * int64_t{sizeof(AttentionSeqEntry)});
  EXPECT_GE(l.items - l.row_items, 7 * int64_t{sizeof(AttentionRowItems)});
  EXPECT_GE(l.bytes - l.items, 13 * int64_t{sizeof(AttentionWorkItem)});
  EXPECT_EQ(l.bytes % kAttentionTableAlign, 0);

  const KvPageLayout layout{16, 3, 256};
  const int32_t block_table[] = {9, 4, 7};
  const AttentionSeqEntry seq{0, 1, 1, 2};  // the sequence's blocks are entries 1 and 2
  EXPECT_EQ(AttentionKvOffset(layout, block_table, seq, 2, 1, 21, 3, 64),
            layout.Offset(7, 2, 1, 5) + 3 * 64);
  EXPECT_EQ(AttentionKvOffset(layout, block_table, seq, 0, 0, 0, 0, 64), layout.Offset(4, 0, 0, 0));
  EXPECT_EQ(layout.Offset(4, 2, 0, 5) + AttentionValueShift(layout), layout.Offset(4, 2, 1, 5));
}

TEST(AttentionTablesTest, PartialSlotsAreDisjointAndFitTheScratch) {
  const AttentionTableCapacity c{1, 4, 4, 5};
  const int heads = 3, head_dim = 8;
  std::vector<int> hits(static_cast<size_t>(AttentionScratchFloats(c, heads, head_dim)), 0);
  for (int32_t item = 0; item < c.items; ++item) {
    for (int h = 0; h < heads; ++h) {
      for (int d = 0; d < head_dim; ++d) {
        ++hits.at(AttentionPartialOutIndex(item, h, heads, head_dim) + d);
      }
      ++hits.at(AttentionPartialMaxIndex(c, item, h, heads, head_dim));
      ++hits.at(AttentionPartialSumIndex(c, item, h, heads, head_dim));
    }
  }
  for (size_t i = 0; i < hits.size(); ++i) EXPECT_EQ(hits[i], 1) << i;
  EXPECT_EQ(AttentionPartialOutIndex(1, 0, heads, head_dim) % 4, 0);  // float4-aligned rows
}

TEST(AttentionTablesTest, BuilderWritesSequencesRowsItemsAndNeutralisesTails) {
  const std::vector<SeqShape> shapes = MixedSeqShapes();
  const AttentionProblem p = MakeAttentionProblem({}, shapes, 1);
  absl::StatusOr<AttentionTableCounts> n =
      CountAttentionTables(p.seqs, p.positions, p.shape.block_size, p.num_pages);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->seqs, std::ssize(shapes));
  EXPECT_EQ(n->rows, p.rows());
  TableBuffer buf(WithSlack(*n, 5));
  const AttentionTables& t = buf.tables;
  absl::StatusOr<AttentionTableCounts> built = Build(p, t);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->seqs, n->seqs);
  EXPECT_EQ(built->rows, n->rows);
  EXPECT_EQ(built->blocks, n->blocks);
  EXPECT_EQ(built->items, n->items);

  int64_t blocks = 0, items = 0;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const AttentionSeqEntry& e = t.seqs[i];
    EXPECT_EQ(e.row_begin, p.seqs[i].token_begin);
    EXPECT_EQ(e.row_end, p.seqs[i].token_end);
    EXPECT_EQ(e.block_begin, blocks);
    EXPECT_EQ(e.num_blocks, (shapes[i].cached + shapes[i].rows - 1) / 16 + 1);
    for (int b = 0; b < e.num_blocks; ++b) {
      EXPECT_EQ(t.block_table[e.block_begin + b], p.block_tables[i][b]);
    }
    blocks += e.num_blocks;
    for (int r = e.row_begin; r < e.row_end; ++r) {
      EXPECT_EQ(t.row_seq[r], static_cast<int32_t>(i));
      EXPECT_EQ(t.positions[r], p.positions[r]);
      const AttentionRowItems ri = t.row_items[r];
      EXPECT_EQ(ri.item_begin, items);
      EXPECT_EQ(ri.item_end - ri.item_begin, AttentionNumPartitions(p.positions[r] + 1));
      for (int32_t it = ri.item_begin; it < ri.item_end; ++it) {
        const AttentionWorkItem w = t.items[it];
        EXPECT_EQ(w.row, r);
        EXPECT_EQ(w.seq, static_cast<int32_t>(i));
        EXPECT_EQ(w.kv_begin, AttentionPartitionBegin(it - ri.item_begin));
        EXPECT_EQ(w.kv_end, AttentionPartitionEnd(it - ri.item_begin, p.positions[r] + 1));
      }
      items = ri.item_end;
    }
  }
  // Gap rows: in no sequence, no work.
  for (int r = 0; r < p.rows(); ++r) {
    bool in_seq = false;
    for (const AttentionSeq& s : p.seqs) in_seq |= r >= s.token_begin && r < s.token_end;
    if (!in_seq) {
      EXPECT_EQ(t.row_seq[r], -1) << r;
      EXPECT_TRUE(AttentionIsEmpty(t.row_items[r])) << r;
    }
  }
  EXPECT_EQ(blocks, built->blocks);
  EXPECT_EQ(items, built->items);
  for (int32_t i = built->seqs; i < t.capacity.seqs; ++i) {
    EXPECT_EQ(t.seqs[i].row_end, t.seqs[i].row_begin) << i;
  }
  for (int32_t r = built->rows; r < t.capacity.rows; ++r) {
    EXPECT_EQ(t.row_seq[r], -1) << r;
    EXPECT_TRUE(AttentionIsEmpty(t.row_items[r])) << r;
  }
  for (int32_t i = built->items; i < t.capacity.items; ++i) {
    EXPECT_TRUE(AttentionIsEmpty(t.items[i])) << i;
  }
}

TEST(AttentionTablesTest, GridsComeFromCapacityOnly) {
  const AttentionTableCapacity c{4, 64, 300, 900};
  const AttentionGrid g = AttentionPartitionGrid(c, 8);
  EXPECT_EQ(g.x, 900u);
  EXPECT_EQ(g.y, 8u);
  EXPECT_EQ(g.z, 1u);
  const AttentionGrid m = AttentionMergeGrid(c, 32);
  EXPECT_EQ(m.x, 64u);
  EXPECT_EQ(m.y, 32u);
}

TEST(AttentionTablesTest, BucketCapacityHoldsEveryStepWithinItsLimits) {
  const AttentionTableCapacity c = AttentionCapacityFor({48, 8, 1200}, 16);
  EXPECT_EQ(c.seqs, 8);
  EXPECT_EQ(c.rows, 48);
  EXPECT_EQ(c.blocks, 8 * 75);
  EXPECT_EQ(c.items, 48 * 5);
  // The mixed step (max position 1100, 67 rows) fits a bucket of its own limits.
  const AttentionProblem p = MakeAttentionProblem({}, MixedSeqShapes(), 2);
  absl::StatusOr<AttentionTableCounts> n =
      CountAttentionTables(p.seqs, p.positions, 16, p.num_pages);
  ASSERT_TRUE(n.ok()) << n.status();
  const AttentionTableCapacity fit =
      AttentionCapacityFor({p.rows(), static_cast<int32_t>(p.seqs.size()), 1101}, 16);
  EXPECT_TRUE(CheckAttentionCapacity(*n, fit).ok());
}

TEST(AttentionTablesTest, RejectsInvalidStepsAndOverflowWithoutWriting) {
  AttentionProblem p = MakeAttentionProblem({}, MixedSeqShapes(), 3);
  auto count = [&](const std::vector<AttentionSeq>& seqs, const std::vector<int32_t>& positions,
                   int block_size, int32_t pages) {
    return CountAttentionTables(seqs, positions, block_size, pages).status();
  };
  EXPECT_EQ(count(p.seqs, p.positions, 0, p.num_pages).code(), absl::StatusCode::kInvalidArgument);
  {
    std::vector<AttentionSeq> seqs = p.seqs;
    seqs[1].token_end = p.rows() + 1;
    const absl::Status s = count(seqs, p.positions, 16, p.num_pages);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("sequence 1"), std::string::npos) << s;
  }
  {
    std::vector<AttentionSeq> seqs = p.seqs;
    seqs[2].token_begin = seqs[1].token_begin;  // overlaps sequence 1
    const absl::Status s = count(seqs, p.positions, 16, p.num_pages);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("earlier"), std::string::npos) << s;
  }
  {
    std::vector<AttentionSeq> seqs = p.seqs;
    seqs[0].block_table = nullptr;
    EXPECT_EQ(count(seqs, p.positions, 16, p.num_pages).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    std::vector<int32_t> positions = p.positions;
    positions[0] = -1;
    const absl::Status s = count(p.seqs, positions, 16, p.num_pages);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("row 0"), std::string::npos) << s;
  }
  {
    const absl::Status s = count(p.seqs, p.positions, 16, p.num_pages - 3 - 1);
    EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
    EXPECT_NE(s.message().find("pages"), std::string::npos) << s;
  }
  absl::StatusOr<AttentionTableCounts> n =
      CountAttentionTables(p.seqs, p.positions, 16, p.num_pages);
  ASSERT_TRUE(n.ok());
  for (int which = 0; which < 4; ++which) {
    AttentionTableCapacity c = *n;
    int32_t* field[] = {&c.seqs, &c.rows, &c.blocks, &c.items};
    --*field[which];
    TableBuffer buf(c);
    std::vector<char> before(buf.storage.get(), buf.storage.get() + buf.bytes);
    absl::StatusOr<AttentionTableCounts> built = Build(p, buf.tables);
    EXPECT_EQ(built.status().code(), absl::StatusCode::kResourceExhausted) << which;
    EXPECT_NE(built.status().message().find("capacity"), std::string::npos);
    EXPECT_EQ(std::memcmp(before.data(), buf.storage.get(), before.size()), 0) << which;
  }
}

// The emulated kernels against the CPU reference and a double-precision softmax, for several
// head shapes (GQA groups 1, 3, 4, 16 and head_dim 64, 128, 256) and a capacity with slack.
TEST(AttentionTablesTest, EmulatedSplitKvMatchesCpuReferenceAndDirectSoftmax) {
  const AttentionShape shapes[] = {{8, 2, 64, 16, 2, 1, 1},
                                   {9, 3, 64, 16, 2, 0, 1},
                                   {4, 4, 128, 16, 1, 0, 2},
                                   {16, 1, 256, 16, 2, 1, 0},
                                   {6, 2, 64, 8, 1, 0, 1}};
  uint32_t seed = 10;
  for (const AttentionShape& shape : shapes) {
    const AttentionProblem p = MakeAttentionProblem(shape, MixedSeqShapes(), seed++);
    absl::StatusOr<AttentionTableCounts> n =
        CountAttentionTables(p.seqs, p.positions, shape.block_size, p.num_pages);
    ASSERT_TRUE(n.ok()) << n.status();
    TableBuffer buf(WithSlack(*n, 3));
    ASSERT_TRUE(Build(p, buf.tables).ok());
    const std::vector<float> init(static_cast<size_t>(p.rows() * p.ldo), 7.0f);
    const std::vector<float> got = EmulatePagedAttention(p, buf.tables, init);
    std::vector<float> want = init;
    kernels::PagedAttention(p.pool.data(), p.layout, shape.layer, p.seqs, p.positions.data(),
                            p.q.data(), p.ldq, shape.num_heads, shape.num_kv_heads, shape.head_dim,
                            want.data(), p.ldo);
    for (int r = 0; r < p.rows(); ++r) {
      const bool in_seq = buf.tables.row_seq[r] >= 0;
      for (int h = 0; h < shape.num_heads; ++h) {
        const std::vector<double> direct =
            in_seq ? DirectAttention(p, r, h) : std::vector<double>{};
        for (int d = 0; d < shape.head_dim; ++d) {
          const int64_t at = r * p.ldo + int64_t{h} * shape.head_dim + d;
          if (!in_seq) {
            ASSERT_EQ(got[at], 7.0f) << "gap row " << r;
            continue;
          }
          ASSERT_NEAR(got[at], want[at], 2e-5f)
              << "head_dim " << shape.head_dim << " row " << r << " head " << h << " d " << d;
          ASSERT_NEAR(got[at], direct[d], 2e-5) << "row " << r << " head " << h << " d " << d;
        }
      }
      // Padding between rows (ldo > width) is never written.
      for (int64_t c = p.width(); c < p.ldo; ++c) ASSERT_EQ(got[r * p.ldo + c], 7.0f);
    }
  }
}

}  // namespace
}  // namespace loraserve::kernels::cuda
