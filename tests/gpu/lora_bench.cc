// GPU timing of LoraApplyDevice (shrink + expand) on one 4096 -> 4096 projection against its HBM
// floor: bytes that must move (distinct adapters' A and B rank rows, x, y read and written) over
// the device-to-device copy bandwidth measured in the same run. Ranks 8/16/64, rows 1..256,
// distinct adapters 1..256 (one segment each), bf16/fp16 rows in pool cells at shuffled offsets.
// Each timed call starts with a cold L2: calls rotate over copies of the case (other cells, other
// x/y) until about 256 MiB has passed, and a host-side gate holds the stream until every call of
// a case is queued, so the events time the device alone. Built with CUDA, run by tests/gpu/run.sh.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/lora.cuh"
#include "kernels/cuda/lora_table_builder.h"
#include "kernels/plan/lora_plan.h"

namespace loraserve::kernels::cuda {
namespace {

constexpr int kDim = 4096;  // in_dim and out_dim
constexpr int kRanks[] = {8, 16, 64};
constexpr int kRows[] = {1, 4, 16, 64, 256};
constexpr int kAdapters[] = {1, 4, 16, 64, 256};
constexpr int kMaxAdapters = 256;
constexpr int kMaxRank = 64;
// A pool cell holds one 16-bit row of kDim elements (kDim / 2 four-byte units). The pool has a
// quarter more cells than the largest case needs, so even that case's rows land scattered.
constexpr int64_t kCellUnits = kDim / 2;
constexpr int64_t kPoolCells = int64_t{kMaxAdapters} * kMaxRank * 2 * 5 / 4;
// Bytes a case's calls cycle through before reusing a copy: over 4x the H200's 60 MB L2.
constexpr int64_t kRotateBytes = int64_t{256} << 20;
constexpr int kMaxCopies = 1024;
// The goal applies where a call moves at least this much (launch overhead dominates below).
constexpr int64_t kBigBytes = int64_t{16} << 20;
constexpr double kGoalRatio = 1.3;
constexpr int64_t kCopyBytes = int64_t{1} << 30;
// Calls queued behind the gate stay far below the depth at which a launch would block the host.
constexpr int kMaxIters = 200;

#define RETURN_IF_CUDA(call)                                                                      \
  do {                                                                                            \
    const cudaError_t err_ = (call);                                                              \
    if (err_ != cudaSuccess) {                                                                    \
      return absl::InternalError(absl::StrCat(#call, " failed: ", cudaGetErrorString(err_), " (", \
                                              __FILE__, ":", __LINE__, ")"));                     \
    }                                                                                             \
  } while (false)

#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    if (absl::Status s_ = (expr); !s_.ok()) { \
      return s_;                              \
    }                                         \
  } while (false)

// One device (or pinned host) allocation, freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  absl::Status Allocate(size_t bytes, bool pinned_host = false) {
    Reset();
    pinned_ = pinned_host;
    if (pinned_host) {
      RETURN_IF_CUDA(cudaMallocHost(&ptr_, bytes == 0 ? 1 : bytes));
    } else {
      RETURN_IF_CUDA(cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes));
    }
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void Reset() {
    if (ptr_ != nullptr) pinned_ ? cudaFreeHost(ptr_) : cudaFree(ptr_);
    ptr_ = nullptr;
  }
  void* ptr_ = nullptr;
  bool pinned_ = false;
};

// Holds a stream behind a host function until Open(): what is queued behind it then runs back
// to back, with no host launch gaps inside the timed region. The host function gives up after
// kGateTimeout (should a launch ever block while the gate is shut, which would otherwise
// deadlock), and Opened() then reports it. The destructor opens the gate and drains the stream,
// so an early error return neither leaves the stream waiting nor frees the flag while the host
// function still reads it.
class StreamGate {
 public:
  ~StreamGate() {
    Open();
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  }
  absl::Status Close(cudaStream_t stream) {
    open_.store(false, std::memory_order_release);
    RETURN_IF_CUDA(cudaLaunchHostFunc(stream, &StreamGate::Wait, this));
    stream_ = stream;
    return absl::OkStatus();
  }
  void Open() { open_.store(true, std::memory_order_release); }
  // After the stream has drained: whether the calls behind the gate waited for Open().
  absl::Status Opened() const {
    if (!timed_out_.load(std::memory_order_acquire)) return absl::OkStatus();
    return absl::DeadlineExceededError(
        "the stream gate timed out: queuing the timed calls blocked the host; lower --iters");
  }

 private:
  static constexpr auto kGateTimeout = std::chrono::seconds(30);
  static void Wait(void* self) {
    auto* gate = static_cast<StreamGate*>(self);
    const auto deadline = std::chrono::steady_clock::now() + kGateTimeout;
    while (!gate->open_.load(std::memory_order_acquire)) {
      if (std::chrono::steady_clock::now() > deadline) {
        gate->timed_out_.store(true, std::memory_order_release);
        return;
      }
      std::this_thread::yield();
    }
  }
  std::atomic<bool> open_{true};
  std::atomic<bool> timed_out_{false};
  cudaStream_t stream_ = nullptr;
};

struct Options {
  std::string csv;
  std::vector<LoraDtype> dtypes = {LoraDtype::kBF16};
  int iters = 30;
  int warmup = 5;
};

struct CaseResult {
  LoraDtype dtype;
  int rank, rows, adapters, copies;
  int64_t bytes;
  double us_median, us_min, us_max, floor_us, ratio;
};

const char* DtypeName(LoraDtype d) { return d == LoraDtype::kF16 ? "fp16" : "bf16"; }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Bytes one call must move: each distinct adapter's A and B rank rows once, x read, y read and
// written. The partials round trip stays in L2 and is not counted.
int64_t BytesMoved(int rank, int rows, int adapters) {
  const int64_t adapter_bytes = int64_t{adapters} * rank * (kDim + kDim) * 2;
  return adapter_bytes + int64_t{rows} * kDim * 4 + 2 * int64_t{rows} * kDim * 4;
}

// Device-to-device copy bandwidth in GB/s (1e9), counting bytes read and written: the median of
// 20 timed copies of a 1 GiB buffer after 3 warm-ups.
absl::StatusOr<double> MeasureCopyBandwidth(cudaStream_t stream) {
  DeviceBuffer src, dst;
  RETURN_IF_ERROR(src.Allocate(kCopyBytes));
  RETURN_IF_ERROR(dst.Allocate(kCopyBytes));
  RETURN_IF_CUDA(cudaMemsetAsync(src.as<void>(), 1, kCopyBytes, stream));
  cudaEvent_t start, stop;
  RETURN_IF_CUDA(cudaEventCreate(&start));
  RETURN_IF_CUDA(cudaEventCreate(&stop));
  std::vector<double> ms;
  absl::Status status;
  for (int i = 0; i < 23 && status.ok(); ++i) {
    status = [&]() -> absl::Status {
      RETURN_IF_CUDA(cudaEventRecord(start, stream));
      RETURN_IF_CUDA(cudaMemcpyAsync(dst.as<void>(), src.as<void>(), kCopyBytes,
                                     cudaMemcpyDeviceToDevice, stream));
      RETURN_IF_CUDA(cudaEventRecord(stop, stream));
      RETURN_IF_CUDA(cudaEventSynchronize(stop));
      float t = 0;
      RETURN_IF_CUDA(cudaEventElapsedTime(&t, start, stop));
      if (i >= 3) ms.push_back(t);
      return absl::OkStatus();
    }();
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  RETURN_IF_ERROR(status);
  return 2.0 * static_cast<double>(kCopyBytes) / (Median(ms) * 1e-3) / 1e9;
}

// The pool: kPoolCells cells of random 16-bit values that are finite in both fp16 (magnitudes
// 0.5..1) and bf16 (2^-15..2^-8), so one pool serves either dtype.
absl::Status FillPool(float* pool, cudaStream_t stream) {
  constexpr int64_t kChunkCells = 2048;  // 16 MiB per upload
  std::vector<uint16_t> host(static_cast<size_t>(kChunkCells * kCellUnits * 2));
  std::mt19937 rng(7);
  for (int64_t cell = 0; cell < kPoolCells; cell += kChunkCells) {
    const int64_t cells = std::min(kChunkCells, kPoolCells - cell);
    for (int64_t i = 0; i < cells * kCellUnits * 2; ++i) {
      const uint32_t r = rng();
      host[i] = static_cast<uint16_t>(((r >> 16) & 0x8000u) | 0x3800u | (r & 0x3ffu));
    }
    RETURN_IF_CUDA(cudaMemcpyAsync(pool + cell * kCellUnits, host.data(),
                                   static_cast<size_t>(cells * kCellUnits * 4),
                                   cudaMemcpyHostToDevice, stream));
    RETURN_IF_CUDA(cudaStreamSynchronize(stream));
  }
  return absl::OkStatus();
}

// Times one case: `rows` rows split round-robin over `adapters` adapters of rank `rank` (so
// adapter a owns a contiguous segment of rows/adapters rows, one more for the first
// rows % adapters), each adapter's 2 * rank rows in shuffled pool cells.
absl::StatusOr<CaseResult> TimeCase(const float* pool, const std::vector<int64_t>& cell_order,
                                    LoraDtype dtype, int rank, int rows, int adapters,
                                    const Options& opt, double copy_gbs, cudaStream_t stream,
                                    const std::vector<cudaEvent_t>& starts,
                                    const std::vector<cudaEvent_t>& stops) {
  const int64_t bytes = BytesMoved(rank, rows, adapters);
  const int64_t case_cells = int64_t{adapters} * rank * 2;
  // Never more copies than calls, nor than the pool's cells hold.
  const int64_t max_copies =
      std::min<int64_t>({kMaxCopies, kPoolCells / case_cells, int64_t{opt.warmup} + opt.iters});
  const int copies =
      static_cast<int>(std::clamp<int64_t>((kRotateBytes + bytes - 1) / bytes, 1, max_copies));

  // One plan per copy; copy c takes the next case_cells entries of the shuffled cell order.
  std::vector<std::vector<int64_t>> offsets(static_cast<size_t>(copies) * adapters * 2);
  std::vector<std::vector<LoraRef>> refs(copies);
  std::vector<LoraSegment> segments;
  int row = 0;
  for (int a = 0; a < adapters; ++a) {
    const int n = rows / adapters + (a < rows % adapters ? 1 : 0);
    segments.push_back({row, row + n, a, a + 1, nullptr});
    row += n;
  }
  int64_t next = 0;
  for (int c = 0; c < copies; ++c) {
    for (int a = 0; a < adapters; ++a) {
      std::vector<int64_t>& a_rows = offsets[(c * adapters + a) * 2];
      std::vector<int64_t>& b_cols = offsets[(c * adapters + a) * 2 + 1];
      for (int k = 0; k < rank; ++k) {
        a_rows.push_back(cell_order[next++] * kCellUnits);
        b_cols.push_back(cell_order[next++] * kCellUnits);
      }
      refs[c].push_back({rank, 1.0f, a_rows.data(), b_cols.data(), dtype});
    }
  }

  const int64_t pool_units = kPoolCells * kCellUnits;
  absl::StatusOr<LoraTableCounts> counts =
      CountLoraTables(segments, refs[0], pool_units, kDim, kDim);
  if (!counts.ok()) return counts.status();
  const LoraTableCapacity capacity = *counts;
  const int64_t table_bytes = LoraTableLayoutFor(capacity).bytes;
  DeviceBuffer staging, tables, partials, x, y;
  RETURN_IF_ERROR(staging.Allocate(static_cast<size_t>(table_bytes * copies), true));
  RETURN_IF_ERROR(tables.Allocate(static_cast<size_t>(table_bytes * copies)));
  for (int c = 0; c < copies; ++c) {
    const LoraTables host = LoraTablesAt(staging.as<char>() + c * table_bytes, capacity);
    absl::StatusOr<LoraTableCounts> built =
        BuildLoraTables(segments, refs[c], nullptr, pool_units, kDim, kDim, host);
    if (!built.ok()) return built.status();
  }
  RETURN_IF_CUDA(cudaMemcpyAsync(tables.as<void>(), staging.as<void>(),
                                 static_cast<size_t>(table_bytes * copies), cudaMemcpyHostToDevice,
                                 stream));
  const size_t xy_floats = static_cast<size_t>(rows) * kDim * copies;
  RETURN_IF_ERROR(
      partials.Allocate(static_cast<size_t>(LoraPartialsFloats(capacity, kDim)) * sizeof(float)));
  RETURN_IF_ERROR(x.Allocate(xy_floats * sizeof(float)));
  RETURN_IF_ERROR(y.Allocate(xy_floats * sizeof(float)));
  // 0x3c3c3c3c is about 0.0115: x and y stay small and finite over every call.
  RETURN_IF_CUDA(cudaMemsetAsync(x.as<void>(), 0x3c, xy_floats * sizeof(float), stream));
  RETURN_IF_CUDA(cudaMemsetAsync(y.as<void>(), 0, xy_floats * sizeof(float), stream));

  auto launch = [&](int i) {
    const int c = i % copies;
    const int64_t xy = int64_t{c} * rows * kDim;
    return LoraApplyDevice(pool, LoraTablesAt(tables.as<char>() + c * table_bytes, capacity),
                           x.as<float>() + xy, kDim, kDim, partials.as<float>(), y.as<float>() + xy,
                           kDim, kDim, stream);
  };
  for (int i = 0; i < opt.warmup; ++i) RETURN_IF_CUDA(launch(i));
  RETURN_IF_CUDA(cudaStreamSynchronize(stream));
  {
    StreamGate gate;
    RETURN_IF_ERROR(gate.Close(stream));
    for (int i = 0; i < opt.iters; ++i) {
      RETURN_IF_CUDA(cudaEventRecord(starts[i], stream));
      RETURN_IF_CUDA(launch(opt.warmup + i));
      RETURN_IF_CUDA(cudaEventRecord(stops[i], stream));
    }
    gate.Open();
    RETURN_IF_CUDA(cudaStreamSynchronize(stream));
    RETURN_IF_ERROR(gate.Opened());
  }
  RETURN_IF_CUDA(cudaGetLastError());
  std::vector<double> us;
  for (int i = 0; i < opt.iters; ++i) {
    float ms = 0;
    RETURN_IF_CUDA(cudaEventElapsedTime(&ms, starts[i], stops[i]));
    us.push_back(ms * 1e3);
  }
  CaseResult r{dtype, rank, rows, adapters, copies, bytes, Median(us), 0, 0, 0, 0};
  r.us_min = *std::min_element(us.begin(), us.end());
  r.us_max = *std::max_element(us.begin(), us.end());
  r.floor_us = static_cast<double>(bytes) / (copy_gbs * 1e9) * 1e6;
  r.ratio = r.us_median / r.floor_us;
  return r;
}

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](std::string_view flag) -> const char* {
      return arg.substr(0, flag.size()) == flag ? argv[i] + flag.size() : nullptr;
    };
    if (const char* v = value("--csv=")) {
      opt.csv = v;
    } else if (const char* v = value("--iters=")) {
      opt.iters = std::atoi(v);
    } else if (const char* v = value("--warmup=")) {
      opt.warmup = std::atoi(v);
    } else if (const char* v = value("--dtype=")) {
      const std::string_view d = v;
      if (d == "bf16") {
        opt.dtypes = {LoraDtype::kBF16};
      } else if (d == "fp16") {
        opt.dtypes = {LoraDtype::kF16};
      } else if (d == "both") {
        opt.dtypes = {LoraDtype::kBF16, LoraDtype::kF16};
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--dtype=", std::string(d), ": use bf16, fp16 or both"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown argument ", std::string(arg),
                       "; usage: lora_gpu_bench [--csv=PATH] [--dtype=bf16|fp16|both] "
                       "[--iters=N (20..200)] [--warmup=N]"));
    }
  }
  if (opt.iters < 20 || opt.iters > kMaxIters || opt.warmup < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--iters=", opt.iters, " must be 20..", kMaxIters, " and --warmup >= 1"));
  }
  return opt;
}

absl::Status Run(const Options& opt) {
  cudaDeviceProp prop;
  RETURN_IF_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  RETURN_IF_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<cudaEvent_t> starts(opt.iters), stops(opt.iters);
  for (int i = 0; i < opt.iters; ++i) {
    RETURN_IF_CUDA(cudaEventCreate(&starts[i]));
    RETURN_IF_CUDA(cudaEventCreate(&stops[i]));
  }
  absl::StatusOr<double> copy_gbs = MeasureCopyBandwidth(stream);
  if (!copy_gbs.ok()) return copy_gbs.status();
  std::printf(
      "device: %s, %d SMs, L2 %d MiB; copy bandwidth %.0f GB/s (read + write, 1 GiB "
      "cudaMemcpyAsync, median of 20)\n",
      prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20, *copy_gbs);

  DeviceBuffer pool;
  RETURN_IF_ERROR(pool.Allocate(static_cast<size_t>(kPoolCells * kCellUnits) * sizeof(float)));
  RETURN_IF_ERROR(FillPool(pool.as<float>(), stream));
  std::vector<int64_t> cell_order(kPoolCells);
  std::iota(cell_order.begin(), cell_order.end(), 0);
  std::shuffle(cell_order.begin(), cell_order.end(), std::mt19937(11));

  std::FILE* csv = nullptr;
  if (!opt.csv.empty()) {
    csv = std::fopen(opt.csv.c_str(), "w");
    if (csv == nullptr) return absl::NotFoundError(absl::StrCat("cannot write --csv=", opt.csv));
    std::fprintf(csv,
                 "dtype,rank,rows,adapters,bytes,copies,us_median,us_min,us_max,floor_us,ratio,"
                 "ge_16mib,copy_gbs\n");
  }
  std::printf("\n%-5s %4s %4s %8s %9s %10s %10s %7s  %s\n", "dtype", "rank", "rows", "adapters",
              "MiB", "us", "floor_us", "ratio", "(* = moves >= 16 MiB, goal <= 1.3x)");
  std::vector<CaseResult> results;
  absl::Status status;
  for (LoraDtype dtype : opt.dtypes) {
    for (int rank : kRanks) {
      for (int rows : kRows) {
        for (int adapters : kAdapters) {
          if (adapters > rows || !status.ok()) continue;
          absl::StatusOr<CaseResult> r = TimeCase(pool.as<float>(), cell_order, dtype, rank, rows,
                                                  adapters, opt, *copy_gbs, stream, starts, stops);
          if (!r.ok()) {
            status = absl::Status(r.status().code(),
                                  absl::StrCat("rank ", rank, " rows ", rows, " adapters ",
                                               adapters, ": ", r.status().message()));
            continue;
          }
          const bool big = r->bytes >= kBigBytes;
          std::printf("%-5s %4d %4d %8d %9.2f %10.2f %10.2f %6.2fx %s\n", DtypeName(dtype), rank,
                      rows, adapters, static_cast<double>(r->bytes) / (1 << 20), r->us_median,
                      r->floor_us, r->ratio, big ? "*" : "");
          if (csv != nullptr) {
            std::fprintf(csv, "%s,%d,%d,%d,%lld,%d,%.3f,%.3f,%.3f,%.3f,%.4f,%d,%.1f\n",
                         DtypeName(dtype), rank, rows, adapters, static_cast<long long>(r->bytes),
                         r->copies, r->us_median, r->us_min, r->us_max, r->floor_us, r->ratio,
                         big ? 1 : 0, *copy_gbs);
          }
          results.push_back(*r);
        }
      }
    }
  }
  if (csv != nullptr && std::fclose(csv) != 0) {
    status.Update(absl::DataLossError(absl::StrCat("writing --csv=", opt.csv, " failed")));
  }
  for (int i = 0; i < opt.iters; ++i) {
    cudaEventDestroy(starts[i]);
    cudaEventDestroy(stops[i]);
  }
  cudaStreamDestroy(stream);
  RETURN_IF_ERROR(status);

  const CaseResult* worst = nullptr;
  int big = 0, met = 0;
  for (const CaseResult& r : results) {
    if (r.bytes < kBigBytes) continue;
    ++big;
    met += r.ratio <= kGoalRatio ? 1 : 0;
    if (worst == nullptr || r.ratio > worst->ratio) worst = &r;
  }
  if (worst != nullptr) {
    std::printf(
        "\nlora_bench summary: worst ratio %.2fx (goal <= %.1fx) over %d cases >= 16 MiB, at %s "
        "rank %d rows %d adapters %d (%.1f us, floor %.1f us); %d of %d meet the goal\n",
        worst->ratio, kGoalRatio, big, DtypeName(worst->dtype), worst->rank, worst->rows,
        worst->adapters, worst->us_median, worst->floor_us, met, big);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace loraserve::kernels::cuda

int main(int argc, char** argv) {
  absl::StatusOr<loraserve::kernels::cuda::Options> opt =
      loraserve::kernels::cuda::ParseOptions(argc, argv);
  if (!opt.ok()) {
    std::fprintf(stderr, "lora_gpu_bench: %s\n", std::string(opt.status().message()).c_str());
    return 2;
  }
  if (absl::Status s = loraserve::kernels::cuda::Run(*opt); !s.ok()) {
    std::fprintf(stderr, "lora_gpu_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
