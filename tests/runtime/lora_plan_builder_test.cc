// The step's LoRA plan: one segment per run of adjacent rows sharing an adapter set, per layer
// and module; refs carry request weight x adapter scaling; modules an adapter does not target
// get no segment; DoRA factors ride on their segment; base-only rows get none.
#include "runtime/lora_plan_builder.h"

#include <gtest/gtest.h>

namespace loraserve {
namespace {

ResidentLora Resident(const std::string& id, int layers, std::vector<Module> modules, int rank,
                      float scaling, bool dora = false) {
  ResidentLora r;
  r.id = id;
  r.modules.resize(layers);
  for (int l = 0; l < layers; ++l) {
    for (Module m : modules) {
      ResidentLoraModule& slot = r.modules[l][static_cast<int>(m)].emplace();
      slot.rank = rank;
      slot.scaling = scaling;
      slot.a_rows.assign(rank, 100 * l);
      slot.b_cols.assign(rank, 100 * l + 50);
      if (dora) slot.dora_scale.assign(4, 1.5f);
    }
  }
  return r;
}

SequencePlan Seq(int begin, int end, int set) { return {begin, end, {}, set}; }
using Seqs = std::vector<SequencePlan>;

TEST(LoraPlanBuilderTest, AdjacentSequencesWithOneSetShareASegmentPerModule) {
  const ResidentLora a = Resident("a", 2, {Module::kQ, Module::kV}, 4, 2.0f);
  const ResidentLora b = Resident("b", 2, {Module::kQ}, 8, 0.5f);
  const std::vector<AdapterSetView> sets = {{{&a, 1.0f}}, {{&a, 0.5f}, {&b, -1.0f}}};
  // rows 0-3: set 0 (two sequences), rows 4-5: base, rows 6-8: set 1.
  const std::vector<SequencePlan> seqs = {Seq(0, 2, 0), Seq(2, 4, 0), Seq(4, 6, -1),
                                          Seq(6, 9, 1)};
  auto plan = BuildLoraPlan(seqs, sets, 2);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->module_begin.size(), 2u * kNumModules + 1);
  for (int l = 0; l < 2; ++l) {
    const auto q = plan->Segments(l, static_cast<int>(Module::kQ));
    ASSERT_EQ(q.size(), 2u);
    EXPECT_EQ(q[0].row_begin, 0);
    EXPECT_EQ(q[0].row_end, 4);
    EXPECT_EQ(q[1].row_begin, 6);
    EXPECT_EQ(q[1].row_end, 9);
    ASSERT_EQ(q[1].refs_end - q[1].refs_begin, 2);
    const kernels::LoraRef& ra = plan->refs[q[1].refs_begin];
    const kernels::LoraRef& rb = plan->refs[q[1].refs_begin + 1];
    EXPECT_FLOAT_EQ(ra.scale, 0.5f * 2.0f);
    EXPECT_FLOAT_EQ(rb.scale, -1.0f * 0.5f);
    EXPECT_EQ(rb.rank, 8);
    EXPECT_EQ(ra.a_rows[0], 100 * l);  // this layer's offsets
    // v: only `a` targets it, so set 1's segment holds one ref.
    const auto v = plan->Segments(l, static_cast<int>(Module::kV));
    ASSERT_EQ(v.size(), 2u);
    EXPECT_EQ(v[1].refs_end - v[1].refs_begin, 1);
    EXPECT_TRUE(plan->Segments(l, static_cast<int>(Module::kDown)).empty());
  }
}

TEST(LoraPlanBuilderTest, SameSetSplitByAGapIsTwoSegments) {
  const ResidentLora a = Resident("a", 1, {Module::kQ}, 2, 1.0f);
  const std::vector<AdapterSetView> sets = {{{&a, 1.0f}}};
  auto plan = BuildLoraPlan(Seqs{Seq(0, 1, 0), Seq(1, 2, -1), Seq(2, 3, 0)}, sets, 1);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Segments(0, static_cast<int>(Module::kQ)).size(), 2u);
}

TEST(LoraPlanBuilderTest, DoraFactorsRideOnTheSegment) {
  const ResidentLora d = Resident("d", 1, {Module::kO}, 2, 1.0f, /*dora=*/true);
  const std::vector<AdapterSetView> sets = {{{&d, 1.0f}}};
  auto plan = BuildLoraPlan(Seqs{Seq(0, 3, 0)}, sets, 1);
  ASSERT_TRUE(plan.ok());
  const auto o = plan->Segments(0, static_cast<int>(Module::kO));
  ASSERT_EQ(o.size(), 1u);
  ASSERT_NE(o[0].out_scale, nullptr);
  EXPECT_FLOAT_EQ(o[0].out_scale[0], 1.5f);
}

TEST(LoraPlanBuilderTest, BaseOnlyStepsHaveAnEmptyPlanAndBadSetsAreRejected) {
  auto base = BuildLoraPlan(Seqs{Seq(0, 4, -1)}, {}, 3);
  ASSERT_TRUE(base.ok());
  EXPECT_TRUE(base->empty());
  EXPECT_TRUE(base->Segments(2, 1).empty());
  EXPECT_EQ(BuildLoraPlan(Seqs{Seq(0, 4, 1)}, {}, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loraserve
