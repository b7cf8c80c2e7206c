// CUDA KV-cache store over the same paged layout as the CPU (kernels/plan/kv_layout.h): page
// ids and 4-byte-unit offsets are the host PagePool's, so the host stays the one bookkeeper.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/plan/kv_layout.h"

namespace loraserve::kernels::cuda {

// For each row r < rows: the key and value vectors (kv_dim floats at k + r * ld, v + r * ld)
// go to `layer` of the cache slot row_slots[r] = page * block_size + slot (the device image of
// the block tables, one entry per step row); a negative slot skips the row (the padding rows
// of a graph step belong to no sequence). All pointers are device memory.
cudaError_t StoreKv(float* pool, KvPageLayout layout, int layer, const int32_t* row_slots,
                    const float* k, const float* v, int64_t ld, int rows, cudaStream_t stream);

}  // namespace loraserve::kernels::cuda
