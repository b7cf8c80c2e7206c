// Two paths, both splitting output features across OpenMP threads so each thread streams its
// slice of W from memory once:
// - On AVX2/AVX-512 CPUs, batches up to kMicroKernelMaxRows rows use the LoRA shrink
//   micro-kernels, which compute exactly out = x W^T for a block of W rows: one W vector load
//   feeds up to four rows (six on AVX-512, which reads bf16 in bf16_pairs.h's layout), the
//   input is walked in L1-sized depth blocks, nothing is packed, and the next tile of W rows is
//   prefetched while this one is read (the batch-1 weight stream).
//   OpenBLAS's sgemm repacks both operands on every call, which dominates at decode batch
//   sizes, and Debian's 0.3.21 runs its SSE3 kernels on recent Xeons (docs/PERFORMANCE.md).
// - Otherwise OpenBLAS, single-threaded inside our split: its pthread pool spins after each call
//   and stalls the next OpenMP region (the LoRA and attention kernels) by a scheduler tick,
//   which cost more than the GEMMs on small models.
#include "kernels/cpu/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "formats/half.h"

#include "kernels/cpu/bf16_pairs.h"
#include "kernels/cpu/lora.h"
#include "kernels/cpu/lora_microkernels.h"

namespace loraserve::kernels {
namespace {

// Below this many multiply-adds a single thread is faster than a fork/join.
constexpr int64_t kParallelMinWork = 1 << 16;
// Output features per task, at most: a 64-row block of W at a 1024-feature depth block is
// 256 KB (L2) and is reused by every 4-row tile of x; the x tile (16 KB) stays in L1 across the
// block.
constexpr int kMaxBlockOutputs = 64;
constexpr int kBlockDepth = 1024;
// Parts one fused region takes (q/k/v is 3); more run one LinearForward each.
constexpr int kMaxFusedParts = 4;

// Output features per block: at most kMaxBlockOutputs, and a block count that is a multiple of
// the thread count, so a static split is even (576 outputs on 2 threads: 10 blocks of 58, not 9
// of 64; 192: 4 of 48, not 3 of 64). At most 4 rows (one row tile) nothing is reused across row
// tiles, so each thread takes one contiguous slice: its weight stream then runs sequentially,
// prefetched a tile ahead (LinearFn), and only a slice's last tile prefetches nothing.
int BlockOutputs(int out, int threads, int rows) {
  if (rows <= 4) return ((out + threads - 1) / threads + 15) / 16 * 16;
  const int per_thread_blocks = (out + threads * kMaxBlockOutputs - 1) / (threads * kMaxBlockOutputs);
  const int blocks = threads * per_thread_blocks;
  return (out + blocks - 1) / blocks;
}

int64_t ElementBytes(LoraDtype dtype) { return dtype == LoraDtype::kF32 ? 4 : 2; }

const void* WeightRow(const void* weight, LoraDtype dtype, int64_t row, int in) {
  return static_cast<const char*>(weight) + row * in * ElementBytes(dtype);
}

// Every part's output features as one list of blocks (each part cut by BlockOutputs), run in
// one parallel region: one weight for LinearForward, q/k/v or gate/up for LinearForwardFused.
// Blocks of different parts differ in size, so they are handed out dynamically.
void MicroKernelLinear(const lora_internal::MicroKernels& mk, const float* x, int64_t ldx,
                       int rows, int in, const LinearPart* parts, int num_parts, bool accumulate,
                       int threads) {
  int block_size[kMaxFusedParts], first_block[kMaxFusedParts + 1] = {0};
  for (int p = 0; p < num_parts; ++p) {
    block_size[p] = BlockOutputs(parts[p].out, threads, rows);
    first_block[p + 1] = first_block[p] + (parts[p].out + block_size[p] - 1) / block_size[p];
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (int b = 0; b < first_block[num_parts]; ++b) {
    int p = 0;
    while (b >= first_block[p + 1]) ++p;
    const LinearPart& part = parts[p];
    const int begin = (b - first_block[p]) * block_size[p];
    const int count = std::min(part.out, begin + block_size[p]) - begin;
    const bool paired = part.dtype == LoraDtype::kBF16 && part.bf16_pair_lanes != 0;
    const lora_internal::LinearFn linear = paired ? mk.linear_bf16_paired
                                               : mk.linear[static_cast<int>(part.dtype)];
    const void* w = WeightRow(part.weight, part.dtype, begin, in);
    // Depth blocks at every batch size, so a row's sums do not depend on its batch.
    for (int i = 0; i < in; i += kBlockDepth) {
      linear(w, in, count, x, ldx, rows, i, std::min(in, i + kBlockDepth),
             /*accumulate=*/accumulate || i > 0, part.y + begin, part.ldy);
    }
  }
}

void PinOpenBlasToOneThread() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

// 16-bit weights on the OpenBLAS path (batches above the micro-kernel threshold, or CPUs without
// AVX2): each thread widens blocks of its W rows into an L2-sized fp32 scratch and runs sgemm
// on them. A large batch reuses every widened block across all its rows, so the widening is
// a small share of the work there.
void WidenedBlasLinear(const float* x, int64_t ldx, const void* weight, LoraDtype dtype,
                       int pair_lanes, int rows, int in, int out, float* y, int64_t ldy,
                       bool accumulate, int threads) {
  PinOpenBlasToOneThread();
  const float beta = accumulate ? 1.0f : 0.0f;
  const int block = std::max(1, std::min(out, static_cast<int>((256 << 10) / (4 * int64_t{in}))));
  const int blocks = (out + block - 1) / block;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> widened(static_cast<size_t>(block) * in);
#pragma omp for schedule(static)
    for (int b = 0; b < blocks; ++b) {
      const int begin = b * block;
      const int count = std::min(out, begin + block) - begin;
      const uint16_t* bits = static_cast<const uint16_t*>(WeightRow(weight, dtype, begin, in));
      const int64_t n = static_cast<int64_t>(count) * in;
      if (pair_lanes != 0) {
        for (int o = 0; o < count; ++o) {
          WidenPairedBf16Row(bits + int64_t{o} * in, in, pair_lanes, 0, in,
                             widened.data() + int64_t{o} * in);
        }
      } else if (dtype == LoraDtype::kBF16) {
        for (int64_t i = 0; i < n; ++i) widened[i] = Bf16ToFloat(bits[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) widened[i] = F16ToFloat(bits[i]);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, count, in, 1.0f, x, ldx,
                  widened.data(), in, beta, y + begin, ldy);
    }
  }
}

// Whether mk's linear kernels read part's weight as it is stored: natural storage always, a
// paired bf16 weight only in the pairing mk reads.
bool KernelsReadLayout(const lora_internal::MicroKernels& mk, const LinearPart& part) {
  return part.bf16_pair_lanes == 0 ||
         (part.dtype == LoraDtype::kBF16 && part.bf16_pair_lanes == mk.bf16_pair_lanes);
}

}  // namespace

namespace detail {

int Bf16PairLanes(const LinearOptions& options) {
  const lora_internal::MicroKernels* mk =
      lora_internal::SimdMicroKernels(options.allow_avx512, options.allow_avx2);
  return mk == nullptr ? 0 : mk->bf16_pair_lanes;
}

void LinearForward(const float* x, int64_t ldx, const void* weight, LoraDtype dtype, int rows,
                   int in, int out, float* y, int64_t ldy, bool accumulate,
                   const LinearOptions& options) {
  LinearForward(x, ldx, rows, in, LinearPart{weight, dtype, out, y, ldy}, accumulate, options);
}

void LinearForward(const float* x, int64_t ldx, int rows, int in, const LinearPart& part,
                   bool accumulate, const LinearOptions& options) {
  const void* weight = part.weight;
  const LoraDtype dtype = part.dtype;
  const int out = part.out;
  float* y = part.y;
  const int64_t ldy = part.ldy;
  const int pair_lanes = dtype == LoraDtype::kBF16 ? part.bf16_pair_lanes : 0;
  const int64_t work = static_cast<int64_t>(rows) * in * out;
  const int threads = work < kParallelMinWork ? 1 : std::min(omp_get_max_threads(), out / 16 + 1);
  if (rows <= options.micro_kernel_max_rows) {
    const lora_internal::MicroKernels* mk =
        lora_internal::SimdMicroKernels(options.allow_avx512, options.allow_avx2);
    if (mk != nullptr && (pair_lanes == 0 || KernelsReadLayout(*mk, part))) {
      MicroKernelLinear(*mk, x, ldx, rows, in, &part, 1, accumulate, threads);
      return;
    }
  }
  if (dtype != LoraDtype::kF32) {
    WidenedBlasLinear(x, ldx, weight, dtype, pair_lanes, rows, in, out, y, ldy, accumulate,
                      threads);
    return;
  }
  PinOpenBlasToOneThread();
  const float beta = accumulate ? 1.0f : 0.0f;
  // Column blocks of W (rows of the PyTorch weight) are independent: thread t owns outputs
  // [begin, end) and reads only that slice of W, so the weight streams from memory once.
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    const int n = omp_get_num_threads();
    const int chunk = ((out + n - 1) / n + 15) / 16 * 16;
    const int begin = std::min(out, t * chunk);
    const int end = std::min(out, begin + chunk);
    if (end > begin) {
      const float* w = static_cast<const float*>(weight) + static_cast<int64_t>(begin) * in;
      if (rows == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, end - begin, in, 1.0f, w, in, x, 1, beta,
                    y + begin, 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, end - begin, in, 1.0f, x, ldx,
                    w, in, beta, y + begin, ldy);
      }
    }
  }
}

void LinearForwardFused(const float* x, int64_t ldx, int rows, int in, const LinearPart* parts,
                        int num_parts, const LinearOptions& options) {
  const lora_internal::MicroKernels* mk =
      rows <= options.micro_kernel_max_rows
          ? lora_internal::SimdMicroKernels(options.allow_avx512, options.allow_avx2)
          : nullptr;
  int64_t total_out = 0;
  for (int p = 0; p < num_parts; ++p) total_out += parts[p].out;
  const int64_t work = static_cast<int64_t>(rows) * in * total_out;
  bool layouts_match = true;
  for (int p = 0; p < num_parts && mk != nullptr; ++p) {
    layouts_match &= KernelsReadLayout(*mk, parts[p]);
  }
  if (mk == nullptr || !layouts_match || num_parts == 1 || num_parts > kMaxFusedParts ||
      work < kParallelMinWork) {
    for (int p = 0; p < num_parts; ++p) {
      LinearForward(x, ldx, rows, in, parts[p], /*accumulate=*/false, options);
    }
    return;
  }
  const int threads = std::min<int64_t>(omp_get_max_threads(), total_out / 16 + 1);
  MicroKernelLinear(*mk, x, ldx, rows, in, parts, num_parts, /*accumulate=*/false, threads);
}

}  // namespace detail

void LinearForwardFused(const float* x, int64_t ldx, int rows, int in, const LinearPart* parts,
                        int num_parts) {
  detail::LinearForwardFused(x, ldx, rows, in, parts, num_parts, {});
}

void LinearForward(const float* x, int64_t ldx, const float* weight, int rows, int in, int out,
                   float* y, int64_t ldy, bool accumulate) {
  detail::LinearForward(x, ldx, weight, LoraDtype::kF32, rows, in, out, y, ldy, accumulate, {});
}

void LinearForward(const float* x, int64_t ldx, const void* weight, LoraDtype dtype, int rows,
                   int in, int out, float* y, int64_t ldy, bool accumulate) {
  detail::LinearForward(x, ldx, weight, dtype, rows, in, out, y, ldy, accumulate, {});
}

void AddBias(float* y, int64_t ldy, int rows, int out, const float* bias) {
  for (int r = 0; r < rows; ++r) {
    float* yr = y + r * ldy;
    for (int i = 0; i < out; ++i) yr[i] += bias[i];
  }
}

}  // namespace loraserve::kernels
