// Canonical normalization against known UAX #15 results (Python's unicodedata agrees).
#include "runtime/tokenizer/unicode_normalization.h"

#include "gtest/gtest.h"

namespace loraserve::tokenizer {
namespace {

TEST(UnicodeNormalizationTest, ComposesAndOrdersMarks) {
  EXPECT_EQ(ToNfc("e\xCC\x81"), "\xC3\xA9");                          // e + acute -> é
  EXPECT_EQ(ToNfc("a\xCC\x88\xCC\x81"), "\xC3\xA4\xCC\x81");          // ä + acute stays
  EXPECT_EQ(ToNfc("o\xCC\xA3\xCC\x82"), "\xE1\xBB\x99");              // o + dot below + circumflex
  EXPECT_EQ(ToNfc("o\xCC\x82\xCC\xA3"), "\xE1\xBB\x99");              // reordered first
  EXPECT_EQ(ToNfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  EXPECT_EQ(ToNfc("\xE2\x84\xAB"), "\xC3\x85");                       // ANGSTROM SIGN -> Å
  EXPECT_EQ(ToNfc("\xCC\x81" "a"), "\xCC\x81" "a");                   // leading mark
}

TEST(UnicodeNormalizationTest, DecomposesAndKeepsStableText) {
  EXPECT_EQ(ToNfd("\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(ToNfd("\xEA\xB0\x81"), "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
  const std::string stable = "plain ASCII, \xE4\xB8\xAD\xE6\x96\x87, \xF0\x9F\x98\x80";
  EXPECT_EQ(ToNfc(stable), stable);
  EXPECT_EQ(ToNfd(stable), stable);
}

}  // namespace
}  // namespace loraserve::tokenizer
