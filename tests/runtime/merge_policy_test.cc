// The merge policy on a fake clock: the window before merging, hysteresis against other traffic,
// idle keeping the merge, forced and never modes, and time accounting per mode.
#include "runtime/merge_policy.h"

#include <gtest/gtest.h>

namespace loraserve {
namespace {

using std::chrono::milliseconds;

class MergePolicyTest : public ::testing::Test {
 protected:
  MergePolicy::Clock::time_point now_ = MergePolicy::Clock::time_point() + std::chrono::hours(1);
  MergePolicy policy_{[this] { return now_; }};
  const MergePolicy::Clock::duration window_ = milliseconds(2000);

  std::string Decide(MergeMode mode, std::optional<std::string> single, const std::string& merged,
                     bool idle = false, const std::string& forced = "") {
    return policy_.Decide(mode, forced, single, idle, window_, merged);
  }
};

TEST_F(MergePolicyTest, MergesOnlyAfterTheWindowOfSingleAdapterTraffic) {
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "");
  now_ += milliseconds(1999);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "");
  now_ += milliseconds(1);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "a#1");
  // Once merged, it stays merged while the same traffic continues.
  now_ += milliseconds(10);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", "a#1"), "a#1");
}

TEST_F(MergePolicyTest, OtherTrafficUnmergesAtOnceAndRestartsTheWindow) {
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "");
  now_ += milliseconds(2500);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "a#1");
  // Mixed traffic: unmerge immediately, forget the candidate.
  EXPECT_EQ(Decide(MergeMode::kAuto, std::nullopt, "a#1"), "");
  now_ += milliseconds(10);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "");  // the window starts again
  now_ += milliseconds(1500);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "");
  now_ += milliseconds(500);
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "a#1");
}

TEST_F(MergePolicyTest, SwitchingAdapterRestartsTheWindow) {
  EXPECT_EQ(Decide(MergeMode::kAuto, "a#1", ""), "");
  now_ += milliseconds(1500);
  EXPECT_EQ(Decide(MergeMode::kAuto, "b#2", ""), "");
  now_ += milliseconds(1500);
  EXPECT_EQ(Decide(MergeMode::kAuto, "b#2", ""), "");  // only 1.5 s of b
  now_ += milliseconds(500);
  EXPECT_EQ(Decide(MergeMode::kAuto, "b#2", ""), "b#2");
}

TEST_F(MergePolicyTest, IdleKeepsWhatIsMerged) {
  EXPECT_EQ(Decide(MergeMode::kAuto, std::nullopt, "a#1", /*idle=*/true), "a#1");
  EXPECT_EQ(Decide(MergeMode::kAuto, std::nullopt, "", /*idle=*/true), "");
}

TEST_F(MergePolicyTest, ForcedMergesTheNamedAdapterAtOnceButNeverForOtherTraffic) {
  EXPECT_EQ(Decide(MergeMode::kForced, "a#1", "", false, "a#1"), "a#1");
  EXPECT_EQ(Decide(MergeMode::kForced, "b#2", "a#1", false, "a#1"), "");
  EXPECT_EQ(Decide(MergeMode::kForced, std::nullopt, "a#1", false, "a#1"), "");
}

TEST_F(MergePolicyTest, NeverMerges) {
  EXPECT_EQ(Decide(MergeMode::kNever, "a#1", ""), "");
  now_ += std::chrono::hours(1);
  EXPECT_EQ(Decide(MergeMode::kNever, "a#1", ""), "");
  EXPECT_EQ(Decide(MergeMode::kNever, "a#1", "a#1"), "");  // unmerges what a mode change left
}

TEST_F(MergePolicyTest, TicksAccountTimeToTheModeItWasSpentIn) {
  policy_.Tick(false);  // first tick only starts the clock
  now_ += milliseconds(1500);
  policy_.Tick(false);
  now_ += milliseconds(250);
  policy_.Tick(true);
  EXPECT_DOUBLE_EQ(policy_.seconds_unmerged(), 1.5);
  EXPECT_DOUBLE_EQ(policy_.seconds_merged(), 0.25);
}

}  // namespace
}  // namespace loraserve
