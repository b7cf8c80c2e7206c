// The paired bf16 layout (bf16_pairs.h): pairing and widening back are inverse for rows with and
// without tails, and a paired weight gives bit-identical outputs to the natural one on every path
// (micro-kernels at every row-tile size and depth block, the fused call, OpenBLAS, and a layout
// the chosen kernels do not read).
#include "kernels/cpu/bf16_pairs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "formats/half.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/lora.h"

namespace loraserve::kernels {
namespace {

std::vector<uint16_t> RandomBits(size_t n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<uint16_t> bits(n);
  for (uint16_t& b : bits) b = FloatToBf16(uniform(rng));
  return bits;
}

TEST(Bf16PairsTest, PairingMovesElementJPlusLanesNextToJAndWidensBack) {
  for (int lanes : {8, 16}) {
    for (int cols : {1, 15, 16, 31, 32, 33, 70, 96}) {
      SCOPED_TRACE(testing::Message() << "lanes " << lanes << " cols " << cols);
      const int rows = 3;
      const std::vector<uint16_t> natural = RandomBits(rows * cols, cols);
      std::vector<uint16_t> paired(natural.size());
      PairBf16Rows(natural.data(), rows, cols, lanes, paired.data());
      const int whole = cols / (2 * lanes) * 2 * lanes;
      for (int r = 0; r < rows; ++r) {
        const uint16_t* n = natural.data() + r * cols;
        const uint16_t* p = paired.data() + r * cols;
        for (int b = 0; b < whole; b += 2 * lanes) {
          for (int j = 0; j < lanes; ++j) {
            ASSERT_EQ(p[b + 2 * j], n[b + j]);
            ASSERT_EQ(p[b + 2 * j + 1], n[b + lanes + j]);
          }
        }
        for (int i = whole; i < cols; ++i) ASSERT_EQ(p[i], n[i]) << "the tail stays natural";
        std::vector<float> back(cols);
        WidenPairedBf16Row(p, cols, lanes, 0, cols, back.data());
        for (int i = 0; i < cols; ++i) ASSERT_EQ(back[i], Bf16ToFloat(n[i])) << i;
        if (cols > 5) {  // a slice from the middle
          WidenPairedBf16Row(p, cols, lanes, 3, cols - 5, back.data());
          for (int i = 0; i < cols - 5; ++i) ASSERT_EQ(back[i], Bf16ToFloat(n[3 + i])) << i;
        }
      }
    }
  }
  std::vector<uint16_t> copy(4);
  const std::vector<uint16_t> natural = {1, 2, 3, 4};
  PairBf16Rows(natural.data(), 2, 2, 0, copy.data());
  EXPECT_EQ(copy, natural);
}

struct Shape {
  int rows, in, out;
};

// y from the natural bits and from the paired bits, with `lanes` for the paired (the options'
// own lanes, or a layout those kernels do not read).
void ExpectPairedMatchesNatural(const Shape& s, const detail::LinearOptions& options, int lanes) {
  const std::vector<uint16_t> natural = RandomBits(static_cast<size_t>(s.out) * s.in, s.in);
  std::vector<uint16_t> paired(natural.size());
  PairBf16Rows(natural.data(), s.out, s.in, lanes, paired.data());
  std::mt19937 rng(s.rows);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int64_t ldx = s.in + 1;
  std::vector<float> x(s.rows * ldx);
  for (float& v : x) v = uniform(rng);
  for (bool accumulate : {false, true}) {
    std::vector<float> want(static_cast<size_t>(s.rows) * s.out, 0.5f), got = want;
    // The reference takes the same path the paired weight should end on: the micro-kernels when
    // they read this layout, OpenBLAS on the widened weight otherwise.
    detail::LinearOptions reference = options;
    if (lanes != detail::Bf16PairLanes(options)) reference.micro_kernel_max_rows = 0;
    detail::LinearForward(x.data(), ldx, natural.data(), LoraDtype::kBF16, s.rows, s.in, s.out,
                          want.data(), s.out, accumulate, reference);
    detail::LinearForward(
        x.data(), ldx, s.rows, s.in,
        LinearPart{paired.data(), LoraDtype::kBF16, s.out, got.data(), s.out, lanes}, accumulate,
        options);
    EXPECT_EQ(got, want) << (accumulate ? "accumulate" : "overwrite");
  }
}

const Shape kShapes[] = {{1, 576, 200}, {3, 70, 33},   {4, 1030, 64}, {5, 2080, 40},
                         {16, 40, 96},  {64, 576, 80}, {7, 31, 17},   {513, 96, 24}};

TEST(Bf16PairsTest, PairedWeightsGiveTheNaturalOutputsBitForBit) {
  for (const detail::LinearOptions& options :
       {detail::LinearOptions{}, detail::LinearOptions{.allow_avx512 = false},
        detail::LinearOptions{.allow_avx512 = false, .allow_avx2 = false}}) {
    const int lanes = detail::Bf16PairLanes(options);
    for (const Shape& s : kShapes) {
      SCOPED_TRACE(testing::Message() << s.rows << "x" << s.in << "->" << s.out << " lanes "
                                      << lanes << " avx512 " << options.allow_avx512);
      ExpectPairedMatchesNatural(s, options, lanes);
      // A layout these kernels do not read is widened back, never misread.
      ExpectPairedMatchesNatural(s, options, lanes == 16 ? 8 : 16);
    }
  }
}

// On an AVX-512 CPU the widest kernels read the paired layout; AVX2's and the portable path read
// natural bf16 (simd_avx2.inc says why).
TEST(Bf16PairsTest, LanesFollowTheChosenKernels) {
  EXPECT_EQ(detail::Bf16PairLanes({.allow_avx512 = false}), 0);
  EXPECT_EQ(detail::Bf16PairLanes({.allow_avx512 = false, .allow_avx2 = false}), 0);
  EXPECT_EQ(detail::Bf16PairLanes({}), detail::CpuHasAvx512() ? 16 : 0);
}

TEST(Bf16PairsTest, FusedPartsMatchOneCallPerPartWithPairedWeights) {
  const detail::LinearOptions options{};
  const int own = detail::Bf16PairLanes(options);
  for (int lanes : {own, own == 16 ? 8 : 16}) {
    SCOPED_TRACE(testing::Message() << "lanes " << lanes);
    const int in = 576, rows = 6;
    const int outs[3] = {96, 32, 32};
    std::vector<std::vector<uint16_t>> paired(3);
    std::vector<std::vector<float>> fused(3), alone(3);
    std::vector<LinearPart> parts;
    for (int p = 0; p < 3; ++p) {
      const std::vector<uint16_t> natural = RandomBits(static_cast<size_t>(outs[p]) * in, p);
      paired[p].resize(natural.size());
      PairBf16Rows(natural.data(), outs[p], in, lanes, paired[p].data());
      fused[p].assign(static_cast<size_t>(rows) * outs[p], 0.0f);
      alone[p] = fused[p];
      parts.push_back(
          {paired[p].data(), LoraDtype::kBF16, outs[p], fused[p].data(), outs[p], lanes});
    }
    std::vector<float> x(rows * in);
    for (int i = 0; i < rows * in; ++i) x[i] = std::sin(0.1f * i);
    detail::LinearForwardFused(x.data(), in, rows, in, parts.data(), 3, options);
    for (int p = 0; p < 3; ++p) {
      LinearPart part = parts[p];
      part.y = alone[p].data();
      detail::LinearForward(x.data(), in, rows, in, part, false, options);
      EXPECT_EQ(fused[p], alone[p]) << "part " << p;
    }
  }
}

}  // namespace
}  // namespace loraserve::kernels
