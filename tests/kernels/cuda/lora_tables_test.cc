// The CUDA LoRA tables on the CPU: the plan -> table builder, the index math the kernels use
// (layout, split-K chunks, v and partials indices, grids, tail neutralisation), capacity and
// validation errors, and a host emulation of the kernels against LoraApplyReference on identical
// pool bytes (mixed ranks 1..512, weighted sets with negative weights, DoRA, base-only rows,
// fp32/bf16/fp16). Runs without nvcc or a GPU.
#include "kernels/cuda/lora_tables.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cpu/lora.h"
#include "kernels/cuda/lora_table_builder.h"
#include "tests/kernels/cuda/lora_emulation.h"
#include "tests/kernels/cuda/lora_test_problem.h"

namespace loraserve::kernels::cuda {
namespace {

using testing::EmulateLoraApply;
using testing::LoraProblem;
using testing::MakeLoraProblem;
using testing::MixedAdapters;
using testing::MixedSegments;

// Host memory laid out like the device table buffer, pre-filled with garbage so a table entry
// the builder forgets to write is visible.
struct TableBuffer {
  explicit TableBuffer(const LoraTableCapacity& capacity) {
    bytes = LoraTableLayoutFor(capacity).bytes;
    storage.reset(static_cast<char*>(std::aligned_alloc(
        kLoraTableAlign, static_cast<size_t>(LoraAlignUp(bytes + 1, kLoraTableAlign)))));
    // Increasing words: a forgotten item would not be empty by luck (row_begin < row_end).
    for (int64_t i = 0; i + 4 <= bytes; i += 4) {
      const auto word = static_cast<int32_t>(i / 4 + 1);
      std::memcpy(storage.get() + i, &word, sizeof(word));
    }
    tables = LoraTablesAt(storage.get(), capacity);
  }
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> storage;
  int64_t bytes = 0;
  LoraTables tables{};
};

LoraTableCapacity CapacityFor(const LoraTableCounts& n, int slack) {
  return {n.segments + slack,    n.rank_rows + slack,   n.bgmv_shrink + slack,
          n.sgmv_shrink + slack, n.bgmv_expand + slack, n.sgmv_expand + slack,
          n.v_floats + slack};
}

absl::StatusOr<LoraTableCounts> Count(const LoraProblem& p) {
  return CountLoraTables(p.segments, p.refs, std::ssize(p.pool), p.in_dim, p.out_dim);
}

absl::StatusOr<LoraTableCounts> Build(const LoraProblem& p, const LoraTables& t) {
  return BuildLoraTables(p.segments, p.refs, p.pool.data(), std::ssize(p.pool), p.in_dim, p.out_dim,
                         t);
}

// Every entry past the step's counts is one that makes the kernels return at once.
void ExpectTailsNeutralised(const LoraTables& t, const LoraTableCounts& n) {
  for (int32_t i = n.bgmv_shrink; i < t.capacity.bgmv_shrink; ++i) {
    EXPECT_TRUE(LoraIsEmpty(t.bgmv_shrink[i])) << i;
  }
  for (int32_t i = n.sgmv_shrink; i < t.capacity.sgmv_shrink; ++i) {
    EXPECT_TRUE(LoraIsEmpty(t.sgmv_shrink[i])) << i;
  }
  for (int32_t i = n.bgmv_expand; i < t.capacity.bgmv_expand; ++i) {
    EXPECT_TRUE(LoraIsEmpty(t.bgmv_expand[i])) << i;
  }
  for (int32_t i = n.sgmv_expand; i < t.capacity.sgmv_expand; ++i) {
    EXPECT_TRUE(LoraIsEmpty(t.sgmv_expand[i])) << i;
  }
  for (int32_t i = n.segments; i < t.capacity.segments; ++i) {
    EXPECT_EQ(t.segments[i].row_end, t.segments[i].row_begin) << i;
    EXPECT_EQ(t.segments[i].out_scale_off, -1) << i;
  }
  for (int32_t i = n.rank_rows; i < t.capacity.rank_rows; ++i) {
    EXPECT_EQ(t.rank_rows[i].scale, 0.0f) << i;
  }
}

// Emulates the kernels over tables built for `p` with `slack` spare entries in every table and
// checks the result against LoraApplyReference, element by element, plus coverage: every y
// element of a working segment written exactly once, every other one untouched bit for bit,
// and every partial of the step written exactly once per K chunk.
void ExpectMatchesReference(const LoraProblem& p, int slack) {
  absl::StatusOr<LoraTableCounts> counts = Count(p);
  ASSERT_TRUE(counts.ok()) << counts.status();
  TableBuffer buffer(CapacityFor(*counts, slack));
  absl::StatusOr<LoraTableCounts> built = Build(p, buffer.tables);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_EQ(built->segments, counts->segments);
  EXPECT_EQ(built->v_floats, counts->v_floats);
  ExpectTailsNeutralised(buffer.tables, *built);

  std::vector<float> want = p.y;
  LoraApplyReference(p.pool.data(), p.x.data(), p.ldx, want.data(), p.ldy, p.in_dim, p.out_dim,
                     p.segments, p.refs);
  std::vector<float> got = p.y;
  std::vector<float> partials(
      static_cast<size_t>(LoraPartialsFloats(buffer.tables.capacity, p.in_dim)),
      std::numeric_limits<float>::quiet_NaN());
  const testing::EmulationWrites writes =
      EmulateLoraApply(p.pool.data(), buffer.tables, p.x.data(), p.ldx, p.in_dim, partials,
                       got.data(), p.ldy, std::ssize(got));

  for (const LoraSegment& s : p.segments) {
    const bool works = LoraSegmentHasWork(s);
    for (int r = s.row_begin; r < s.row_end; ++r) {
      for (int j = 0; j < p.ldy; ++j) {
        const int64_t at = r * p.ldy + j;
        if (works && j < p.out_dim) {
          ASSERT_EQ(writes.y[at], 1) << "row " << r << " col " << j;
          ASSERT_NEAR(got[at], want[at], 2e-4f * (8.0f + std::abs(want[at])))
              << "row " << r << " col " << j;
        } else {
          ASSERT_EQ(writes.y[at], 0) << "row " << r << " col " << j;
          ASSERT_EQ(std::memcmp(&got[at], &p.y[at], sizeof(float)), 0);
        }
      }
    }
  }
  const int chunks = LoraNumKChunks(p.in_dim);
  for (int c = 0; c < chunks; ++c) {
    for (int64_t v = 0; v < buffer.tables.capacity.v_floats; ++v) {
      const int64_t at = LoraPartialIndex(c, buffer.tables.capacity.v_floats, v);
      ASSERT_EQ(writes.partials[at], v < counts->v_floats ? 1 : 0) << "chunk " << c << " v " << v;
    }
  }
}

TEST(LoraTablesTest, EmulationMatchesReferenceOnMixedRanksDtypesWeightsAndDora) {
  // 600 inputs: three K chunks, the last one partial; 300 outputs: two column tiles.
  ExpectMatchesReference(MakeLoraProblem(600, 300, MixedAdapters(), MixedSegments(), 1), 0);
}

TEST(LoraTablesTest, EmulationOverNeutralisedTailsMatchesReference) {
  ExpectMatchesReference(MakeLoraProblem(257, 513, MixedAdapters(), MixedSegments(), 2), 7);
}

TEST(LoraTablesTest, EmulationMatchesReferenceOnOddSmallDims) {
  ExpectMatchesReference(MakeLoraProblem(5, 3, MixedAdapters(), MixedSegments(), 3), 1);
}

// A captured graph replays one table buffer for every step of its bucket: a smaller step
// written over a larger one must leave nothing of the larger one active.
TEST(LoraTablesTest, SmallerStepOverLargerStepLeavesOnlyItsOwnWork) {
  const LoraProblem big = MakeLoraProblem(300, 260, MixedAdapters(), MixedSegments(), 4);
  const LoraProblem small =
      MakeLoraProblem(300, 260, MixedAdapters(), {{2, {{1, -1.0f}}}, {1, {}}}, 5);
  absl::StatusOr<LoraTableCounts> big_counts = Count(big);
  ASSERT_TRUE(big_counts.ok());
  TableBuffer buffer(CapacityFor(*big_counts, 0));
  ASSERT_TRUE(Build(big, buffer.tables).ok());
  absl::StatusOr<LoraTableCounts> small_counts = Build(small, buffer.tables);
  ASSERT_TRUE(small_counts.ok()) << small_counts.status();
  const LoraTables& t = buffer.tables;
  ExpectTailsNeutralised(t, *small_counts);

  std::vector<float> want = small.y;
  LoraApplyReference(small.pool.data(), small.x.data(), small.ldx, want.data(), small.ldy,
                     small.in_dim, small.out_dim, small.segments, small.refs);
  std::vector<float> got = small.y;
  std::vector<float> partials(static_cast<size_t>(LoraPartialsFloats(t.capacity, small.in_dim)),
                              std::numeric_limits<float>::quiet_NaN());
  const testing::EmulationWrites writes =
      EmulateLoraApply(small.pool.data(), t, small.x.data(), small.ldx, small.in_dim, partials,
                       got.data(), small.ldy, std::ssize(got));
  int written = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    written += writes.y[i];
    ASSERT_NEAR(got[i], want[i], 2e-4f * (8.0f + std::abs(want[i]))) << i;
  }
  EXPECT_EQ(written, 2 * small.out_dim);  // the two adapter rows, nothing of the big step
}

// q/k/v-style fusion on the host: two modules over one x and one pool (the second takes every
// other segment, scaled by -1 where it has refs' weights reversed), built into one set of
// tables with spare capacity in every block; one emulated shrink over all of it and one expand
// per module's view give each module exactly LoraApplyReference's result.
TEST(LoraTablesTest, FusedModulesShareOneShrinkAndExpandSeparately) {
  const LoraProblem p = MakeLoraProblem(300, 200, MixedAdapters(), MixedSegments(), 17);
  std::vector<LoraSegment> second;
  for (size_t i = 0; i < p.segments.size(); i += 2) second.push_back(p.segments[i]);
  const std::span<const LoraSegment> segments[2] = {p.segments, second};
  std::vector<LoraFusedModule> modules;
  for (int m = 0; m < 2; ++m) {
    absl::StatusOr<LoraTableCounts> n =
        CountLoraTables(segments[m], p.refs, std::ssize(p.pool), p.in_dim, p.out_dim);
    ASSERT_TRUE(n.ok()) << n.status();
    modules.push_back({segments[m], p.out_dim, CapacityFor(*n, 2 + m)});
  }
  TableBuffer buffer(LoraFusedCapacity(modules));
  auto built = BuildFusedLoraTables(modules, p.refs, p.pool.data(), std::ssize(p.pool), p.in_dim,
                                    buffer.tables);
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_EQ(built->size(), 2u);

  std::vector<float> partials(
      static_cast<size_t>(LoraPartialsFloats(buffer.tables.capacity, p.in_dim)),
      std::numeric_limits<float>::quiet_NaN());
  testing::EmulationWrites writes;
  writes.partials.assign(partials.size(), 0);
  writes.y.assign(p.y.size(), 0);
  const LoraTables& t = buffer.tables;
  testing::EmulateShrinkLaunch(p.pool.data(), t, t.bgmv_shrink, t.capacity.bgmv_shrink,
                               p.x.data(), p.ldx, p.in_dim, partials.data(), writes);
  testing::EmulateShrinkLaunch(p.pool.data(), t, t.sgmv_shrink, t.capacity.sgmv_shrink,
                               p.x.data(), p.ldx, p.in_dim, partials.data(), writes);
  for (int m = 0; m < 2; ++m) {
    std::vector<float> want = p.y, got = p.y;
    LoraApplyReference(p.pool.data(), p.x.data(), p.ldx, want.data(), p.ldy, p.in_dim, p.out_dim,
                       segments[m], p.refs);
    const LoraTables view = LoraFusedExpandView(t, modules, m);
    testing::EmulationWrites y_writes;
    y_writes.y.assign(got.size(), 0);
    testing::EmulateExpandLaunch(p.pool.data(), view, view.bgmv_expand,
                                 view.capacity.bgmv_expand, partials.data(), p.in_dim, got.data(),
                                 p.ldy, y_writes);
    testing::EmulateExpandLaunch(p.pool.data(), view, view.sgmv_expand,
                                 view.capacity.sgmv_expand, partials.data(), p.in_dim, got.data(),
                                 p.ldy, y_writes);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 2e-4f * (8.0f + std::abs(want[i]))) << "module " << m << " at " << i;
      ASSERT_LE(y_writes.y[i], 1) << "module " << m << " at " << i;
    }
  }
  // Every partial of both modules written once per K chunk, the blocks' spare ones never.
  int64_t used_v = 0;
  for (const LoraTableCounts& n : *built) used_v += n.v_floats;
  int64_t written = 0;
  for (int w : writes.partials) {
    ASSERT_LE(w, 1);
    written += w;
  }
  EXPECT_EQ(written, used_v * LoraNumKChunks(p.in_dim));
  // A fused buffer that is not the modules' blocks end to end is refused.
  TableBuffer wrong(modules[0].capacity);
  EXPECT_EQ(BuildFusedLoraTables(modules, p.refs, p.pool.data(), std::ssize(p.pool), p.in_dim,
                                 wrong.tables)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoraTablesTest, OutScaleOffsetsReplaceThePointers) {
  const LoraProblem p = MakeLoraProblem(64, 48, MixedAdapters(), MixedSegments(), 23);
  absl::StatusOr<LoraTableCounts> n = Count(p);
  ASSERT_TRUE(n.ok());
  TableBuffer by_pointer(CapacityFor(*n, 0)), by_offset(CapacityFor(*n, 0));
  ASSERT_TRUE(Build(p, by_pointer.tables).ok());
  std::vector<int64_t> offsets;
  for (const LoraSegment& s : p.segments) {
    offsets.push_back(s.out_scale == nullptr ? -1 : s.out_scale - p.pool.data());
  }
  ASSERT_TRUE(BuildLoraTables(p.segments, p.refs, nullptr, std::ssize(p.pool), p.in_dim,
                              p.out_dim, by_offset.tables, offsets)
                  .ok());
  EXPECT_EQ(std::memcmp(by_pointer.storage.get(), by_offset.storage.get(),
                        static_cast<size_t>(by_pointer.bytes)),
            0);
  offsets.pop_back();
  EXPECT_EQ(BuildLoraTables(p.segments, p.refs, nullptr, std::ssize(p.pool), p.in_dim, p.out_dim,
                            by_offset.tables, offsets)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoraTablesTest, ItemsSplitSegmentsByRowTileRankChunkAndColumnTile) {
  // One rank-512 adapter: 16 rank chunks of 32, never padded to anything larger.
  const LoraProblem decode = MakeLoraProblem(64, 600, {{512}}, {{kBgmvRows + 1, {{0, 1.0f}}}}, 6);
  absl::StatusOr<LoraTableCounts> n = Count(decode);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->segments, 1);
  EXPECT_EQ(n->rank_rows, 512);
  EXPECT_EQ(n->bgmv_shrink, 2 * 16);  // two BGMV row tiles
  EXPECT_EQ(n->bgmv_expand, 2 * 3);   // 600 columns: 256 + 256 + 88
  EXPECT_EQ(n->sgmv_shrink, 0);
  EXPECT_EQ(n->v_floats, (kBgmvRows + 1) * 512);

  TableBuffer buffer(CapacityFor(*n, 0));
  ASSERT_TRUE(Build(decode, buffer.tables).ok());
  const LoraExpandItem last = buffer.tables.bgmv_expand[5];
  EXPECT_EQ(last.row_begin, kBgmvRows);
  EXPECT_EQ(last.row_end, kBgmvRows + 1);
  EXPECT_EQ(last.col_begin, 512);
  EXPECT_EQ(last.col_end, 600);
  const LoraShrinkItem first = buffer.tables.bgmv_shrink[1];
  EXPECT_EQ(first.rr_begin, 32);
  EXPECT_EQ(first.rr_end, 64);

  // Rank 1 + rank 3 in a weighted set: 4 rank rows in one item; kSgmvMinRows rows take SGMV.
  const LoraProblem prefill =
      MakeLoraProblem(64, 64, {{1}, {3}}, {{kSgmvMinRows, {{0, 1.0f}, {1, -1.0f}}}}, 7);
  n = Count(prefill);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->bgmv_shrink, 0);
  EXPECT_EQ(n->sgmv_shrink, 1);
  EXPECT_EQ(n->sgmv_expand, 1);
  EXPECT_EQ(n->rank_rows, 4);
  const LoraProblem below = MakeLoraProblem(64, 64, {{1}}, {{kSgmvMinRows - 1, {{0, 1.0f}}}}, 8);
  n = Count(below);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->sgmv_shrink, 0);
  EXPECT_EQ(n->bgmv_shrink, (kSgmvMinRows - 1 + kBgmvRows - 1) / kBgmvRows);
}

TEST(LoraTablesTest, BaseOnlyRowsGetNoWorkButDoraOnlyRowsDo) {
  const LoraProblem p = MakeLoraProblem(32, 32, {{4}}, {{3, {}}, {2, {}, true}}, 9);
  absl::StatusOr<LoraTableCounts> n = Count(p);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->segments, 1);
  EXPECT_EQ(n->rank_rows, 0);
  EXPECT_EQ(n->bgmv_shrink, 0);
  EXPECT_EQ(n->bgmv_expand, 1);
  EXPECT_EQ(n->v_floats, 0);
  ExpectMatchesReference(p, 2);
}

// A graph bucket's capacity must hold every plan within its limits: random plans, plus the
// shapes that maximise each table (one-row segments at the largest rank, rows just past a tile).
TEST(LoraTablesTest, BucketCapacityHoldsEveryPlanWithinItsLimits) {
  std::mt19937 rng(12);
  const std::vector<int> ranks = {1, 8, 16, 33, 64, 256, 512};
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const LoraBucketLimits limits{
        1 + static_cast<int32_t>(rng() % 160), 1 + static_cast<int32_t>(rng() % 12),
        1 + static_cast<int32_t>(rng() % 1500), 1 + static_cast<int32_t>(rng() % 700)};
    std::vector<testing::AdapterSpec> adapters;
    for (int r : ranks) adapters.push_back({r});
    std::vector<testing::SegmentSpec> specs;
    int rows_left = limits.rows, rank_rows_left = limits.rank_rows;
    for (int s = 0; s < limits.segments && rows_left > 0; ++s) {
      const int rows = trial % 3 == 0 ? std::min(rows_left, s % 2 == 0 ? 1 : kSgmvMinRows + 1)
                                      : 1 + static_cast<int>(rng() % rows_left);
      rows_left -= rows;
      testing::SegmentSpec spec{rows, {}, rng() % 4 == 0};
      int seg_ranks = 0;
      for (int a = static_cast<int>(ranks.size()) - 1; a >= 0; --a) {
        if (rng() % 3 != 0 && seg_ranks + ranks[a] <= limits.segment_ranks &&
            ranks[a] <= rank_rows_left) {
          spec.adapters.push_back({a, rng() % 2 == 0 ? 1.0f : -0.5f});
          seg_ranks += ranks[a];
          rank_rows_left -= ranks[a];
        }
      }
      specs.push_back(spec);
    }
    const int out_dim = 1 + static_cast<int>(rng() % 700);
    const LoraProblem p = MakeLoraProblem(8, out_dim, adapters, specs, 100 + trial);
    absl::StatusOr<LoraTableCounts> n = Count(p);
    ASSERT_TRUE(n.ok()) << n.status();
    const absl::Status fits = CheckLoraCapacity(*n, LoraCapacityFor(limits, out_dim));
    ASSERT_TRUE(fits.ok()) << "trial " << trial << ": " << fits;
    ++checked;
  }
  EXPECT_EQ(checked, 300);

  // Tight at the extremes: 8 one-row segments at rank 512 need exactly the bound's BGMV items.
  const LoraBucketLimits limits{8, 8, 8 * 512, 512};
  const LoraTableCapacity c = LoraCapacityFor(limits, 256);
  EXPECT_EQ(c.bgmv_shrink, 8 * 16);
  EXPECT_EQ(c.bgmv_expand, 8);
  EXPECT_EQ(c.v_floats, 8 * 512);
}

TEST(LoraTablesTest, IndexMath) {
  EXPECT_EQ(LoraNumKChunks(1), 1);
  EXPECT_EQ(LoraNumKChunks(kLoraKChunk), 1);
  EXPECT_EQ(LoraNumKChunks(kLoraKChunk + 1), 2);
  EXPECT_EQ(LoraNumKChunks(4096), 4096 / kLoraKChunk);
  EXPECT_EQ(LoraKChunkBegin(2), 2 * kLoraKChunk);
  EXPECT_EQ(LoraKChunkEnd(0, 100), 100);
  EXPECT_EQ(LoraKChunkEnd(1, 3 * kLoraKChunk), 2 * kLoraKChunk);
  EXPECT_EQ(LoraKChunkEnd(2, 2 * kLoraKChunk + 7), 2 * kLoraKChunk + 7);

  const LoraSegmentEntry s{10, 14, 100, 105, 1000, -1};
  EXPECT_EQ(LoraSegmentRanks(s), 5);
  EXPECT_EQ(LoraVIndex(s, 10, 0), 1000);
  EXPECT_EQ(LoraVIndex(s, 12, 3), 1000 + 2 * 5 + 3);
  EXPECT_EQ(LoraPartialIndex(3, 777, 5), 3 * 777 + 5);
  const LoraTableCapacity c{1, 1, 1, 1, 1, 1, 777};
  EXPECT_EQ(LoraPartialsFloats(c, 4096), 16 * 777);

  const LoraGrid shrink = LoraShrinkGrid(40, 4097);
  EXPECT_EQ(shrink.x, 40u);
  EXPECT_EQ(shrink.y, 17u);
  EXPECT_EQ(shrink.z, 1u);
  const LoraGrid expand = LoraExpandGrid(9);
  EXPECT_EQ(expand.x, 9u);
  EXPECT_EQ(expand.y, 1u);

  EXPECT_TRUE(LoraIsEmpty(kLoraEmptyShrinkItem));
  EXPECT_TRUE(LoraIsEmpty(kLoraEmptyExpandItem));
  EXPECT_TRUE(LoraIsEmpty(LoraShrinkItem{0, 3, 5, 7, 7}));
  EXPECT_FALSE(LoraIsEmpty(LoraShrinkItem{0, 3, 5, 7, 8}));
  EXPECT_FALSE(LoraIsEmpty(LoraExpandItem{0, 3, 4, 0, 1}));
}

TEST(LoraTablesTest, LayoutAlignsAndSeparatesEveryTable) {
  const LoraTableCapacity c{3, 17, 5, 0, 9, 2, 100};
  const LoraTableLayout l = LoraTableLayoutFor(c);
  const int64_t starts[] = {l.segments,    l.rank_rows,   l.bgmv_shrink, l.sgmv_shrink,
                            l.bgmv_expand, l.sgmv_expand, l.bytes};
  const int64_t sizes[] = {
      3 * int64_t{sizeof(LoraSegmentEntry)}, 17 * int64_t{sizeof(LoraRankRow)},
      5 * int64_t{sizeof(LoraShrinkItem)},   0,
      9 * int64_t{sizeof(LoraExpandItem)},   2 * int64_t{sizeof(LoraExpandItem)}};
  EXPECT_EQ(l.segments, 0);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(starts[i] % kLoraTableAlign, 0) << i;
    EXPECT_GE(starts[i + 1], starts[i] + sizes[i]) << i;
  }
  alignas(kLoraTableAlign) static char base[8192];
  ASSERT_LE(l.bytes, int64_t{sizeof(base)});
  const LoraTables t = LoraTablesAt(base, c);
  EXPECT_EQ(reinterpret_cast<char*>(t.rank_rows) - base, l.rank_rows);
  EXPECT_EQ(reinterpret_cast<char*>(t.sgmv_expand) - base, l.sgmv_expand);
  EXPECT_EQ(t.capacity.v_floats, 100);
}

TEST(LoraTablesTest, LoadElementWidensEveryDtypeExactly) {
  std::vector<float> pool(8, 0.0f);
  pool[1] = -3.25f;
  const uint16_t halves[2] = {FloatToBf16(1.5f), FloatToF16(-0.125f)};
  std::memcpy(&pool[4], halves, sizeof(halves));
  EXPECT_EQ(LoadLoraElement(pool.data(), 0, static_cast<int32_t>(LoraDtype::kF32), 1), -3.25f);
  EXPECT_EQ(LoadLoraElement(pool.data(), 4, static_cast<int32_t>(LoraDtype::kBF16), 0), 1.5f);
  EXPECT_EQ(LoadLoraElement(pool.data(), 4, static_cast<int32_t>(LoraDtype::kF16), 1), -0.125f);
  pool[6] = 2.0f;
  EXPECT_EQ(LoraExpandFinish(pool.data(), -1, 2, 1.0f, 0.5f), 1.5f);
  EXPECT_EQ(LoraExpandFinish(pool.data(), 4, 2, 1.0f, 0.5f), 3.0f);  // (1 + 0.5) * pool[6]
}

TEST(LoraTablesTest, EveryCapacityOverflowIsAnErrorThatWritesNothing) {
  const LoraProblem p = MakeLoraProblem(300, 300, MixedAdapters(), MixedSegments(), 10);
  absl::StatusOr<LoraTableCounts> n = Count(p);
  ASSERT_TRUE(n.ok());
  const LoraTableCapacity exact = CapacityFor(*n, 0);
  struct Field {
    const char* name;
    LoraTableCapacity capacity;
  };
  std::vector<Field> fields;
  auto shrink = [&](const char* name, auto member) {
    LoraTableCapacity c = exact;
    --(c.*member);
    fields.push_back({name, c});
  };
  shrink("segments", &LoraTableCapacity::segments);
  shrink("rank rows", &LoraTableCapacity::rank_rows);
  shrink("BGMV shrink items", &LoraTableCapacity::bgmv_shrink);
  shrink("SGMV shrink items", &LoraTableCapacity::sgmv_shrink);
  shrink("BGMV expand items", &LoraTableCapacity::bgmv_expand);
  shrink("SGMV expand items", &LoraTableCapacity::sgmv_expand);
  shrink("shrink outputs per chunk", &LoraTableCapacity::v_floats);
  for (const Field& f : fields) {
    TableBuffer buffer(f.capacity);
    const std::vector<char> before(buffer.storage.get(), buffer.storage.get() + buffer.bytes);
    absl::StatusOr<LoraTableCounts> built = Build(p, buffer.tables);
    ASSERT_FALSE(built.ok()) << f.name;
    EXPECT_EQ(built.status().code(), absl::StatusCode::kResourceExhausted) << f.name;
    EXPECT_NE(built.status().message().find(f.name), std::string::npos) << built.status();
    EXPECT_EQ(std::memcmp(before.data(), buffer.storage.get(), before.size()), 0) << f.name;
  }
  TableBuffer fits(exact);
  EXPECT_TRUE(Build(p, fits.tables).ok());
}

TEST(LoraTablesTest, InvalidPlansAreErrors) {
  LoraProblem p = MakeLoraProblem(16, 16, {{4}}, {{2, {{0, 1.0f}}}}, 11);
  const int64_t units = std::ssize(p.pool);
  EXPECT_FALSE(CountLoraTables(p.segments, p.refs, units, 0, 16).ok());
  EXPECT_FALSE(CountLoraTables(p.segments, p.refs, units, 16, -1).ok());

  LoraRef bad = p.refs[0];
  bad.rank = 0;
  EXPECT_FALSE(CountLoraTables(p.segments, std::span<const LoraRef>(&bad, 1), units, 16, 16).ok());
  bad.rank = kMaxLoraRank + 1;
  EXPECT_FALSE(CountLoraTables(p.segments, std::span<const LoraRef>(&bad, 1), units, 16, 16).ok());

  std::vector<int64_t> rows = p.a_rows[0];
  rows[3] = units - 15;  // 16 fp32 elements do not fit
  bad = p.refs[0];
  bad.a_rows = rows.data();
  absl::StatusOr<LoraTableCounts> n =
      CountLoraTables(p.segments, std::span<const LoraRef>(&bad, 1), units, 16, 16);
  EXPECT_EQ(n.status().code(), absl::StatusCode::kOutOfRange) << n.status();
  bad.dtype = LoraDtype::kBF16;  // ...but 16 bf16 elements (8 units) do
  EXPECT_TRUE(CountLoraTables(p.segments, std::span<const LoraRef>(&bad, 1), units, 16, 16).ok());

  LoraSegment seg = p.segments[0];
  seg.refs_end = 2;  // past the refs
  EXPECT_FALSE(CountLoraTables(std::span<const LoraSegment>(&seg, 1), p.refs, units, 16, 16).ok());
  seg = p.segments[0];
  seg.row_end = seg.row_begin - 1;
  EXPECT_FALSE(CountLoraTables(std::span<const LoraSegment>(&seg, 1), p.refs, units, 16, 16).ok());

  // DoRA factors must be pool rows: the device reads them by offset.
  const std::vector<float> outside(16, 1.0f);
  seg = p.segments[0];
  seg.out_scale = outside.data();
  absl::StatusOr<LoraTableCounts> counts =
      CountLoraTables(std::span<const LoraSegment>(&seg, 1), p.refs, units, 16, 16);
  ASSERT_TRUE(counts.ok());
  TableBuffer buffer(CapacityFor(*counts, 0));
  absl::StatusOr<LoraTableCounts> built = BuildLoraTables(
      std::span<const LoraSegment>(&seg, 1), p.refs, p.pool.data(), units, 16, 16, buffer.tables);
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument) << built.status();
  seg.out_scale = p.pool.data() + units - 8;  // starts inside, runs past the end
  built = BuildLoraTables(std::span<const LoraSegment>(&seg, 1), p.refs, p.pool.data(), units, 16,
                          16, buffer.tables);
  EXPECT_FALSE(built.ok());
}

}  // namespace
}  // namespace loraserve::kernels::cuda
