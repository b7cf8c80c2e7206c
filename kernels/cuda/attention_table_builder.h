// Host side of the CUDA attention tables: validates one step's sequences and positions and
// flattens them into the fixed-capacity tables of attention_tables.h (in a pinned staging
// buffer, then one copy to the device), with every tail neutralised. Header-only and free of
// CUDA, so it is tested on any CPU.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention_tables.h"
#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels::cuda {

// What a captured graph bucket admits: at most `rows` rows in at most `seqs` sequences, every
// row at a position below `max_context`.
struct AttentionBucketLimits {
  int32_t rows = 0;
  int32_t seqs = 0;
  int32_t max_context = 0;
};

// A capacity every step within `limits` fits: each sequence needs at most
// ceil(max_context / block_size) block-table entries, each row at most
// ceil(max_context / kAttentionPartition) work items.
inline AttentionTableCapacity AttentionCapacityFor(const AttentionBucketLimits& limits,
                                                   int block_size) {
  auto clamp = [](int64_t n) { return static_cast<int32_t>(n < INT32_MAX ? n : INT32_MAX); };
  const int64_t blocks_per_seq =
      block_size < 1 ? 0 : (int64_t{limits.max_context} + block_size - 1) / block_size;
  AttentionTableCapacity c;
  c.seqs = limits.seqs;
  c.rows = limits.rows;
  c.blocks = clamp(int64_t{limits.seqs} * blocks_per_seq);
  c.items = clamp(int64_t{limits.rows} * AttentionNumPartitions(limits.max_context));
  return c;
}

// The first table that `n` overflows, named with both numbers; OK when all fit.
inline absl::Status CheckAttentionCapacity(const AttentionTableCounts& n,
                                           const AttentionTableCapacity& c) {
  auto over = [](const char* what, int64_t need, int64_t have) {
    return absl::ResourceExhaustedError(absl::StrCat("attention tables: the step needs ", need, " ",
                                                     what, " but the capacity is ", have,
                                                     "; raise the bucket's capacity or split "
                                                     "the step"));
  };
  if (n.seqs > c.seqs) return over("sequences", n.seqs, c.seqs);
  if (n.rows > c.rows) return over("rows", n.rows, c.rows);
  if (n.blocks > c.blocks) return over("block-table entries", n.blocks, c.blocks);
  if (n.items > c.items) return over("split-KV work items", n.items, c.items);
  return absl::OkStatus();
}

// The counts a step needs (what a caller sizes a capacity from), validating it: sequences hold
// disjoint rows of [0, positions.size()), positions are >= 0, and every block-table entry a row
// reads names a page below num_pages. Rows in no sequence get no work (their output is left as
// it was, like the CPU reference).
inline absl::StatusOr<AttentionTableCounts> CountAttentionTables(std::span<const AttentionSeq> seqs,
                                                                 std::span<const int32_t> positions,
                                                                 int block_size,
                                                                 int32_t num_pages) {
  if (block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention tables: block_size ", block_size, " must be >= 1"));
  }
  if (positions.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("attention tables: more than 2^31 rows");
  }
  const int rows = static_cast<int>(positions.size());
  AttentionTableCounts n;
  n.rows = rows;
  int64_t blocks = 0, items = 0;
  // Rows claimed so far, to reject overlapping sequences; sequences rarely overlap, so a flat
  // pass per sequence over a bitmap is enough.
  std::vector<bool> claimed(positions.size(), false);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const AttentionSeq& s = seqs[i];
    if (s.token_begin < 0 || s.token_end < s.token_begin || s.token_end > rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention tables: sequence ", i, " has rows [", s.token_begin, ", ",
                       s.token_end, ") outside the step's ", rows, " rows"));
    }
    if (s.token_end == s.token_begin) {
      ++n.seqs;
      continue;
    }
    if (s.block_table == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention tables: sequence ", i, " has rows but no block table"));
    }
    int32_t max_pos = 0;
    for (int r = s.token_begin; r < s.token_end; ++r) {
      if (claimed[r]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "attention tables: row ", r, " belongs to sequence ", i, " and an earlier one"));
      }
      claimed[r] = true;
      if (positions[r] < 0 || positions[r] > INT32_MAX - kAttentionPartition) {
        return absl::InvalidArgumentError(
            absl::StrCat("attention tables: row ", r, " has position ", positions[r]));
      }
      if (positions[r] > max_pos) max_pos = positions[r];
      items += AttentionNumPartitions(positions[r] + 1);
    }
    const int64_t seq_blocks = int64_t{max_pos} / block_size + 1;
    for (int64_t b = 0; b < seq_blocks; ++b) {
      if (s.block_table[b] < 0 || s.block_table[b] >= num_pages) {
        return absl::OutOfRangeError(absl::StrCat("attention tables: sequence ", i, " block ", b,
                                                  " names page ", s.block_table[b],
                                                  " but the pool has ", num_pages, " pages"));
      }
    }
    blocks += seq_blocks;
    ++n.seqs;
  }
  if (blocks > INT32_MAX || items > INT32_MAX) {
    return absl::InvalidArgumentError("attention tables: more than 2^31 entries in one table");
  }
  n.blocks = static_cast<int32_t>(blocks);
  n.items = static_cast<int32_t>(items);
  return n;
}

// Fills `out` (host memory laid out by AttentionTableLayoutFor(out.capacity)) for one step and
// neutralises every tail. Each sequence copies the block-table entries up to its last row's
// position; each row gets one work item per partition of [0, position], in order. Nothing is
// written when the step is invalid or does not fit.
inline absl::StatusOr<AttentionTableCounts> BuildAttentionTables(std::span<const AttentionSeq> seqs,
                                                                 std::span<const int32_t> positions,
                                                                 int block_size, int32_t num_pages,
                                                                 const AttentionTables& out) {
  absl::StatusOr<AttentionTableCounts> counts =
      CountAttentionTables(seqs, positions, block_size, num_pages);
  if (!counts.ok()) return counts.status();
  if (absl::Status fits = CheckAttentionCapacity(*counts, out.capacity); !fits.ok()) return fits;
  const int rows = static_cast<int>(positions.size());
  for (int r = 0; r < rows; ++r) {
    out.positions[r] = positions[r];
    out.row_seq[r] = -1;
    out.row_items[r] = kAttentionEmptyRowItems;
  }
  AttentionTableCounts n;
  n.rows = rows;
  for (const AttentionSeq& s : seqs) {
    const int32_t seq = n.seqs++;
    AttentionSeqEntry& e = out.seqs[seq];
    e = {s.token_begin, s.token_end, n.blocks, 0};
    if (s.token_end == s.token_begin) continue;
    int32_t max_pos = 0;
    for (int r = s.token_begin; r < s.token_end; ++r) {
      if (positions[r] > max_pos) max_pos = positions[r];
      out.row_seq[r] = seq;
      const int ctx = positions[r] + 1;
      out.row_items[r].item_begin = n.items;
      for (int p = 0; p < AttentionNumPartitions(ctx); ++p) {
        out.items[n.items++] = {r, seq, AttentionPartitionBegin(p), AttentionPartitionEnd(p, ctx)};
      }
      out.row_items[r].item_end = n.items;
    }
    e.num_blocks = max_pos / block_size + 1;
    for (int32_t b = 0; b < e.num_blocks; ++b) out.block_table[n.blocks++] = s.block_table[b];
  }
  AttentionNeutraliseTails(out, n);
  return n;
}

}  // namespace loraserve::kernels::cuda
