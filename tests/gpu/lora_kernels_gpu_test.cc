// GPU parity of the CUDA LoRA kernels (kernels/cuda/lora.cuh) against kernels/cpu's
// LoraApplyReference on identical pool bytes: ranks {1, 8, 16, 64, 256, 512} mixed, weighted
// sets with negative weights, DoRA, base-only rows, fp32/bf16/fp16 rows; bitwise determinism
// across runs; CUDA-graph replay after the plan changes equal to eager; launcher errors as
// values. Needs a GPU: built with CUDA, run by tests/gpu/run.sh, not registered in ctest.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/lora.h"
#include "kernels/cuda/lora.cuh"
#include "kernels/cuda/lora_table_builder.h"
#include "tests/gpu/device_buffer.h"
#include "tests/kernels/cuda/lora_test_problem.h"

namespace loraserve::kernels::cuda {
namespace {

using testing::LoraProblem;
using testing::MakeLoraProblem;
using testing::MixedAdapters;
using testing::MixedSegments;

using ::loraserve::kernels::testing::DeviceBuffer;

// A problem's pool, x and y on the device, and table buffers (pinned staging + device) sized
// for `capacity`.
struct DeviceProblem {
  DeviceProblem(const LoraProblem& p, const LoraTableCapacity& c)
      : capacity(c),
        layout(LoraTableLayoutFor(c)),
        pool(p.pool.size() * sizeof(float)),
        x(p.x.size() * sizeof(float)),
        y(p.y.size() * sizeof(float)),
        partials(static_cast<size_t>(LoraPartialsFloats(c, p.in_dim)) * sizeof(float)),
        tables(static_cast<size_t>(layout.bytes)) {}
  LoraTableCapacity capacity;
  LoraTableLayout layout;
  DeviceBuffer pool, x, y, partials, tables;
  LoraTables device_tables() const { return LoraTablesAt(tables.as<void>(), capacity); }
};

LoraTableCapacity CapacityFor(const LoraTableCounts& n, int slack) {
  return {n.segments + slack,    n.rank_rows + slack,   n.bgmv_shrink + slack,
          n.sgmv_shrink + slack, n.bgmv_expand + slack, n.sgmv_expand + slack,
          n.v_floats + slack};
}

// Builds `p`'s tables into pinned staging and copies pool, x, y and the tables to `d`.
void Upload(const LoraProblem& p, DeviceProblem& d, cudaStream_t stream) {
  ASSERT_TRUE(d.pool.as<void>() != nullptr && d.x.as<void>() != nullptr &&
              d.y.as<void>() != nullptr && d.partials.as<void>() != nullptr &&
              d.tables.as<void>() != nullptr)
      << "cudaMalloc failed";
  void* staging = nullptr;
  ASSERT_CUDA(cudaMallocHost(&staging, static_cast<size_t>(d.layout.bytes) + 1));
  const LoraTables host = LoraTablesAt(staging, d.capacity);
  absl::StatusOr<LoraTableCounts> built = BuildLoraTables(
      p.segments, p.refs, p.pool.data(), std::ssize(p.pool), p.in_dim, p.out_dim, host);
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_CUDA(cudaMemcpyAsync(d.tables.as<void>(), staging, d.tables.bytes(),
                              cudaMemcpyHostToDevice, stream));
  ASSERT_LE(p.pool.size() * sizeof(float), d.pool.bytes());
  ASSERT_LE(p.x.size() * sizeof(float), d.x.bytes());
  ASSERT_LE(p.y.size() * sizeof(float), d.y.bytes());
  ASSERT_CUDA(cudaMemcpyAsync(d.pool.as<void>(), p.pool.data(), p.pool.size() * sizeof(float),
                              cudaMemcpyHostToDevice, stream));
  ASSERT_CUDA(cudaMemcpyAsync(d.x.as<void>(), p.x.data(), p.x.size() * sizeof(float),
                              cudaMemcpyHostToDevice, stream));
  ASSERT_CUDA(cudaMemcpyAsync(d.y.as<void>(), p.y.data(), p.y.size() * sizeof(float),
                              cudaMemcpyHostToDevice, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  ASSERT_CUDA(cudaFreeHost(staging));
}

std::vector<float> Download(const LoraProblem& p, const DeviceProblem& d) {
  std::vector<float> y(p.y.size());
  if (cudaMemcpy(y.data(), d.y.as<void>(), y.size() * sizeof(float), cudaMemcpyDeviceToHost) !=
      cudaSuccess) {
    ADD_FAILURE() << "copying y back failed";
  }
  return y;
}

// Device result against the reference: rows of working segments within tolerance, every other
// element unchanged bit for bit.
void ExpectParity(const LoraProblem& p, const std::vector<float>& got) {
  std::vector<float> want = p.y;
  LoraApplyReference(p.pool.data(), p.x.data(), p.ldx, want.data(), p.ldy, p.in_dim, p.out_dim,
                     p.segments, p.refs);
  for (const LoraSegment& s : p.segments) {
    for (int r = s.row_begin; r < s.row_end; ++r) {
      for (int j = 0; j < p.ldy; ++j) {
        const int64_t at = r * p.ldy + j;
        if (LoraSegmentHasWork(s) && j < p.out_dim) {
          ASSERT_NEAR(got[at], want[at], 2e-4f * (8.0f + std::abs(want[at])))
              << "row " << r << " col " << j;
        } else {
          ASSERT_EQ(std::memcmp(&got[at], &p.y[at], sizeof(float)), 0)
              << "row " << r << " col " << j;
        }
      }
    }
  }
}

std::vector<float> RunEager(const LoraProblem& p, int slack) {
  absl::StatusOr<LoraTableCounts> n =
      CountLoraTables(p.segments, p.refs, std::ssize(p.pool), p.in_dim, p.out_dim);
  if (!n.ok()) {
    ADD_FAILURE() << n.status();
    return {};
  }
  DeviceProblem d(p, CapacityFor(*n, slack));
  Upload(p, d, nullptr);
  EXPECT_EQ(LoraApplyDevice(d.pool.as<float>(), d.device_tables(), d.x.as<float>(), p.ldx, p.in_dim,
                            d.partials.as<float>(), d.y.as<float>(), p.ldy, p.out_dim, nullptr),
            cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return Download(p, d);
}

TEST(LoraKernelsGpuTest, MatchesReferenceOnMixedRanksDtypesWeightsAndDora) {
  for (uint32_t seed : {101u, 202u}) {
    const LoraProblem p = MakeLoraProblem(4096, 1024, MixedAdapters(), MixedSegments(), seed);
    ExpectParity(p, RunEager(p, 0));
  }
}

TEST(LoraKernelsGpuTest, MatchesReferenceOnOddDimsWithSpareCapacity) {
  const LoraProblem p = MakeLoraProblem(1001, 333, MixedAdapters(), MixedSegments(), 303);
  ExpectParity(p, RunEager(p, 5));
}

TEST(LoraKernelsGpuTest, TwoRunsAreBitwiseEqual) {
  const LoraProblem p = MakeLoraProblem(2048, 512, MixedAdapters(), MixedSegments(), 404);
  const std::vector<float> first = RunEager(p, 0);
  const std::vector<float> second = RunEager(p, 0);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
}

// One graph captured over a capacity, replayed for a second, different plan written into the
// same table buffer (new adapters, new ranks, fewer segments): equal to eager on that plan.
TEST(LoraKernelsGpuTest, GraphReplayAfterThePlanChangesEqualsEager) {
  const LoraProblem first = MakeLoraProblem(1024, 512, MixedAdapters(), MixedSegments(), 505);
  const LoraProblem second = MakeLoraProblem(
      1024, 512, {{3, LoraDtype::kBF16}, {130, LoraDtype::kF16}},
      {{2, {{1, -0.75f}}}, {4, {}}, {1, {{0, 1.0f}, {1, 0.5f}}, true}, {35, {{0, 2.0f}}}}, 606);
  absl::StatusOr<LoraTableCounts> n =
      CountLoraTables(first.segments, first.refs, std::ssize(first.pool), 1024, 512);
  ASSERT_TRUE(n.ok());
  LoraTableCapacity c = CapacityFor(*n, 0);
  c.v_floats = std::max<int64_t>(c.v_floats, 64 * 1024);
  // The first problem is the larger in pool, rows and y, so its buffers serve both (Upload
  // checks that).
  DeviceProblem d(first, c);
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Upload(first, d, stream);
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const cudaError_t launched =
      LoraApplyDevice(d.pool.as<float>(), d.device_tables(), d.x.as<float>(), first.ldx, 1024,
                      d.partials.as<float>(), d.y.as<float>(), first.ldy, 512, stream);
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(launched, cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  ExpectParity(first, Download(first, d));

  Upload(second, d, stream);
  ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  const std::vector<float> replayed = Download(second, d);
  ExpectParity(second, replayed);
  const std::vector<float> eager = RunEager(second, 0);
  EXPECT_EQ(std::memcmp(replayed.data(), eager.data(), eager.size() * sizeof(float)), 0);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(LoraKernelsGpuTest, LaunchersReturnErrorsInsteadOfAborting) {
  const LoraTables empty{};
  EXPECT_EQ(LoraShrink(nullptr, empty, nullptr, 0, 0, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(LoraExpand(nullptr, empty, nullptr, 16, nullptr, 0, 0, nullptr), cudaErrorInvalidValue);
  // Zero capacity launches nothing and succeeds.
  EXPECT_EQ(LoraApplyDevice(nullptr, empty, nullptr, 0, 16, nullptr, nullptr, 0, 16, nullptr),
            cudaSuccess);
}

}  // namespace
}  // namespace loraserve::kernels::cuda
