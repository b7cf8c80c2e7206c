// The CPU op set through the Backend interface: pool bytes round-trip at the host PagePool's
// offsets, merge then restore is bit-exact, ops reject views that do not fit with a status
// that names the op, and the sampling helper picks the first maximum.
#include "runtime/backend/cpu_backend.h"

#include <gtest/gtest.h>

#include <cstring>

namespace loraserve {
namespace {

TEST(CpuBackendTest, PoolWritesAndReadsUnitsAtOffsets) {
  CpuBackend backend;
  auto pool = backend.CreatePool(/*page_units=*/8, /*num_pages=*/3);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ((*pool)->total_units(), 24);
  const std::vector<uint32_t> units = {1, 2, 0xdeadbeef, 4};
  ASSERT_TRUE((*pool)->Write(13, units).ok());
  auto back = (*pool)->Read(13, 4);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, units);
  EXPECT_EQ((*pool)->Write(22, units).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*pool)->Read(-1, 2).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(CpuBackendTest, MergeThenRestoreIsBitExact) {
  CpuBackend backend;
  const std::vector<float> w = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, -0.6f};  // 2 x 3
  auto handle = backend.UploadWeight(w, {2, 3}, DType::kBF16);
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(backend.Info(*handle)->source_dtype, DType::kBF16);
  LoraModuleWeights module;
  module.rank = 1;
  module.scaling = 2.0f;
  module.a = {1.0f, 0.5f, 0.25f};  // rank x in
  module.b = {0.1f, -0.3f};        // out x rank
  ASSERT_TRUE(backend.MergeLora(*handle, module, {}).ok());
  auto merged = backend.ReadWeight(*handle);
  ASSERT_TRUE(merged.ok());
  EXPECT_FLOAT_EQ((*merged)[0], 0.1f + 2.0f * 0.1f * 1.0f);
  EXPECT_FLOAT_EQ((*merged)[5], -0.6f + 2.0f * -0.3f * 0.25f);
  EXPECT_TRUE(backend.Info(*handle)->merged);
  EXPECT_EQ(*backend.ReadPristineWeight(*handle), w);
  // A second merge starts from the pristine weights, not from the merged ones.
  ASSERT_TRUE(backend.MergeLora(*handle, module, std::vector<float>{2.0f, 0.5f}).ok());
  EXPECT_FLOAT_EQ((*backend.ReadWeight(*handle))[0], 2.0f * (0.1f + 0.2f));
  ASSERT_TRUE(backend.RestoreWeight(*handle).ok());
  auto restored = backend.ReadWeight(*handle);
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(std::memcmp(restored->data(), w.data(), w.size() * sizeof(float)), 0);
  EXPECT_FALSE(backend.Info(*handle)->merged);
  EXPECT_TRUE(backend.RestoreWeight(*handle).ok());  // nothing merged: a no-op
}

TEST(CpuBackendTest, OpsRejectViewsThatDoNotFit) {
  CpuBackend backend;
  auto weight = backend.UploadWeight(std::vector<float>(6, 1.0f), {2, 3}, DType::kF32);
  ASSERT_TRUE(weight.ok());
  auto x = backend.Allocate(4, 5);  // 5 columns, the weight wants 3
  auto y = backend.Allocate(4, 2);
  ASSERT_TRUE(x.ok() && y.ok());
  const absl::Status s = backend.Linear(x->tensor(), *weight, y->tensor());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Linear"), std::string::npos);
  EXPECT_EQ(backend.Linear(x->tensor(), WeightHandle{42}, y->tensor()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend.UploadWeight(std::vector<float>(5), {2, 3}, DType::kF32).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend.Add(x->tensor(), y->tensor()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpuBackendTest, LinearComputesXTimesWTransposed) {
  CpuBackend backend;
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};  // [out 2 x in 3]
  auto weight = backend.UploadWeight(w, {2, 3}, DType::kF32);
  std::vector<float> x = {1, 0, -1, 2, 1, 0};                                      // 2 x 3
  std::vector<float> y(4);
  auto xv = backend.ViewHost(x.data(), 2, 3);
  auto yv = backend.ViewHost(y.data(), 2, 2);
  ASSERT_TRUE(weight.ok() && xv.ok() && yv.ok());
  ASSERT_TRUE(backend.Linear(*xv, *weight, *yv).ok());
  EXPECT_EQ(y, (std::vector<float>{1 - 3, 4 - 6, 2 + 2, 8 + 5}));
}

TEST(CpuBackendTest, ArgmaxRowsPicksTheFirstMaximum) {
  CpuBackend backend;
  std::vector<float> logits = {0, 3, 3, 1, /*row 1*/ -5, -4, -4, -9};
  auto view = backend.ViewHost(logits.data(), 2, 4);
  ASSERT_TRUE(view.ok());
  std::vector<int32_t> out(2);
  ASSERT_TRUE(backend.ArgmaxRows(*view, out).ok());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 1}));
}

}  // namespace
}  // namespace loraserve
