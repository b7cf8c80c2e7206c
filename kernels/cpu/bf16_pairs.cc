#include "kernels/cpu/bf16_pairs.h"

#include <cstring>

#include "formats/half.h"

namespace loraserve::kernels {
namespace {

// Where natural element i of a row sits in its paired form.
int64_t PairedIndex(int64_t i, int64_t cols, int lanes) {
  const int64_t block = 2 * int64_t{lanes};
  if (lanes == 0 || i >= cols / block * block) return i;
  const int64_t start = i / block * block, j = i - start;
  return start + (j < lanes ? 2 * j : 2 * (j - lanes) + 1);
}

}  // namespace

void PairBf16Rows(const uint16_t* in, int64_t rows, int64_t cols, int lanes, uint16_t* out) {
  if (lanes == 0) {
    std::memcpy(out, in, static_cast<size_t>(rows * cols) * sizeof(uint16_t));
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = in + r * cols;
    uint16_t* dst = out + r * cols;
    for (int64_t i = 0; i < cols; ++i) dst[PairedIndex(i, cols, lanes)] = src[i];
  }
}

void WidenPairedBf16Row(const uint16_t* row, int64_t cols, int lanes, int64_t begin, int64_t count,
                        float* out) {
  if (lanes == 0 || begin != 0 || count != cols) {
    for (int64_t i = 0; i < count; ++i) {
      out[i] = Bf16ToFloat(row[PairedIndex(begin + i, cols, lanes)]);
    }
    return;
  }
  // A whole row (the OpenBLAS path widens every row of a block): block by block, no index math
  // per element.
  const int64_t block = 2 * int64_t{lanes}, whole = cols / block * block;
  for (int64_t b = 0; b < whole; b += block) {
    for (int j = 0; j < lanes; ++j) {
      out[b + j] = Bf16ToFloat(row[b + 2 * j]);
      out[b + lanes + j] = Bf16ToFloat(row[b + 2 * j + 1]);
    }
  }
  for (int64_t i = whole; i < cols; ++i) out[i] = Bf16ToFloat(row[i]);
}

}  // namespace loraserve::kernels
