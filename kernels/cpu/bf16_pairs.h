// The paired layout of a bf16 weight matrix, which the AVX-512 linear micro-kernel reads.
//
// Natural bf16 costs a widening load and a shift per vector of weights, and on Intel cores both
// go to the ports the FMAs need (gemm_bench: bf16 ran 10% under fp32 at 64 rows, Xeon AVX-512).
// Paired, each full block of 2 * lanes elements from a row's start stores element j and element
// j + lanes as the low and high half of one 32-bit word. One plain vector load then gives both
// vectors of the block: a shift left by 16 yields elements [0, lanes), a mask of the low halves
// yields [lanes, 2 * lanes), each exactly its fp32 widening. The row's tail after its last full
// block stays natural. The values, and the order the kernel sums them in, are unchanged, so a
// paired weight gives bit-identical results to the natural one.
#pragma once

#include <cstdint>

namespace loraserve::kernels {

// Rewrites `rows` rows of `cols` bf16 elements from natural into paired order (out may not alias
// in). lanes == 0 copies unchanged.
void PairBf16Rows(const uint16_t* in, int64_t rows, int64_t cols, int lanes, uint16_t* out);

// The inverse for one row slice: elements [begin, begin + count) of a paired row of `cols`
// elements, widened to fp32 in natural order (the embedding lookup, the OpenBLAS path and reads
// of the weight back).
void WidenPairedBf16Row(const uint16_t* row, int64_t cols, int lanes, int64_t begin, int64_t count,
                        float* out);

}  // namespace loraserve::kernels
