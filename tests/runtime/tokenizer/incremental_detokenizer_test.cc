// Streaming decode must equal the full decode and never emit a partial UTF-8 character.
#include "runtime/tokenizer/incremental_detokenizer.h"

#include <optional>
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

// Found by the tokenizer_encode fuzzer: byte-fallback bytes that decode to a character alone
// ("b") become U+FFFD each once an invalid byte follows, so the context no longer decodes to the
// text already sent. Push then waited for good, and Flush cut the new text at the old length,
// in the middle of a U+FFFD (invalid UTF-8 on the wire).
TEST(IncrementalDetokenizerStandaloneTest, ContextThatDecodesDifferentlyLaterStillStreams) {
  auto tokenizer = LoadRealTokenizer("llama2");
  ASSERT_NE(tokenizer, nullptr);
  const std::optional<int32_t> b = tokenizer->TokenToId("<0x62>");
  const std::optional<int32_t> invalid = tokenizer->TokenToId("<0xB1>");
  const std::optional<int32_t> env = tokenizer->TokenToId("env");
  ASSERT_TRUE(b.has_value() && invalid.has_value() && env.has_value());
  ASSERT_EQ(tokenizer->Decode(std::vector<int32_t>{*b, *invalid}, false),
            "\xEF\xBF\xBD\xEF\xBF\xBD");
  IncrementalDetokenizer stream(*tokenizer, false);
  EXPECT_EQ(stream.Push(*b), "b");
  EXPECT_EQ(stream.Push(*invalid), "");
  EXPECT_EQ(stream.Push(*env),
            "\xEF\xBF\xBD"
            "env");  // the new ids, decoded on their own
  EXPECT_EQ(stream.Push(*env), "env");
  EXPECT_EQ(stream.Flush(), "");

  IncrementalDetokenizer held(*tokenizer, false);
  EXPECT_EQ(held.Push(*b), "b");
  EXPECT_EQ(held.Push(*invalid), "");
  const std::string rest = held.Flush();
  EXPECT_TRUE(tokenizer::IsValidUtf8(rest));
  EXPECT_EQ(rest, "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace loraserve
