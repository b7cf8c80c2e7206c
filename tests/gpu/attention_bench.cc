// Paged decode attention on Llama-7B shapes (32 heads, 32 KV heads, head_dim 128, block 16, fp32
// KV, one layer) at batch {1, 64, 256} x context {512, 2048, 8192}: median time of N timed
// launches after warm-up, the KV bytes each launch must read, and that rate as a fraction of a
// device-to-device copy's bandwidth measured in the same run (read + write bytes of a 1 GiB
// cudaMemcpyAsync). Pages are shuffled over the pool, as a long-running server's are. Cases
// whose KV would pass 20 GiB are skipped. Needs a GPU; it has only been compiled so far.
// Usage: attention_bench [timed_iterations (default 20)]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_table_builder.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kHeads = 32;
constexpr int kKvHeads = 32;
constexpr int kHeadDim = 128;
constexpr int kBlock = 16;
constexpr int kWarmup = 3;
constexpr double kMaxKvBytes = 20.0 * (1ull << 30);

bool Check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return true;
  std::fprintf(stderr, "attention_bench: %s: %s\n", what, cudaGetErrorString(err));
  return false;
}

// Median milliseconds of `iters` runs of `body`, each timed with its own event pair.
template <typename Body>
double MedianMs(int iters, cudaStream_t stream, Body body) {
  for (int i = 0; i < kWarmup; ++i) body();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(start, stream);
    body();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float t = 0.0f;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Bytes per second of a D2D copy, counting both the read and the write.
double CopyBandwidth(int iters, cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  void* a = nullptr;
  void* b = nullptr;
  if (!Check(cudaMalloc(&a, bytes), "cudaMalloc copy source") ||
      !Check(cudaMalloc(&b, bytes), "cudaMalloc copy target")) {
    cudaFree(a);
    return 0.0;
  }
  cudaMemsetAsync(a, 1, bytes, stream);
  const double ms = MedianMs(
      iters, stream, [&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3);
}

// One decode step of `batch` sequences, each with one new row at position context - 1.
void RunCase(int batch, int context, int iters, double copy_bw, cudaStream_t stream) {
  const KvPageLayout layout{kBlock, 1, kKvHeads * kHeadDim};
  const int blocks_per_seq = (context + kBlock - 1) / kBlock;
  const int32_t num_pages = batch * blocks_per_seq;
  const double kv_bytes = 2.0 * batch * context * layout.kv_dim * sizeof(float);
  if (kv_bytes > kMaxKvBytes) {
    std::printf("%6d %8d  skipped: %.1f GiB of KV exceeds the 20 GiB cap\n", batch, context,
                kv_bytes / (1ull << 30));
    return;
  }
  std::vector<int32_t> pages(num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), std::mt19937(batch * 7919 + context));
  std::vector<AttentionSeq> seqs(batch);
  std::vector<int32_t> positions(batch, context - 1);
  for (int s = 0; s < batch; ++s) {
    seqs[s] = {s, s + 1, pages.data() + static_cast<size_t>(s) * blocks_per_seq};
  }
  const AttentionTableCapacity capacity = AttentionCapacityFor({batch, batch, context}, kBlock);
  const AttentionTableLayout table_layout = AttentionTableLayoutFor(capacity);
  const size_t pool_bytes = static_cast<size_t>(num_pages * layout.page_floats()) * sizeof(float);
  const size_t q_bytes = static_cast<size_t>(batch) * kHeads * kHeadDim * sizeof(float);
  const size_t scratch_bytes =
      static_cast<size_t>(AttentionScratchFloats(capacity, kHeads, kHeadDim)) * sizeof(float);
  void *pool = nullptr, *q = nullptr, *out = nullptr, *scratch = nullptr, *tables = nullptr;
  void* staging = nullptr;
  bool ok =
      Check(cudaMalloc(&pool, pool_bytes), "cudaMalloc pool") &&
      Check(cudaMalloc(&q, q_bytes), "cudaMalloc q") &&
      Check(cudaMalloc(&out, q_bytes), "cudaMalloc out") &&
      Check(cudaMalloc(&scratch, scratch_bytes), "cudaMalloc scratch") &&
      Check(cudaMalloc(&tables, static_cast<size_t>(table_layout.bytes)), "cudaMalloc tables") &&
      Check(cudaMallocHost(&staging, static_cast<size_t>(table_layout.bytes)), "pinned staging");
  if (ok) {
    // 0x3c bytes are floats near 0.0115: finite, so the softmax does real work.
    cudaMemsetAsync(pool, 0x3c, pool_bytes, stream);
    cudaMemsetAsync(q, 0x3c, q_bytes, stream);
    absl::StatusOr<AttentionTableCounts> built = BuildAttentionTables(
        seqs, positions, kBlock, num_pages, AttentionTablesAt(staging, capacity));
    if (!built.ok()) {
      std::fprintf(stderr, "attention_bench: %s\n", built.status().ToString().c_str());
      ok = false;
    }
  }
  if (ok) {
    cudaMemcpyAsync(tables, staging, static_cast<size_t>(table_layout.bytes),
                    cudaMemcpyHostToDevice, stream);
    const AttentionTables t = AttentionTablesAt(tables, capacity);
    const int64_t ld = int64_t{kHeads} * kHeadDim;
    cudaError_t err = cudaSuccess;
    const double ms = MedianMs(iters, stream, [&] {
      const cudaError_t e = PagedAttention(
          static_cast<const float*>(pool), layout, 0, t, static_cast<float*>(q), ld, kHeads,
          kKvHeads, kHeadDim, static_cast<float*>(scratch), static_cast<float*>(out), ld, stream);
      if (err == cudaSuccess) err = e;
    });
    if (Check(err, "PagedAttention") && Check(cudaStreamSynchronize(stream), "run")) {
      const double bw = kv_bytes / (ms * 1e-3);
      std::printf("%6d %8d %10.3f %10.1f %9.1f %7.1f%%\n", batch, context, ms * 1e3,
                  kv_bytes / (1 << 20), bw / 1e9, 100.0 * bw / copy_bw);
    }
  }
  cudaFree(pool);
  cudaFree(q);
  cudaFree(out);
  cudaFree(scratch);
  cudaFree(tables);
  cudaFreeHost(staging);
}

}  // namespace
}  // namespace loraserve::kernels::cuda

int main(int argc, char** argv) {
  using namespace loraserve::kernels::cuda;
  const int iters = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
  cudaDeviceProp prop{};
  if (!Check(cudaGetDeviceProperties(&prop, 0), "no CUDA device")) return 1;
  cudaStream_t stream;
  if (!Check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream")) return 1;
  const double copy_bw = CopyBandwidth(iters, stream);
  if (copy_bw <= 0.0) return 1;
  std::printf("device: %s; D2D copy %.1f GB/s (read + write); median of %d after %d warm-up\n",
              prop.name, copy_bw / 1e9, iters, kWarmup);
  std::printf("shape: %d heads, %d KV heads, head_dim %d, block %d, fp32 KV, split-KV %d\n", kHeads,
              kKvHeads, kHeadDim, kBlock, kAttentionPartition);
  std::printf("%6s %8s %10s %10s %9s %8s\n", "batch", "context", "time_us", "KV_MiB", "GB/s",
              "of_copy");
  for (int batch : {1, 64, 256}) {
    for (int context : {512, 2048, 8192}) RunCase(batch, context, iters, copy_bw, stream);
  }
  cudaStreamDestroy(stream);
  return 0;
}
