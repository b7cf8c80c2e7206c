// Merge then unmerge must restore every base weight bit for bit, and merged logits must equal
// the unmerged LoRA path within 1e-4 relative.
#include "runtime/merge_controller.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/adapter_pool.h"
#include "runtime/scoring.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

TEST(MergeController, MergeUnmergeIsBitIdenticalAndMergedLogitsMatch) {
  auto model = testing::LoadTinyModel();
  ASSERT_NE(model, nullptr);
  const ModelConfig& config = model->config();
  auto adapter = testing::RandomAdapter(config, "m", 8, 7,
                                        {Module::kQ, Module::kK, Module::kV, Module::kO,
                                         Module::kGate, Module::kUp, Module::kDown});
  std::vector<std::vector<float>> before;
  for (int l = 0; l < config.num_layers; ++l) {
    for (int m = 0; m < kNumModules; ++m) before.push_back(model->Weight(l, static_cast<Module>(m)));
  }
  // Unmerged LoRA path.
  const auto layout = model->KvLayout(16);
  PagePool pages(layout.page_floats(), 64);
  auto memory = model->backend().CreatePool(layout.page_floats(), 64);
  ASSERT_TRUE(memory.ok());
  AdapterPool pool(&pages, memory->get(), config,
                   [&](int l, Module m) { return model->Weight(l, m); });
  auto resident = pool.Acquire("m", adapter);
  ASSERT_TRUE(resident.ok());
  AdapterSetView set = {{*resident, 1.0f}};
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
  auto lora_logits = ScorePrompt(*model, prompt, true, {&set, memory->get()});
  ASSERT_TRUE(lora_logits.ok());
  auto base_logits = ScorePrompt(*model, prompt, true);

  MergeController merge(model.get());
  ASSERT_TRUE(merge.Merge(adapter, "m#1").ok());
  auto merged_logits = ScorePrompt(*model, prompt, true);
  ASSERT_TRUE(merged_logits.ok());
  double max_diff = 0, max_ref = 0, max_change = 0;
  for (size_t i = 0; i < lora_logits->size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double((*merged_logits)[i]) - (*lora_logits)[i]));
    max_ref = std::max(max_ref, std::abs(double((*lora_logits)[i])));
    max_change = std::max(max_change, std::abs(double((*lora_logits)[i]) - (*base_logits)[i]));
  }
  EXPECT_LE(max_diff / max_ref, 1e-4);
  EXPECT_GT(max_change, 1e-3);  // the adapter matters, so the comparison means something

  ASSERT_TRUE(merge.Unmerge().ok());
  size_t k = 0;
  for (int l = 0; l < config.num_layers; ++l) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& now = model->Weight(l, static_cast<Module>(m));
      ASSERT_EQ(now.size(), before[k].size());
      EXPECT_EQ(std::memcmp(now.data(), before[k].data(), now.size() * sizeof(float)), 0)
          << "layer " << l << " module " << kModuleNames[m];
      ++k;
    }
  }
  EXPECT_EQ(merge.switches(), 2);
}

}  // namespace
}  // namespace loraserve
