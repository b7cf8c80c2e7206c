// Adapter rows in 16-bit pool pages: "auto" keeps bf16/fp16 files 16-bit without changing a single
// logit; "bf16" rounds fp32 adapters (half the pages, close logits); mixed-dtype weighted sets
// match the all-fp32 pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "runtime/adapter_pool.h"
#include "formats/dtype.h"
#include "runtime/scoring.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

using kernels::LoraDtype;

// The adapter as a bf16 (or fp16) file would give it: every value representable, source marked.
std::shared_ptr<LoraAdapter> AsSixteenBitFile(const LoraAdapter& adapter, DType dtype,
                                              const std::string& id) {
  auto copy = std::make_shared<LoraAdapter>(adapter);
  copy->id = id;
  for (auto& layer : copy->modules) {
    for (auto& module : layer) {
      if (!module) continue;
      for (std::vector<float>* values : {&module->a, &module->b}) {
        for (float& v : *values) {
          v = dtype == DType::kBF16 ? Bf16ToFloat(FloatToBf16(v)) : F16ToFloat(FloatToF16(v));
        }
      }
      module->source_dtype = dtype;
    }
  }
  return copy;
}

class AdapterStorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::LoadTinyModel();
    ASSERT_NE(model_, nullptr);
    fp32_ = testing::RandomAdapter(model_->config(), "f", 8, 21,
                                   {Module::kQ, Module::kK, Module::kV, Module::kO, Module::kGate,
                                    Module::kUp, Module::kDown});
    bf16_ = AsSixteenBitFile(*fp32_, DType::kBF16, "b");
    fp16_ = AsSixteenBitFile(*testing::RandomAdapter(model_->config(), "h", 4, 22),
                             DType::kF16, "h");
  }

  struct Pool {
    explicit Pool(const LlamaModel& model, AdapterStorage storage)
        : pages(model.KvLayout(16).page_floats(), 256),
          memory(*model.backend().CreatePool(model.KvLayout(16).page_floats(), 256)),
          adapters(&pages, memory.get(), model.config(),
                   [&model](int l, Module m) { return model.Weight(l, m); }, storage) {}
    PagePool pages;
    std::unique_ptr<PoolStorage> memory;
    AdapterPool adapters;
  };

  // Logits of every position of a fixed prompt with `set` built from `pool`.
  std::vector<float> Score(Pool& pool,
                           const std::vector<std::pair<std::shared_ptr<LoraAdapter>, float>>& set) {
    AdapterSetView view;
    for (const auto& [adapter, weight] : set) {
      auto resident = pool.adapters.Acquire(adapter->id, adapter);
      EXPECT_TRUE(resident.ok()) << resident.status();
      view.push_back({*resident, weight});
    }
    const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
    auto logits = ScorePrompt(*model_, prompt, true, {&view, pool.memory.get()});
    EXPECT_TRUE(logits.ok()) << logits.status();
    return logits.ok() ? *logits : std::vector<float>{};
  }

  // max |a - b| / max |b|.
  static double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
    double diff = 0, ref = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      diff = std::max(diff, std::abs(double(a[i]) - b[i]));
      ref = std::max(ref, std::abs(double(b[i])));
    }
    return diff / ref;
  }

  std::unique_ptr<LlamaModel> model_;
  std::shared_ptr<LoraAdapter> fp32_, bf16_, fp16_;
};

TEST_F(AdapterStorageTest, AutoKeepsSixteenBitFilesSixteenBitWithIdenticalLogits) {
  Pool wide(*model_, AdapterStorage::kF32);
  Pool automatic(*model_, AdapterStorage::kAuto);
  for (const auto& adapter : {bf16_, fp16_}) {
    const std::vector<float> want = Score(wide, {{adapter, 1.0f}});
    const std::vector<float> got = Score(automatic, {{adapter, 1.0f}});
    // Same values, same fp32 arithmetic in the same order: bit-identical.
    EXPECT_EQ(got, want) << adapter->id;
    EXPECT_LT(automatic.adapters.PagesNeeded(*adapter), wide.adapters.PagesNeeded(*adapter));
  }
  const ResidentLora* b = *automatic.adapters.Acquire("b", bf16_);
  const ResidentLora* h = *automatic.adapters.Acquire("h", fp16_);
  EXPECT_EQ(b->modules[0][static_cast<int>(Module::kQ)]->dtype, LoraDtype::kBF16);
  EXPECT_EQ(h->modules[0][static_cast<int>(Module::kQ)]->dtype, LoraDtype::kF16);
  // An fp32 file stays fp32 under auto.
  const ResidentLora* f = *automatic.adapters.Acquire("f", fp32_);
  EXPECT_EQ(f->modules[0][static_cast<int>(Module::kQ)]->dtype, LoraDtype::kF32);
}

TEST_F(AdapterStorageTest, Bf16StorageHalvesPagesAndStaysClose) {
  Pool wide(*model_, AdapterStorage::kF32);
  Pool narrow(*model_, AdapterStorage::kBF16);
  const int64_t wide_pages = wide.adapters.PagesNeeded(*fp32_);
  const int64_t narrow_pages = narrow.adapters.PagesNeeded(*fp32_);
  EXPECT_LE(narrow_pages, (wide_pages + 1) / 2 + 1);
  const std::vector<float> base = Score(wide, {});
  const std::vector<float> want = Score(wide, {{fp32_, 1.0f}});
  const std::vector<float> got = Score(narrow, {{fp32_, 1.0f}});
  EXPECT_EQ(narrow.adapters.stats().pages_used, narrow_pages);
  // Rounding the adapter to bf16 (8 significant bits) moves the logits a little, far less than
  // the adapter itself moves them.
  const double rounding = RelativeError(got, want);
  EXPECT_GT(rounding, 0.0);
  EXPECT_LT(rounding, 1e-2);
  EXPECT_GT(RelativeError(want, base), 20 * rounding);
  // And equals the fp32 pool holding the bf16-rounded adapter exactly.
  EXPECT_EQ(got, Score(wide, {{bf16_, 1.0f}}));
}

TEST_F(AdapterStorageTest, MixedDtypeWeightedSetMatchesAllFp32Pool) {
  Pool wide(*model_, AdapterStorage::kF32);
  Pool automatic(*model_, AdapterStorage::kAuto);
  const std::vector<std::pair<std::shared_ptr<LoraAdapter>, float>> set = {
      {bf16_, 0.5f}, {fp32_, -0.25f}, {fp16_, 0.75f}};
  const std::vector<float> want = Score(wide, set);
  const std::vector<float> got = Score(automatic, set);
  // The expand adds each dtype run separately, so only the rounding order differs.
  EXPECT_LT(RelativeError(got, want), 1e-5);
}

TEST(AdapterStorageNames, ParseAndName) {
  for (AdapterStorage s : {AdapterStorage::kAuto, AdapterStorage::kF32, AdapterStorage::kBF16}) {
    auto parsed = ParseAdapterStorage(AdapterStorageName(s));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, s);
  }
  auto bad = ParseAdapterStorage("fp8");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("fp8"), std::string::npos);
}

}  // namespace
}  // namespace loraserve
