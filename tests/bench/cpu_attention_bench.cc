// CPU paged attention alone, at SmolLM2-135M's shape (9 query heads over 3 KV heads of 64): one
// decode row per sequence over a cached context, every layer of a step in turn, so the cache
// streams from memory as in a real step (a 64-sequence, 129-position cache is 380 MB of fp32 KV,
// far above the L3). Reports the KV read rate beside the machine's copy bandwidth; at batch 64 a
// decode step's attention is bound by that stream.
#include <benchmark/benchmark.h>

#include <chrono>
#include <random>
#include <vector>

#include "kernels/cpu/paged_attention.h"
#include "runtime/backend/host_allocator.h"
#include "tests/bench/bandwidth.h"

namespace loraserve {
namespace {

using kernels::AttentionSeq;
using kernels::KvPageLayout;
namespace detail = kernels::detail;

constexpr int kLayers = 30;
constexpr int kHeads = 9;
constexpr int kKvHeads = 3;
constexpr int kHeadDim = 64;
constexpr int kBlockSize = 16;

struct Problem {
  KvPageLayout layout;
  HostVector<float> pool;           // the backend's allocator
  std::vector<float> malloc_pool;   // plain malloc, as the pool was allocated before
  float* data = nullptr;
  std::vector<int32_t> block_tables;
  std::vector<AttentionSeq> seqs;
  std::vector<int32_t> positions;
  std::vector<float> q, out;
};

// Sequences' pages are interleaved (page p of sequence s is s + p * seqs), as a busy pool's are.
Problem MakeProblem(int seqs, int context, bool plain_malloc) {
  Problem p;
  p.layout = {kBlockSize, kLayers, kKvHeads * kHeadDim};
  const int pages_per_seq = (context + kBlockSize - 1) / kBlockSize;
  // The backend's own allocator (cache-line aligned, huge pages), as the server's pool has, or
  // malloc's (16 bytes past a 4 KiB page: every 64-byte load straddles two lines).
  const size_t floats = static_cast<size_t>(seqs) * pages_per_seq * p.layout.page_floats();
  if (plain_malloc) {
    p.malloc_pool.resize(floats);
    p.data = p.malloc_pool.data();
  } else {
    p.pool.resize(floats);
    p.data = p.pool.data();
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t i = 0; i < floats; ++i) p.data[i] = dist(rng);
  p.block_tables.resize(static_cast<size_t>(seqs) * pages_per_seq);
  for (int s = 0; s < seqs; ++s)
    for (int page = 0; page < pages_per_seq; ++page)
      p.block_tables[s * pages_per_seq + page] = s + page * seqs;
  for (int s = 0; s < seqs; ++s) {
    p.seqs.push_back({s, s + 1, p.block_tables.data() + s * pages_per_seq});
    p.positions.push_back(context - 1);
  }
  p.q.resize(static_cast<size_t>(seqs) * kHeads * kHeadDim);
  for (float& v : p.q) v = dist(rng);
  p.out.resize(p.q.size());
  return p;
}

// Args: sequences, cached positions, ISA (0 = best, 1 = AVX2), pool allocation (0 = the
// backend's, 1 = plain malloc).
void BM_DecodeAttention(benchmark::State& state) {
  const int seqs = static_cast<int>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  detail::AttentionOptions options;
  options.allow_avx512 = state.range(2) == 0;
  Problem p = MakeProblem(seqs, context, state.range(3) == 1);
  const int64_t ld = int64_t{kHeads} * kHeadDim;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (int layer = 0; layer < kLayers; ++layer) {
      detail::PagedAttention(p.data, p.layout, layer, p.seqs, p.positions.data(),
                             p.q.data(), ld, kHeads, kKvHeads, kHeadDim, p.out.data(), ld,
                             options);
    }
    benchmark::DoNotOptimize(p.out.data());
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double kv_bytes = 4.0 * seqs * context * kLayers * 2 * p.layout.kv_dim;
  state.counters["kv_GBps"] = benchmark::Counter(kv_bytes, benchmark::Counter::kIsIterationInvariantRate);
  static const double copy_gbps = bench::MeasureCopyBandwidthGBs();
  state.counters["copy_GBps"] = copy_gbps;
}
BENCHMARK(BM_DecodeAttention)
    ->ArgNames({"seqs", "context", "avx2", "malloc"})
    ->Args({1, 129, 0, 0})
    ->Args({64, 40, 0, 0})
    ->Args({64, 40, 0, 1})
    ->Args({64, 129, 0, 0})
    ->Args({64, 129, 0, 1})
    ->Args({64, 129, 1, 0})
    ->Args({64, 129, 1, 1})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace loraserve

BENCHMARK_MAIN();
