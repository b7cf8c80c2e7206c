// fp16/bf16 conversions: every fp16 bit pattern round-trips through fp32, and fp32 values between
// two fp16 neighbours round to nearest even, as numpy's astype(float16) does.
#include "formats/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace loraserve {
namespace {

TEST(Dtype, EveryF16RoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = F16ToFloat(static_cast<uint16_t>(bits));
    const uint16_t back = FloatToF16(value);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(back))) << bits;
    } else {
      EXPECT_EQ(back, bits) << "bits " << bits << " value " << value;
    }
  }
}

TEST(Dtype, F16RoundsToNearestEven) {
  // 1 + 2^-11 is halfway between 1 and the next fp16 (1 + 2^-10): ties go to the even 1.
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, even is up
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11) * 1.01f), 0x3c01);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);  // rounds past the largest finite: infinity
  EXPECT_EQ(FloatToF16(-1e9f), 0xfc00);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);        // half the smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.5f, -25)), 0x0001);        // above it: rounds up
  EXPECT_EQ(FloatToF16(std::ldexp(1023.5f, -24)), 0x0400);     // subnormal carries to normal
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Dtype, Bf16RoundTripsAndRounds) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = Bf16ToFloat(static_cast<uint16_t>(bits));
    if (!std::isnan(value)) EXPECT_EQ(FloatToBf16(value), bits) << bits;
  }
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie to even
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
}

}  // namespace
}  // namespace loraserve
