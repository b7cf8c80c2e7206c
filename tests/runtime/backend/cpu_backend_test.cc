// The CPU op set through the Backend interface: pool bytes round-trip at the host PagePool's
// offsets, merge then restore is bit-exact, ops reject views that do not fit with a status
// that names the op, and the sampling helper picks the first maximum.
#include "runtime/backend/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "formats/half.h"

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

// The values are exact in bf16, so the test reads the same numbers whether the weight is held
// fp32 or (kAuto with a bf16 source) as bf16 bits with an fp32 copy only while merged.
class CpuBackendMergeTest : public testing::TestWithParam<WeightDtype> {};

TEST_P(CpuBackendMergeTest, MergeThenRestoreIsBitExact) {
  CpuBackend backend(CpuBackendOptions{.weight_dtype = GetParam()});
  const std::vector<float> w = {0.125f, -0.25f, 0.375f, 0.5f, 0.75f, -0.625f};  // 2 x 3
  auto handle = backend.UploadWeight(w, {2, 3}, DType::kBF16);
  ASSERT_TRUE(handle.ok());
  EXPECT_EQ(backend.Info(*handle)->source_dtype, DType::kBF16);
  EXPECT_EQ(backend.Info(*handle)->stored_dtype,
            GetParam() == WeightDtype::kF32 ? DType::kF32 : DType::kBF16);
  LoraModuleWeights module;
  module.rank = 1;
  module.scaling = 2.0f;
  module.a = {1.0f, 0.5f, 0.25f};  // rank x in
  module.b = {0.1f, -0.3f};        // out x rank
  ASSERT_TRUE(backend.MergeLora(*handle, module, {}).ok());
  auto merged = backend.ReadWeight(*handle);
  ASSERT_TRUE(merged.ok());
  // fp32 sums, not rounded to bf16 (0.325 is not a bf16 value): the delta survives the merge.
  EXPECT_FLOAT_EQ((*merged)[0], 0.125f + 2.0f * 0.1f * 1.0f);
  EXPECT_FLOAT_EQ((*merged)[5], -0.625f + 2.0f * -0.3f * 0.25f);
  EXPECT_TRUE(backend.Info(*handle)->merged);
  EXPECT_EQ(*backend.ReadPristineWeight(*handle), w);
  // Linear reads the merged values.
  std::vector<float> x = {1, 0, 0}, y(2);
  auto xv = backend.ViewHost(x.data(), 1, 3);
  auto yv = backend.ViewHost(y.data(), 1, 2);
  ASSERT_TRUE(backend.Linear(*xv, *handle, *yv).ok());
  EXPECT_FLOAT_EQ(y[0], 0.125f + 0.2f);
  // A second merge starts from the pristine weights, not from the merged ones.
  ASSERT_TRUE(backend.MergeLora(*handle, module, std::vector<float>{2.0f, 0.5f}).ok());
  EXPECT_FLOAT_EQ((*backend.ReadWeight(*handle))[0], 2.0f * (0.125f + 0.2f));
  ASSERT_TRUE(backend.RestoreWeight(*handle).ok());
  auto restored = backend.ReadWeight(*handle);
  ASSERT_TRUE(restored.ok());
  EXPECT_EQ(std::memcmp(restored->data(), w.data(), w.size() * sizeof(float)), 0);
  EXPECT_FALSE(backend.Info(*handle)->merged);
  ASSERT_TRUE(backend.Linear(*xv, *handle, *yv).ok());
  EXPECT_EQ(y[0], 0.125f);
  EXPECT_TRUE(backend.RestoreWeight(*handle).ok());  // nothing merged: a no-op
}

// Rows long enough for the paired bf16 layout the AVX-512 kernels read (bf16_pairs.h): a merge
// widens them in natural order, and a restore computes exactly what the weight did before.
TEST(CpuBackendTest, MergeAndRestoreOfAWideBf16WeightKeepTheNaturalOrder) {
  const int out = 8, in = 70;
  std::vector<float> w(out * in), x(2 * in);
  for (int i = 0; i < out * in; ++i) w[i] = Bf16ToFloat(FloatToBf16(std::sin(0.37f * i)));
  for (int i = 0; i < 2 * in; ++i) x[i] = std::cos(0.11f * i);
  CpuBackend backend;
  auto handle = backend.UploadWeight(w, {out, in}, DType::kBF16);
  ASSERT_TRUE(handle.ok());
  std::vector<float> before(2 * out), after(2 * out);
  auto xv = backend.ViewHost(x.data(), 2, in);
  ASSERT_TRUE(backend.Linear(*xv, *handle, *backend.ViewHost(before.data(), 2, out)).ok());
  LoraModuleWeights module;
  module.rank = 1;
  module.scaling = 1.0f;
  for (int i = 0; i < in; ++i) module.a.push_back(0.01f * i);
  for (int o = 0; o < out; ++o) module.b.push_back(o + 1.0f);
  ASSERT_TRUE(backend.MergeLora(*handle, module, {}).ok());
  const std::vector<float> merged = *backend.ReadWeight(*handle);
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) {
      ASSERT_FLOAT_EQ(merged[o * in + i], w[o * in + i] + module.b[o] * module.a[i])
          << o << "," << i;
    }
  }
  ASSERT_TRUE(backend.RestoreWeight(*handle).ok());
  ASSERT_TRUE(backend.Linear(*xv, *handle, *backend.ViewHost(after.data(), 2, out)).ok());
  EXPECT_EQ(after, before);
  EXPECT_EQ(*backend.ReadWeight(*handle), w);
}

INSTANTIATE_TEST_SUITE_P(WeightDtypes, CpuBackendMergeTest,
                         testing::Values(WeightDtype::kAuto, WeightDtype::kF32),
                         [](const auto& info) {
                           return info.param == WeightDtype::kAuto ? "AutoBf16" : "Fp32";
                         });

// kAuto keeps a 16-bit file 16-bit (matrices only) and computes bit-identically to fp32 storage;
// an explicit dtype rounds wider files to nearest even; vectors always stay fp32.
TEST(CpuBackendTest, WeightDtypeChoosesStorageAndKeepsResultsExact) {
  const int out = 40, in = 70;
  std::vector<float> w(out * in), x(3 * in);
  for (int i = 0; i < out * in; ++i) w[i] = Bf16ToFloat(FloatToBf16(std::sin(0.37f * i)));
  for (int i = 0; i < 3 * in; ++i) x[i] = std::cos(0.11f * i);
  CpuBackend as_file, as_f32(CpuBackendOptions{.weight_dtype = WeightDtype::kF32});
  auto h16 = as_file.UploadWeight(w, {out, in}, DType::kBF16);
  auto h32 = as_f32.UploadWeight(w, {out, in}, DType::kBF16);
  ASSERT_TRUE(h16.ok() && h32.ok());
  EXPECT_EQ(as_file.Info(*h16)->stored_dtype, DType::kBF16);
  EXPECT_EQ(as_f32.Info(*h32)->stored_dtype, DType::kF32);
  std::vector<float> y16(3 * out), y32(3 * out);
  ASSERT_TRUE(as_file.Linear(*as_file.ViewHost(x.data(), 3, in), *h16,
                             *as_file.ViewHost(y16.data(), 3, out)).ok());
  ASSERT_TRUE(as_f32.Linear(*as_f32.ViewHost(x.data(), 3, in), *h32,
                            *as_f32.ViewHost(y32.data(), 3, out)).ok());
  EXPECT_EQ(y16, y32);
  // Embedding rows widen exactly.
  const std::vector<int32_t> ids = {7, 0};
  std::vector<float> rows(2 * in);
  ASSERT_TRUE(as_file.Embed(*h16, ids, *as_file.ViewHost(rows.data(), 2, in)).ok());
  EXPECT_TRUE(std::equal(rows.begin(), rows.begin() + in, w.begin() + 7 * in));
  EXPECT_TRUE(std::equal(rows.begin() + in, rows.end(), w.begin()));
  // Read back in natural order, whatever layout the kernels keep it in (bf16_pairs.h).
  EXPECT_EQ(*as_file.ReadWeight(*h16), w);
  EXPECT_EQ(*as_file.ReadPristineWeight(*h16), w);

  CpuBackend to_f16(CpuBackendOptions{.weight_dtype = WeightDtype::kF16});
  const std::vector<float> wide = {0.1f, 1.0f / 3.0f, -2.5f, 1000.1f};
  auto rounded = to_f16.UploadWeight(wide, {2, 2}, DType::kF32);
  auto vector = to_f16.UploadWeight(wide, {4}, DType::kF32);
  ASSERT_TRUE(rounded.ok() && vector.ok());
  EXPECT_EQ(to_f16.Info(*rounded)->stored_dtype, DType::kF16);
  EXPECT_EQ(to_f16.Info(*vector)->stored_dtype, DType::kF32);
  const std::vector<float> back = *to_f16.ReadWeight(*rounded);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(back[i], F16ToFloat(FloatToF16(wide[i]))) << i;
  EXPECT_NE(back[0], wide[0]);
  EXPECT_EQ(*to_f16.ReadWeight(*vector), wide);
}

TEST(CpuBackendTest, ParsesWeightDtypesAndIsasNamingTheBadValue) {
  EXPECT_EQ(*ParseWeightDtype("bf16"), WeightDtype::kBF16);
  EXPECT_EQ(*ParseWeightDtype("fp16"), WeightDtype::kF16);
  EXPECT_EQ(*ParseCpuIsa("avx2"), CpuIsa::kAvx2);
  const absl::Status bad = ParseWeightDtype("int4").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("int4"), std::string::npos);
  EXPECT_FALSE(ParseCpuIsa("sse").ok());
  EXPECT_EQ(CpuIsaName(CpuIsa::kPortable), "portable");
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
