// The decode window of tests/gpu/cuda_decode_bench.cc: opens at the last first token, closes at
// the last token, counts only the tokens strictly inside.
#include "tests/gpu/decode_window.h"

#include <gtest/gtest.h>

namespace loraserve {
namespace {

TEST(DecodeWindowTest, OpensAtTheLastFirstTokenAndClosesAtTheLastToken) {
  // Request 1's prefill ends at 2.0: request 0's tokens at 1.0 and 2.0 are outside the window.
  const DecodeWindow w = MeasureDecodeWindow({{1.0, 2.0, 3.0, 4.0}, {2.0, 3.0, 4.0, 5.0}});
  EXPECT_DOUBLE_EQ(w.begin, 2.0);
  EXPECT_DOUBLE_EQ(w.end, 5.0);
  EXPECT_EQ(w.tokens, 5);  // 3.0, 4.0 and 3.0, 4.0, 5.0
  EXPECT_DOUBLE_EQ(w.seconds, 3.0);
  EXPECT_DOUBLE_EQ(w.tokens_per_s, 5.0 / 3.0);
}

TEST(DecodeWindowTest, LockstepBatchCountsEveryDecodeStep) {
  // Four requests, one prefill step at 0.5, then three decode steps 0.1 s apart.
  std::vector<std::vector<double>> times(4, {0.5, 0.6, 0.7, 0.8});
  const DecodeWindow w = MeasureDecodeWindow(times);
  EXPECT_EQ(w.tokens, 12);
  EXPECT_NEAR(w.tokens_per_s, 12 / 0.3, 1e-9);
}

TEST(DecodeWindowTest, EmptyWhenARequestHasNoTokenOrNoneDecodes) {
  EXPECT_EQ(MeasureDecodeWindow({}).tokens, 0);
  EXPECT_EQ(MeasureDecodeWindow({{1.0, 2.0}, {}}).tokens_per_s, 0);
  const DecodeWindow one_token = MeasureDecodeWindow({{1.0}, {1.0}});
  EXPECT_EQ(one_token.tokens, 0);
  EXPECT_EQ(one_token.tokens_per_s, 0);
}

}  // namespace
}  // namespace loraserve
