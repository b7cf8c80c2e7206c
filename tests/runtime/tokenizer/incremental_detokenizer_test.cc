// Streaming decode must equal the full decode and never emit a partial UTF-8 character.
#include "runtime/tokenizer/incremental_detokenizer.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/tokenizer/utf8.h"
#include "tests/runtime/tokenizer/tokenizer_test_util.h"

namespace loraserve {
namespace {

const char* const kTexts[] = {
    "Hello world, streaming text!",
    "  leading spaces and\ttabs\n\nnew lines",
    "emoji \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 and "
    "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
    "\xE4\xB8\xAD\xE6\x96\x87\xE5\x88\x86\xE8\xAF\x8D \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
    "rare \xF0\x93\x80\x80\xF0\x93\x80\x81 glyphs",
    "<|im_start|>user\nhi<|im_end|>",
};

class IncrementalDetokenizerTest : public ::testing::TestWithParam<const char*> {};

TEST_P(IncrementalDetokenizerTest, ConcatenationEqualsFullDecode) {
  auto tokenizer = LoadRealTokenizer(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  for (bool skip_special : {false, true}) {
    for (const char* text : kTexts) {
      const std::vector<int32_t> ids = tokenizer->Encode(text, true);
      IncrementalDetokenizer stream(*tokenizer, skip_special);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string delta = stream.Push(id);
        EXPECT_TRUE(tokenizer::IsValidUtf8(delta)) << text;
        EXPECT_EQ(delta.find("\xEF\xBF\xBD"), std::string::npos) << "partial character in " << text;
        streamed += delta;
      }
      streamed += stream.Flush();
      EXPECT_EQ(streamed, tokenizer->Decode(ids, skip_special)) << text;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, IncrementalDetokenizerTest,
                         ::testing::Values("llama2", "llama3", "qwen3"));

TEST(IncrementalDetokenizerStandaloneTest, InvalidBytesGoOutWithTheNextCompleteText) {
  auto tokenizer = LoadRealTokenizer("llama3");
  ASSERT_NE(tokenizer, nullptr);
  // The byte-level token for a lone continuation byte 0x80 never becomes valid UTF-8.
  const std::optional<int32_t> lone = tokenizer->TokenToId("\xC4\xA2");
  const std::optional<int32_t> hello = tokenizer->TokenToId("Hello");
  ASSERT_TRUE(lone.has_value() && hello.has_value());
  IncrementalDetokenizer stream(*tokenizer, false);
  EXPECT_EQ(stream.Push(*lone), "");
  EXPECT_EQ(stream.Push(*lone), "");
  EXPECT_EQ(stream.Push(*hello), "\xEF\xBF\xBD\xEF\xBF\xBDHello");
  EXPECT_EQ(stream.Push(*lone), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace loraserve
