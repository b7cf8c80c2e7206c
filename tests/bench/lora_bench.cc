// LoRA decode on one 4096x4096 projection at rank 16: LoraApply against the naive per-request
// loop (two GEMVs per row) and against the memory floor (bytes that must move / copy bandwidth
// measured in this binary); ranks 1 to 512, alone and mixed in one call, on SmolLM2's 576x576.
// Every timed call starts cold: adapter pages, dense copies, x and y are flushed from all cache
// levels with clflushopt first (a 300 MiB L3 would hold them all).
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "kernels/cpu/lora.h"
#include "formats/dtype.h"
#include "tests/bench/bandwidth.h"

namespace loraserve::kernels {
namespace {

constexpr int kDim = 4096;
constexpr int kRank = 16;
constexpr int64_t kCacheLine = 64;

__attribute__((target("clflushopt"))) void EvictWithClflushopt(const char* begin, const char* end) {
  for (const char* p = begin; p < end; p += kCacheLine) _mm_clflushopt(const_cast<char*>(p));
  _mm_mfence();
}

void EvictWithClflush(const char* begin, const char* end) {
  for (const char* p = begin; p < end; p += kCacheLine) _mm_clflush(p);
  _mm_mfence();
}

// Writes back and invalidates every line of `v` in every cache level.
template <typename T>
void Evict(const std::vector<T>& v) {
  const auto first = reinterpret_cast<uintptr_t>(v.data()) & ~uintptr_t{kCacheLine - 1};
  const char* begin = reinterpret_cast<const char*>(first);
  const char* end = reinterpret_cast<const char*>(v.data() + v.size());
  static const bool has_clflushopt = __builtin_cpu_supports("clflushopt");
  has_clflushopt ? EvictWithClflushopt(begin, end) : EvictWithClflush(begin, end);
}

// `rows` decode rows assigned round-robin to `adapters` adapters, sorted into one segment per
// distinct adapter as the scheduler emits them; adapter a has rank ranks[a % ranks.size()] and
// projects dim -> dim. The adapters' rank rows sit in shuffled cells of one pool (the paged
// layout), as fp32 or bf16; the naive loop gets dense fp32 per-adapter copies of the same values.
struct DecodeBatch {
  DecodeBatch(int rows, int adapters, LoraDtype dtype = LoraDtype::kF32, int dim = kDim,
              std::vector<int> ranks = {kRank})
      : rows(rows), distinct(std::min(rows, adapters)), dim(dim), dtype(dtype) {
    std::mt19937 rng(rows * 131 + adapters);
    std::uniform_real_distribution<float> small(-0.01f, 0.01f);
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    for (int a = 0; a < distinct; ++a) adapter_rank.push_back(ranks[a % ranks.size()]);
    const int total_rank = std::accumulate(adapter_rank.begin(), adapter_rank.end(), 0);
    const int cells = 2 * total_rank;
    const int64_t cell = LoraRowUnits(dtype, dim);
    std::vector<int64_t> order(cells);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    pool.resize(static_cast<size_t>(cells) * cell);
    offsets.resize(cells);
    for (int c = 0; c < cells; ++c) offsets[c] = order[c] * cell;
    dense_a.resize(static_cast<size_t>(total_rank) * dim);
    dense_b.resize(static_cast<size_t>(total_rank) * dim);
    // Writes one random row into the pool at `offset` and returns its values as fp32.
    std::vector<float> values(dim);
    std::vector<uint16_t> half(dim);
    auto fill_row = [&](int64_t offset) {
      for (int i = 0; i < dim; ++i) {
        values[i] = small(rng);
        if (dtype == LoraDtype::kBF16) {
          half[i] = FloatToBf16(values[i]);
          values[i] = Bf16ToFloat(half[i]);
        }
      }
      if (dtype == LoraDtype::kBF16) {
        std::memcpy(&pool[offset], half.data(), half.size() * sizeof(uint16_t));
      } else {
        std::copy(values.begin(), values.end(), &pool[offset]);
      }
    };
    int rank_begin = 0;  // of adapter a within the concatenated ranks
    for (int a = 0; a < distinct; ++a) {
      const int rank = adapter_rank[a];
      const int64_t* a_rows = &offsets[2 * rank_begin];
      const int64_t* b_cols = a_rows + rank;
      refs.push_back({rank, 2.0f, a_rows, b_cols, dtype});
      float* da = &dense_a[static_cast<size_t>(rank_begin) * dim];
      float* db = &dense_b[static_cast<size_t>(rank_begin) * dim];
      for (int k = 0; k < rank; ++k) {
        fill_row(a_rows[k]);
        std::copy(values.begin(), values.end(), da + k * dim);
        fill_row(b_cols[k]);
        for (int j = 0; j < dim; ++j) db[j * rank + k] = values[j];
      }
      dense.push_back({rank, 2.0f, da, db});
      rank_begin += rank;
    }
    // Row r uses adapter r % distinct; sorted by adapter, adapter a owns a contiguous run.
    int row = 0;
    for (int a = 0; a < distinct; ++a) {
      const int count = rows / distinct + (a < rows % distinct ? 1 : 0);
      segments.push_back({row, row + count, a, a + 1, nullptr});
      for (int i = 0; i < count; ++i) row_adapter.push_back(a);
      row += count;
    }
    x.resize(static_cast<size_t>(rows) * dim);
    y.resize(static_cast<size_t>(rows) * dim);
    for (float& v : x) v = unit(rng);
  }

  void EvictAll() const {
    Evict(pool);
    Evict(dense_a);
    Evict(dense_b);
    Evict(x);
    Evict(y);
  }

  void Apply(const detail::LoraApplyOptions& options = {}) {
    detail::LoraApply(pool.data(), x.data(), dim, y.data(), dim, dim, dim, segments, refs, options);
  }

  // The floor's bytes: every distinct adapter's A and B once (in its stored dtype), x once, y
  // once.
  double FloorBytes() const {
    const double element = dtype == LoraDtype::kF32 ? 4.0 : 2.0;
    const int total_rank = std::accumulate(adapter_rank.begin(), adapter_rank.end(), 0);
    return element * 2.0 * total_rank * dim + sizeof(float) * 2.0 * rows * dim;
  }

  // Multiply-adds of shrink and expand, 2 FLOPs each.
  double Flops() const {
    double flops = 0;
    for (const LoraSegment& s : segments) {
      flops += 4.0 * (s.row_end - s.row_begin) * adapter_rank[s.refs_begin] * dim;
    }
    return flops;
  }

  int rows, distinct, dim;
  LoraDtype dtype;
  std::vector<int> adapter_rank;
  std::vector<float> pool;
  std::vector<int64_t> offsets;
  std::vector<float> dense_a, dense_b, x, y;
  std::vector<LoraRef> refs;
  std::vector<LoraSegment> segments;
  std::vector<DenseLora> dense;
  std::vector<int> row_adapter;
};

// The median of per-iteration times: the two cores are shared, and one descheduled OpenMP thread
// stalls a whole call for a scheduler tick, which would dominate a mean.
double Median(std::vector<double> samples) {
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

template <typename F>
double TimeCold(const DecodeBatch& batch, F&& f) {
  batch.EvictAll();
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// LoraApply's median cold time per (rows, adapters, dtype), for the naive benchmark's speedups.
std::map<std::tuple<int64_t, int64_t, int64_t>, double>& LoraSecondsByShape() {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, double> seconds;
  return seconds;
}

// Args: rows, adapters, bf16 (0: fp32 pool rows, 1: bf16 pool rows). LoraApply, cold, against
// the memory floor of the bytes it must move.
void BM_LoraDecode(benchmark::State& state) {
  DecodeBatch b(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)),
                state.range(2) != 0 ? LoraDtype::kBF16 : LoraDtype::kF32);
  const double bandwidth = bench::MeasureCopyBandwidthGBs() * 1e9;
  std::vector<double> samples;
  for (auto _ : state) {
    const double t = TimeCold(b, [&] { b.Apply(); });
    state.SetIterationTime(t);
    samples.push_back(t);
    benchmark::DoNotOptimize(b.y.data());
  }
  const double seconds = Median(samples);
  LoraSecondsByShape()[{state.range(0), state.range(1), state.range(2)}] = seconds;
  state.counters["median_us"] = seconds * 1e6;
  const double floor_seconds = b.FloorBytes() / bandwidth;
  state.counters["distinct"] = b.distinct;
  state.counters["floor_us"] = floor_seconds * 1e6;
  state.counters["floor_ratio"] = seconds / floor_seconds;
  state.counters["GBps"] = b.FloorBytes() / seconds / 1e9;
  state.counters["copy_GBps"] = bandwidth / 1e9;
}
BENCHMARK(BM_LoraDecode)
    ->ArgNames({"rows", "adapters", "bf16"})
    ->ArgsProduct({{1, 2, 4, 8, 16, 32, 64}, {1, 8, 64}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Args: rows, adapters. The naive loop over fp32 dense copies, cold, with OpenBLAS's own
// threading; speedup_vs_naive compares LoraApply over fp32 pool rows, speedup_bf16_vs_naive over
// bf16 pool rows (the naive loop stays fp32, as a per-request implementation holds it). Registered after
// the LoraApply benchmarks on purpose: OpenBLAS's pthread pool keeps spinning after a call and
// slows the next OpenMP region on the same cores by an order of magnitude (see the docs), so
// interleaving the two would measure that fight rather than either kernel.
void BM_NaiveDecode(benchmark::State& state) {
  DecodeBatch b(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  std::vector<double> samples;
  for (auto _ : state) {
    const double t = TimeCold(b, [&] {
      NaivePerRequestLora(b.x.data(), kDim, b.y.data(), kDim, kDim, kDim, b.row_adapter, b.dense);
    });
    state.SetIterationTime(t);
    samples.push_back(t);
    benchmark::DoNotOptimize(b.y.data());
  }
  const double seconds = Median(samples);
  state.counters["median_us"] = seconds * 1e6;
  for (const auto& [bf16, counter] : {std::pair{0, "speedup_vs_naive"},
                                      std::pair{1, "speedup_bf16_vs_naive"}}) {
    const auto lora = LoraSecondsByShape().find({state.range(0), state.range(1), bf16});
    if (lora != LoraSecondsByShape().end()) state.counters[counter] = seconds / lora->second;
  }
}

// Args: rows, sgmv (0: force BGMV, 1: force SGMV). One adapter, cold: where SGMV's row-block,
// depth-blocked shrink starts to beat BGMV's rank-split one (sets kSgmvMinRows).
void BM_LoraPathCrossover(benchmark::State& state) {
  DecodeBatch b(static_cast<int>(state.range(0)), 1);
  const detail::LoraApplyOptions options{.sgmv_min_rows = state.range(1) != 0 ? 1 : INT_MAX};
  std::vector<double> samples;
  for (auto _ : state) {
    samples.push_back(TimeCold(b, [&] { b.Apply(options); }));
    state.SetIterationTime(samples.back());
    benchmark::DoNotOptimize(b.y.data());
  }
  const double seconds = Median(samples);
  state.counters["median_us"] = seconds * 1e6;
  state.counters["GFLOPs"] = b.Flops() / seconds / 1e9;
}
BENCHMARK(BM_LoraPathCrossover)
    ->ArgNames({"rows", "sgmv"})
    ->ArgsProduct({{16, 32, 64, 128, 256, 512}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// SmolLM2-135M's q_proj (576 -> 576): the shape docs/kernels_lora.md sizes adapters for.
constexpr int kSmolDim = 576;

// Args: rows, rank, chunks. One adapter on a 576x576 projection, fp32, cold: decode rows (< 64,
// BGMV) and a 256-token prefill (SGMV) at ranks 1 to 512. chunks = 0 gives SGMV one shrink task
// per row block over all ranks (no rank chunks), for comparison with kSgmvTaskRanks.
void BM_LoraRank(benchmark::State& state) {
  DecodeBatch b(static_cast<int>(state.range(0)), 1, LoraDtype::kF32, kSmolDim,
                {static_cast<int>(state.range(1))});
  const detail::LoraApplyOptions options{
      .sgmv_task_ranks = state.range(2) != 0 ? kSgmvTaskRanks : INT_MAX};
  const double bandwidth = bench::MeasureCopyBandwidthGBs() * 1e9;
  std::vector<double> samples;
  for (auto _ : state) {
    samples.push_back(TimeCold(b, [&] { b.Apply(options); }));
    state.SetIterationTime(samples.back());
    benchmark::DoNotOptimize(b.y.data());
  }
  const double seconds = Median(samples);
  state.counters["median_us"] = seconds * 1e6;
  state.counters["floor_us"] = b.FloorBytes() / bandwidth * 1e6;
  state.counters["GFLOPs"] = b.Flops() / seconds / 1e9;
}
BENCHMARK(BM_LoraRank)
    ->ArgNames({"rows", "rank", "chunks"})
    ->ArgsProduct({{1, 8, 256}, {1, 8, 64, 256, 512}, {1}})
    ->Args({256, 256, 0})
    ->Args({256, 512, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Args: rows_per_adapter, padded. Three adapters of rank 1, 8 and 512 in one call on the
// 576x576 projection, each with its own rows (1: decode, BGMV; 64: prefill, SGMV), fp32, cold.
// padded = 1 gives all three rank 512: what padding every adapter to the largest rank would cost.
void BM_LoraMixedRanks(benchmark::State& state) {
  const int per_adapter = static_cast<int>(state.range(0));
  const std::vector<int> ranks =
      state.range(1) != 0 ? std::vector<int>{512, 512, 512} : std::vector<int>{1, 8, 512};
  DecodeBatch b(3 * per_adapter, 3, LoraDtype::kF32, kSmolDim, ranks);
  std::vector<double> samples;
  for (auto _ : state) {
    samples.push_back(TimeCold(b, [&] { b.Apply(); }));
    state.SetIterationTime(samples.back());
    benchmark::DoNotOptimize(b.y.data());
  }
  state.counters["median_us"] = Median(samples) * 1e6;
  state.counters["GFLOPs"] = b.Flops() / Median(samples) / 1e9;
}
BENCHMARK(BM_LoraMixedRanks)
    ->ArgNames({"rows_per_adapter", "padded"})
    ->ArgsProduct({{1, 64}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_NaiveDecode)
    ->ArgNames({"rows", "adapters"})
    ->ArgsProduct({{1, 2, 4, 8, 16, 32, 64}, {1, 8, 64}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace loraserve::kernels

BENCHMARK_MAIN();
