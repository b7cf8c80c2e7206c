// The paged KV cache layout as plain, device-neutral data. A page holds one KV block for every
// layer: [layer][k|v][slot < block_size][kv_dim] in 4-byte units, so a sequence's cache is a list
// of page ids (its block table) and the same ids and offsets address host and device pools.
#pragma once

#include <cstdint>

#include "formats/host_device.h"

namespace loraserve::kernels {

struct KvPageLayout {
  int block_size = 16;
  int num_layers = 0;
  int kv_dim = 0;

  LORASERVE_HOST_DEVICE int64_t page_floats() const {
    return int64_t{num_layers} * 2 * block_size * kv_dim;
  }
  // Offset of the key (kv = 0) or value (kv = 1) vector of `slot` in `page` for `layer`.
  LORASERVE_HOST_DEVICE int64_t Offset(int32_t page, int layer, int kv, int slot) const {
    return page * page_floats() + ((int64_t{layer} * 2 + kv) * block_size + slot) * kv_dim;
  }
};

// Rows [token_begin, token_end) of the step belong to one sequence; row r sits at positions[r]
// and attends to every cached position <= positions[r] of that sequence.
struct AttentionSeq {
  int token_begin = 0;
  int token_end = 0;
  const int32_t* block_table = nullptr;
};

}  // namespace loraserve::kernels
