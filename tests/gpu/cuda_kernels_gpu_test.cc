// GPU parity of the CUDA attention and elementwise kernels (kernels/cuda/attention.cuh,
// elementwise.cuh, rms_norm.cuh) against kernels/cpu on fresh random inputs: paged attention on
// mixed decode and prefill steps (GQA groups 1..16, head_dim 64/128/256, block 16, contexts over
// many pages and partitions, spare capacity), bitwise determinism, CUDA-graph replay after the
// step changes, and every elementwise op. Needs a GPU: built with CUDA, not registered in ctest;
// it has only been compiled so far.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/half.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_table_builder.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/rms_norm.cuh"
#include "tests/gpu/device_buffer.h"
#include "tests/kernels/cuda/attention_test_problem.h"

namespace loraserve::kernels::cuda {
namespace {

using testing::AttentionProblem;
using testing::AttentionShape;
using testing::MakeAttentionProblem;
using testing::MixedSeqShapes;
using testing::SeqShape;

using ::loraserve::kernels::testing::DeviceBuffer;

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = uniform(rng);
  return v;
}

// ---- attention

AttentionTableCapacity WithSlack(const AttentionTableCounts& n, int slack) {
  return {n.seqs + slack, n.rows + slack, n.blocks + slack, n.items + slack};
}

// A step's device state: pool, q, out (pre-filled with 7), the table buffer and scratch.
struct DeviceAttention {
  DeviceAttention(const AttentionProblem& p, const AttentionTableCapacity& c)
      : capacity(c),
        pool(p.pool),
        q(p.q),
        out(std::vector<float>(static_cast<size_t>(p.rows() * p.ldo), 7.0f)),
        tables(static_cast<size_t>(AttentionTableLayoutFor(c).bytes)),
        scratch(
            static_cast<size_t>(AttentionScratchFloats(c, p.shape.num_heads, p.shape.head_dim)) *
            sizeof(float)) {}
  AttentionTableCapacity capacity;
  DeviceBuffer pool, q, out, tables, scratch;
  AttentionTables device_tables() const { return AttentionTablesAt(tables.as<void>(), capacity); }
};

// Builds `p`'s tables in pinned staging and copies them with one cudaMemcpyAsync.
void UploadTables(const AttentionProblem& p, const DeviceAttention& d, cudaStream_t stream) {
  void* staging = nullptr;
  ASSERT_CUDA(cudaMallocHost(&staging, d.tables.bytes() + 1));
  absl::StatusOr<AttentionTableCounts> built = BuildAttentionTables(
      p.seqs, p.positions, p.shape.block_size, p.num_pages, AttentionTablesAt(staging, d.capacity));
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_CUDA(cudaMemcpyAsync(d.tables.as<void>(), staging, d.tables.bytes(),
                              cudaMemcpyHostToDevice, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  ASSERT_CUDA(cudaFreeHost(staging));
}

cudaError_t Launch(const AttentionProblem& p, const DeviceAttention& d, cudaStream_t stream) {
  return PagedAttention(d.pool.as<float>(), p.layout, p.shape.layer, d.device_tables(),
                        d.q.as<float>(), p.ldq, p.shape.num_heads, p.shape.num_kv_heads,
                        p.shape.head_dim, d.scratch.as<float>(), d.out.as<float>(), p.ldo, stream);
}

std::vector<float> RunAttention(const AttentionProblem& p, int slack) {
  absl::StatusOr<AttentionTableCounts> n =
      CountAttentionTables(p.seqs, p.positions, p.shape.block_size, p.num_pages);
  if (!n.ok()) {
    ADD_FAILURE() << n.status();
    return {};
  }
  DeviceAttention d(p, WithSlack(*n, slack));
  UploadTables(p, d, nullptr);
  // Garbage scratch: every partial the merge reads must have been written by this launch.
  EXPECT_EQ(cudaMemset(d.scratch.as<void>(), 0xff, d.scratch.bytes()), cudaSuccess);
  EXPECT_EQ(Launch(p, d, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return d.out.Download<float>();
}

// Rows of sequences within tolerance of kernels/cpu's PagedAttention; gap rows and the padding
// past each row's width untouched.
void ExpectAttentionParity(const AttentionProblem& p, const std::vector<float>& got) {
  std::vector<float> want(static_cast<size_t>(p.rows() * p.ldo), 7.0f);
  kernels::PagedAttention(p.pool.data(), p.layout, p.shape.layer, p.seqs, p.positions.data(),
                          p.q.data(), p.ldq, p.shape.num_heads, p.shape.num_kv_heads,
                          p.shape.head_dim, want.data(), p.ldo);
  ASSERT_EQ(got.size(), want.size());
  for (int r = 0; r < p.rows(); ++r) {
    bool in_seq = false;
    for (const AttentionSeq& s : p.seqs) in_seq |= r >= s.token_begin && r < s.token_end;
    for (int64_t c = 0; c < p.ldo; ++c) {
      const size_t at = static_cast<size_t>(r * p.ldo + c);
      if (in_seq && c < p.width()) {
        ASSERT_NEAR(got[at], want[at], 5e-5f) << "row " << r << " col " << c;
      } else {
        ASSERT_EQ(got[at], 7.0f) << "row " << r << " col " << c << " should be untouched";
      }
    }
  }
}

std::vector<SeqShape> LongMixedSeqShapes() {
  std::vector<SeqShape> shapes = MixedSeqShapes();
  shapes.push_back({3000, 1});   // 12 partitions, 188 pages
  shapes.push_back({2100, 33});  // a prefill chunk whose rows span two partition counts
  return shapes;
}

TEST(CudaAttentionGpuTest, MatchesCpuReferenceAcrossHeadShapes) {
  const AttentionShape shapes[] = {
      {32, 8, 128, 16, 2, 1, 1},                           // Llama-3-8B-like GQA 4
      {8, 2, 64, 16, 2, 0, 1},   {9, 3, 64, 16, 1, 0, 2},  // SmolLM2-like group 3
      {4, 4, 128, 16, 1, 0, 1},  {16, 1, 256, 16, 2, 1, 0}, {14, 2, 64, 16, 1, 0, 1}};  // group 7
  uint32_t seed = 1;
  for (const AttentionShape& shape : shapes) {
    const AttentionProblem p = MakeAttentionProblem(shape, LongMixedSeqShapes(), seed++);
    ExpectAttentionParity(p, RunAttention(p, 0));
  }
}

TEST(CudaAttentionGpuTest, SpareCapacityTailsDoNothing) {
  const AttentionProblem p = MakeAttentionProblem({8, 2, 64, 16, 2, 1, 1}, MixedSeqShapes(), 21);
  ExpectAttentionParity(p, RunAttention(p, 37));
}

TEST(CudaAttentionGpuTest, TwoRunsAreBitwiseEqual) {
  const AttentionProblem p =
      MakeAttentionProblem({32, 8, 128, 16, 1, 0, 1}, LongMixedSeqShapes(), 31);
  const std::vector<float> first = RunAttention(p, 0);
  const std::vector<float> second = RunAttention(p, 3);
  ASSERT_EQ(first.size(), second.size());
  EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
}

// One graph captured over a capacity, replayed after a smaller, different step is written into
// the same table buffer: equal to eager on that step, bit for bit.
TEST(CudaAttentionGpuTest, GraphReplayAfterTheStepChangesEqualsEager) {
  const AttentionShape shape{8, 2, 64, 16, 1, 0, 0};
  const AttentionProblem first = MakeAttentionProblem(shape, LongMixedSeqShapes(), 41);
  const std::vector<SeqShape> fewer = {{900, 1}, {10, 5}, {300, 1}};
  AttentionProblem second = MakeAttentionProblem(shape, fewer, 42);
  absl::StatusOr<AttentionTableCounts> n =
      CountAttentionTables(first.seqs, first.positions, 16, first.num_pages);
  ASSERT_TRUE(n.ok());
  ASSERT_GE(first.pool.size(), second.pool.size());
  ASSERT_GE(first.q.size(), second.q.size());
  DeviceAttention d(first, WithSlack(*n, 0));
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  UploadTables(first, d, stream);
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const cudaError_t launched = Launch(first, d, stream);
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_EQ(launched, cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  ExpectAttentionParity(first, d.out.Download<float>());

  // The second step reuses the buffers: its pool, q and out go where the first's were, with
  // the same leading dimensions (same shape), and its tables into the captured table buffer.
  ASSERT_EQ(second.ldq, first.ldq);
  ASSERT_CUDA(cudaMemcpy(d.pool.as<void>(), second.pool.data(), second.pool.size() * 4,
                         cudaMemcpyHostToDevice));
  ASSERT_CUDA(
      cudaMemcpy(d.q.as<void>(), second.q.data(), second.q.size() * 4, cudaMemcpyHostToDevice));
  const std::vector<float> sevens(d.out.bytes() / 4, 7.0f);
  ASSERT_CUDA(cudaMemcpy(d.out.as<void>(), sevens.data(), d.out.bytes(), cudaMemcpyHostToDevice));
  UploadTables(second, d, stream);
  ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> replayed = d.out.Download<float>();
  replayed.resize(static_cast<size_t>(second.rows() * second.ldo));
  ExpectAttentionParity(second, replayed);
  const std::vector<float> eager = RunAttention(second, 0);
  ASSERT_EQ(eager.size(), replayed.size());
  EXPECT_EQ(std::memcmp(replayed.data(), eager.data(), eager.size() * sizeof(float)), 0);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(CudaAttentionGpuTest, LaunchersRejectUnsupportedShapes) {
  const AttentionTables empty{};
  const KvPageLayout layout{16, 1, 2 * 96};
  // head_dim 96 is not compiled; a group of 32 exceeds kAttentionMaxGroup.
  EXPECT_EQ(
      PagedAttention(nullptr, layout, 0, empty, nullptr, 0, 4, 2, 96, nullptr, nullptr, 0, nullptr),
      cudaErrorInvalidValue);
  EXPECT_EQ(PagedAttention(nullptr, {16, 1, 64}, 0, empty, nullptr, 0, 32, 1, 64, nullptr, nullptr,
                           0, nullptr),
            cudaErrorInvalidValue);
  // kv_dim disagrees with num_kv_heads * head_dim; layer out of range; heads not a multiple.
  EXPECT_EQ(PagedAttention(nullptr, {16, 1, 100}, 0, empty, nullptr, 0, 4, 2, 64, nullptr, nullptr,
                           0, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(PagedAttention(nullptr, {16, 1, 128}, 1, empty, nullptr, 0, 4, 2, 64, nullptr, nullptr,
                           0, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(PagedAttention(nullptr, {16, 1, 128}, 0, empty, nullptr, 0, 5, 2, 64, nullptr, nullptr,
                           0, nullptr),
            cudaErrorInvalidValue);
  // A misaligned pool would break the 16-byte K loads.
  EXPECT_EQ(PagedAttention(reinterpret_cast<const float*>(4), {16, 1, 128}, 0, empty, nullptr, 0, 4,
                           2, 64, nullptr, nullptr, 0, nullptr),
            cudaErrorInvalidValue);
  // Zero capacity launches nothing and succeeds.
  EXPECT_EQ(PagedAttention(nullptr, {16, 1, 128}, 0, empty, nullptr, 0, 4, 2, 64, nullptr, nullptr,
                           0, nullptr),
            cudaSuccess);
}

// ---- elementwise

TEST(CudaElementwiseGpuTest, EmbedWidensEveryTableDtype) {
  const int vocab = 1000, dim = 777, ld_table = 800, rows = 37;
  const int64_t ldo = dim + 9;
  const std::vector<float> values = RandomFloats(static_cast<size_t>(vocab) * ld_table, 1, 3.0f);
  std::vector<int32_t> ids(rows);
  for (int r = 0; r < rows; ++r) ids[r] = (r * 389 + 11) % vocab;
  ids[5] = vocab - 1;
  DeviceBuffer d_ids(ids);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::vector<float> want(static_cast<size_t>(rows * ldo), 7.0f);
    std::vector<uint16_t> half(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      half[i] = dtype == DType::kBF16 ? FloatToBf16(values[i]) : FloatToF16(values[i]);
    }
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < dim; ++c) {
        const size_t i = static_cast<size_t>(ids[r]) * ld_table + c;
        want[r * ldo + c] = dtype == DType::kF32    ? values[i]
                            : dtype == DType::kBF16 ? Bf16ToFloat(half[i])
                                                    : F16ToFloat(half[i]);
      }
    }
    DeviceBuffer table = dtype == DType::kF32 ? DeviceBuffer(values) : DeviceBuffer(half);
    DeviceBuffer out(std::vector<float>(static_cast<size_t>(rows * ldo), 7.0f));
    ASSERT_CUDA(Embed(table.as<void>(), dtype, ld_table, vocab, d_ids.as<int32_t>(), rows, dim,
                      out.as<float>(), ldo, nullptr));
    ASSERT_CUDA(cudaDeviceSynchronize());
    const std::vector<float> got = out.Download<float>();
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << DTypeName(dtype);
  }
  EXPECT_EQ(Embed(nullptr, DType::kI32, 1, 1, nullptr, 1, 1, nullptr, 1, nullptr),
            cudaErrorInvalidValue);
}

TEST(CudaElementwiseGpuTest, GatherRowsCopiesRowsAndZeroesBadIndices) {
  const int x_rows = 50, cols = 300, rows = 20;
  const int64_t ldx = 310, ldo = 305;
  const std::vector<float> x = RandomFloats(static_cast<size_t>(x_rows * ldx), 2);
  std::vector<int32_t> idx(rows);
  for (int i = 0; i < rows; ++i) idx[i] = (i * 7) % x_rows;
  idx[3] = x_rows;  // out of range: a zero row
  std::vector<float> want(static_cast<size_t>(rows * ldo), 7.0f);
  for (int i = 0; i < rows; ++i) {
    for (int c = 0; c < cols; ++c) want[i * ldo + c] = i == 3 ? 0.0f : x[idx[i] * ldx + c];
  }
  DeviceBuffer d_x(x), d_idx(idx), out(std::vector<float>(want.size(), 7.0f));
  ASSERT_CUDA(GatherRows(d_x.as<float>(), ldx, x_rows, d_idx.as<int32_t>(), rows, cols,
                         out.as<float>(), ldo, nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = out.Download<float>();
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
}

TEST(CudaElementwiseGpuTest, AddBiasAddAndSiluMulMatchCpu) {
  const int rows = 33, cols = 1000;
  const int64_t ld = 1003;
  const std::vector<float> y = RandomFloats(static_cast<size_t>(rows * ld), 3, 4.0f);
  const std::vector<float> other = RandomFloats(static_cast<size_t>(rows * ld), 4, 4.0f);
  const std::vector<float> bias = RandomFloats(cols, 5);

  std::vector<float> want = y;
  kernels::AddBias(want.data(), ld, rows, cols, bias.data());
  DeviceBuffer d_y(y), d_bias(bias), d_other(other);
  ASSERT_CUDA(AddBias(d_y.as<float>(), ld, rows, cols, d_bias.as<float>(), nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> got = d_y.Download<float>();
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << "AddBias";

  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) want[r * ld + c] += other[r * ld + c];
  }
  ASSERT_CUDA(Add(d_y.as<float>(), ld, d_other.as<float>(), ld, rows, cols, nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  got = d_y.Download<float>();
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << "Add";

  // kernels/cpu's SiluMul takes contiguous vectors: run it row by row.
  std::vector<float> silu(static_cast<size_t>(rows * ld), 7.0f);
  for (int r = 0; r < rows; ++r) {
    kernels::SiluMul(y.data() + r * ld, other.data() + r * ld, cols, silu.data() + r * ld);
  }
  DeviceBuffer d_gate(y), d_out(std::vector<float>(silu.size(), 7.0f));
  ASSERT_CUDA(SiluMul(d_gate.as<float>(), ld, d_other.as<float>(), ld, rows, cols,
                      d_out.as<float>(), ld, nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  got = d_out.Download<float>();
  for (int r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ld; ++c) {
      const size_t at = static_cast<size_t>(r * ld + c);
      if (c < cols) {
        ASSERT_NEAR(got[at], silu[at], 4e-6f * (1.0f + std::abs(silu[at]))) << r << " " << c;
      } else {
        ASSERT_EQ(got[at], 7.0f);
      }
    }
  }
}

TEST(CudaElementwiseGpuTest, RopeMatchesCpuAtLongPositions) {
  const int rows = 17, heads = 6, head_dim = 128;
  const int64_t ldx = heads * head_dim + 4;
  std::vector<float> x = RandomFloats(static_cast<size_t>(rows * ldx), 6);
  std::vector<int32_t> positions(rows);
  for (int r = 0; r < rows; ++r) positions[r] = r * 4099 % 131072;
  std::vector<float> inv_freq(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = 1.0f / std::pow(500000.0f, 2.0f * i / head_dim);
  }
  DeviceBuffer d_x(x), d_pos(positions), d_freq(inv_freq);
  kernels::ApplyRope(x.data(), ldx, rows, heads, head_dim, positions.data(), inv_freq.data());
  ASSERT_CUDA(Rope(d_x.as<float>(), ldx, rows, heads, head_dim, d_pos.as<int32_t>(),
                   d_freq.as<float>(), nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = d_x.Download<float>();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], x[i], 2e-5f) << i;
  EXPECT_EQ(Rope(nullptr, 1, 1, 1, 63, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
}

TEST(CudaElementwiseGpuTest, ArgmaxRowsTakesTheLowestIndexOnTies) {
  const int rows = 9, cols = 49157;
  const int64_t ld = cols + 3;
  std::vector<float> logits = RandomFloats(static_cast<size_t>(rows * ld), 7, 10.0f);
  logits[1 * ld + 40000] = 50.0f;  // ties: three equal maxima, the lowest wins
  logits[1 * ld + 123] = 50.0f;
  logits[1 * ld + 30001] = 50.0f;
  for (int c = 0; c < cols; ++c) logits[2 * ld + c] = -INFINITY;  // all equal: index 0
  logits[3 * ld + cols - 1] = 99.0f;
  std::vector<int32_t> want(rows);
  for (int r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * ld;
    want[r] = static_cast<int32_t>(std::max_element(row, row + cols) - row);
  }
  EXPECT_EQ(want[1], 123);
  DeviceBuffer d_logits(logits), out(rows * sizeof(int32_t));
  ASSERT_CUDA(ArgmaxRows(d_logits.as<float>(), ld, rows, cols, out.as<int32_t>(), nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(out.Download<int32_t>(), want);
}

TEST(CudaElementwiseGpuTest, CastF32ToBf16MatchesFormatsBitForBit) {
  const int rows = 5, cols = 1001;
  const int64_t ldx = 1010;
  std::vector<float> x = RandomFloats(static_cast<size_t>(rows * ldx), 8, 1000.0f);
  x[0] = NAN;
  x[1] = INFINITY;
  x[2] = -0.0f;
  x[3] = 1.0f + 1.0f / 256.0f;  // a tie: rounds to even
  x[4] = 3.4e38f;
  std::vector<uint16_t> want(static_cast<size_t>(rows * cols));
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) want[r * cols + c] = FloatToBf16(x[r * ldx + c]);
  }
  DeviceBuffer d_x(x), out(want.size() * sizeof(uint16_t));
  ASSERT_CUDA(CastF32ToBf16(d_x.as<float>(), ldx, rows, cols, out.as<uint16_t>(), nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(out.Download<uint16_t>(), want);
}

TEST(CudaElementwiseGpuTest, CastF32ToF16MatchesFormatsBitForBit) {
  const int rows = 3, cols = 777;
  const int64_t ldx = 800;
  std::vector<float> x = RandomFloats(static_cast<size_t>(rows * ldx), 18, 100.0f);
  x[1] = INFINITY;
  x[2] = -0.0f;
  x[3] = 1.0f + 1.0f / 2048.0f;  // a tie: rounds to even
  x[4] = 1e-6f;                  // subnormal in fp16
  std::vector<uint16_t> want(static_cast<size_t>(rows * cols));
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) want[r * cols + c] = FloatToF16(x[r * ldx + c]);
  }
  DeviceBuffer d_x(x), out(want.size() * sizeof(uint16_t));
  ASSERT_CUDA(CastF32ToF16(d_x.as<float>(), ldx, rows, cols, out.as<uint16_t>(), nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(out.Download<uint16_t>(), want);
}

TEST(CudaElementwiseGpuTest, RmsNormWithLeadingDimensionsMatchesCpu) {
  const int rows = 13, dim = 576;
  const int64_t ldx = 600, ldy = 590;
  const std::vector<float> x = RandomFloats(static_cast<size_t>(rows * ldx), 9, 3.0f);
  const std::vector<float> weight = RandomFloats(dim, 10);
  std::vector<float> want(static_cast<size_t>(rows * ldy), 7.0f);
  kernels::RmsNorm(x.data(), ldx, weight.data(), rows, dim, 1e-5f, want.data(), ldy);
  DeviceBuffer d_x(x), d_w(weight), d_y(std::vector<float>(want.size(), 7.0f));
  ASSERT_CUDA(RmsNorm(d_x.as<float>(), ldx, d_w.as<float>(), rows, dim, 1e-5f, d_y.as<float>(), ldy,
                      nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());
  const std::vector<float> got = d_y.Download<float>();
  for (int r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ldy; ++c) {
      const size_t at = static_cast<size_t>(r * ldy + c);
      if (c < dim) {
        ASSERT_NEAR(got[at], want[at], 1e-5f * (1.0f + std::abs(want[at]))) << r << " " << c;
      } else {
        ASSERT_EQ(got[at], 7.0f);
      }
    }
  }
}

}  // namespace
}  // namespace loraserve::kernels::cuda
