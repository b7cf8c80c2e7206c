// LinearForward from decode to prefill batch sizes on the bench model's and SmolLM2's shapes: the
// micro-kernel path against OpenBLAS (the same function with the threshold at 0), warm weights,
// all threads. Behind kMicroKernelMaxRows.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "formats/half.h"
#include "kernels/cpu/bf16_pairs.h"
#include "kernels/cpu/gemm.h"
#include "runtime/backend/host_allocator.h"

namespace loraserve::kernels {
namespace {

using ::loraserve::HostVector;

// Args: rows, in, out, micro (1: default threshold, 0: OpenBLAS only), dtype (0 fp32, 1 bf16,
// 2 fp16: the weight's storage; 3: bf16 in the paired layout the ISA's kernels read,
// bf16_pairs.h, as the CPU backend stores it), isa (0 widest, 1 AVX2 only), misaligned (0: buffers as the CPU
// backend allocates them, on a cache line; 1: 16 bytes past one, where malloc puts large blocks).
void BM_Linear(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0));
  const int in = static_cast<int>(state.range(1));
  const int out = static_cast<int>(state.range(2));
  const detail::LinearOptions options{
      .micro_kernel_max_rows = state.range(3) != 0 ? 1 << 20 : 0,
      .allow_avx512 = state.range(5) == 0};
  const bool paired = state.range(4) == 3;
  const auto dtype = paired ? LoraDtype::kBF16 : static_cast<LoraDtype>(state.range(4));
  const int pair_lanes = paired ? detail::Bf16PairLanes(options) : 0;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const size_t skew = state.range(6) != 0 ? 16 : 0;  // bytes
  HostVector<float> x_buf(static_cast<size_t>(rows) * in + 16),
      w_buf(static_cast<size_t>(out) * in + 16), y_buf(static_cast<size_t>(rows) * out + 16);
  HostVector<uint16_t> bits_buf(static_cast<size_t>(out) * in + 32);
  float* x = x_buf.data() + skew / sizeof(float);
  float* w = w_buf.data() + skew / sizeof(float);
  float* y = y_buf.data() + skew / sizeof(float);
  uint16_t* bits = bits_buf.data() + skew / sizeof(uint16_t);
  for (int64_t i = 0; i < int64_t{rows} * in; ++i) x[i] = uniform(rng);
  for (int64_t i = 0; i < int64_t{out} * in; ++i) {
    w[i] = uniform(rng);
    bits[i] = dtype == LoraDtype::kF16 ? FloatToF16(w[i]) : FloatToBf16(w[i]);
  }
  if (paired) {
    std::vector<uint16_t> natural(bits, bits + int64_t{out} * in);
    PairBf16Rows(natural.data(), out, in, pair_lanes, bits);
  }
  const void* stored = dtype == LoraDtype::kF32 ? static_cast<const void*>(w) : bits;
  const LinearPart part{stored, dtype, out, y, out, pair_lanes};
  for (auto _ : state) {
    detail::LinearForward(x, in, rows, in, part, false, options);
    benchmark::DoNotOptimize(y);
  }
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * rows * in * out,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
// The bench model's MLP up projection (768 -> 2048) and the SmolLM2 one (576 -> 1536).
BENCHMARK(BM_Linear)
    ->ArgNames({"rows", "in", "out", "micro", "dtype", "isa", "misaligned"})
    ->ArgsProduct({{1, 4, 16, 64, 128, 256, 512}, {768}, {2048}, {1, 0}, {0}, {0}, {0}})
    ->ArgsProduct({{1, 16, 64}, {576}, {1536}, {1, 0}, {0}, {0}, {0}})
    // 16-bit weights and the AVX2 tiles on SmolLM2's shape, aligned and as malloc placed them.
    ->ArgsProduct({{1, 16, 64}, {576}, {1536}, {1}, {0, 1, 2, 3}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace loraserve::kernels

BENCHMARK_MAIN();
