// Encode/decode behaviour of the real tokenizers on hand-picked cases (expected ids come from
// Hugging Face tokenizers 0.20.3), metadata, and errors for malformed or unsupported files.
// The exhaustive parity check is tests/python/test_tokenizer_parity.py.
#include "runtime/tokenizer/tokenizer.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/runtime/tokenizer/tokenizer_test_util.h"

namespace loraserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(TokenizerTest, Llama3EncodesLikeReference) {
  auto tokenizer = LoadRealTokenizer("llama3");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("Hello world! 123456 <|im_end|>", true),
            (std::vector<int32_t>{9906, 1917, 0, 220, 4513, 10961, 83739, 318, 6345, 91, 29}));
  EXPECT_EQ(tokenizer->Encode("  h\xC3\xA9llo\n\n\tworld", false),
            (std::vector<int32_t>{220, 305, 19010, 385, 271, 77608}));
  EXPECT_THAT(tokenizer->Encode("<|begin_of_text|>", false), ElementsAre(128000));
  EXPECT_TRUE(tokenizer->Encode("", true).empty());
}

TEST(TokenizerTest, Llama2AddsBosAndUsesByteFallback) {
  auto tokenizer = LoadRealTokenizer("llama2");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("Hello world! 123456 <|im_end|>", true),
            (std::vector<int32_t>{1, 22557, 1526, 28808, 28705, 28740, 28750, 28770, 28781, 28782,
                                  28784, 523, 28766, 321, 28730, 416, 28766, 28767}));
  EXPECT_THAT(tokenizer->Encode("", true), ElementsAre(1));
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  // A character missing from the vocabulary decodes back through its <0xXX> byte tokens.
  const std::string rare = "\xF0\x93\x80\x80";  // U+13000
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(rare, true), true), rare);
}

TEST(TokenizerTest, Qwen3NormalizesToNfcAndKnowsItsSpecialTokens) {
  auto tokenizer = LoadRealTokenizer("qwen3");
  ASSERT_NE(tokenizer, nullptr);
  // "e" + COMBINING ACUTE encodes like the precomposed "é".
  EXPECT_EQ(tokenizer->Encode("caf" "e\xCC\x81", false), tokenizer->Encode("caf\xC3\xA9", false));
  EXPECT_EQ(tokenizer->eos_id(), tokenizer->TokenToId("<|im_end|>"));
  EXPECT_FALSE(tokenizer->bos_id().has_value());
  EXPECT_EQ(tokenizer->vocab_size(), 151669);
  const std::vector<int32_t> ids = tokenizer->Encode("<|im_start|>user\nhi<think>", false);
  EXPECT_EQ(tokenizer->Decode(ids, false), "<|im_start|>user\nhi<think>");
  // <think> is an added token but not a special one, so it survives skip_special_tokens.
  EXPECT_EQ(tokenizer->Decode(ids, true), "user\nhi<think>");
}

TEST(TokenizerTest, DecodeRepairsInvalidUtf8AndIgnoresUnknownIds) {
  auto tokenizer = LoadRealTokenizer("llama3");
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> emoji = tokenizer->Encode("\xF0\x9F\x98\x80", false);
  ASSERT_GT(emoji.size(), 1u);
  const std::string partial = tokenizer->Decode(std::vector<int32_t>{emoji[0]}, false);
  EXPECT_EQ(partial, "\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer->Decode(std::vector<int32_t>{9906, -5, 1 << 30}, false), "Hello");
}

TEST(TokenizerTest, InvalidUtf8InputIsRepairedBeforeEncoding) {
  auto tokenizer = LoadRealTokenizer("llama3");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("a\xFF" "b", false), tokenizer->Encode("a\xEF\xBF\xBD" "b", false));
}

constexpr char kTinyModel[] = R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<unk>": 3},
    "merges": [["a", "b"]], "unk_token": "<unk>"})";

std::string TinyTokenizer(const std::string& extra) {
  return std::string(R"({"model": )") + kTinyModel + extra + "}";
}

TEST(TokenizerTest, MergesInBothFormatsAndUnk) {
  for (const char* merges : {R"(["a b"])", R"([["a", "b"]])"}) {
    const std::string json = R"({"added_tokens": [], "model": {"type": "BPE", "vocab": {"a": 0,
        "b": 1, "ab": 2, "<unk>": 3}, "merges": )" +
                             std::string(merges) + R"(, "unk_token": "<unk>", "fuse_unk": true}})";
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(json, "");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_THAT((*tokenizer)->Encode("abxyab", false), ElementsAre(2, 3, 2));
  }
}

TEST(TokenizerTest, AddedTokenStripFlags) {
  const std::string json = TinyTokenizer(R"(, "added_tokens": [{"id": 4, "content": "<x>",
      "lstrip": true, "rstrip": true, "special": true, "normalized": false}])");
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(json, "");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // Without a pre-tokenizer the spaces would reach BPE as unk; lstrip/rstrip swallow them.
  EXPECT_THAT((*tokenizer)->Encode("ab  <x>  a", false), ElementsAre(2, 4, 0));
}

TEST(TokenizerTest, ErrorsNameTheProblem) {
  auto error = [](const std::string& json) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(json, "");
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  EXPECT_THAT(error("{not json"), HasSubstr("malformed tokenizer JSON"));
  EXPECT_THAT(error(R"({"added_tokens": []})"), HasSubstr("no \"model\""));
  EXPECT_THAT(error(R"({"model": {"type": "WordPiece", "vocab": {}}})"), HasSubstr("'WordPiece'"));
  EXPECT_THAT(error(TinyTokenizer(R"(, "normalizer": {"type": "NFKC"})")), HasSubstr("'NFKC'"));
  EXPECT_THAT(error(TinyTokenizer(R"(, "pre_tokenizer": {"type": "BertPreTokenizer"})")),
              HasSubstr("'BertPreTokenizer'"));
  EXPECT_THAT(error(TinyTokenizer(R"(, "decoder": {"type": "CTC"})")), HasSubstr("'CTC'"));
  EXPECT_THAT(error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a z"]}})"),
              HasSubstr("missing from the vocabulary"));
  EXPECT_THAT(error(TinyTokenizer(R"(, "pre_tokenizer": {"type": "Split", "pattern":
      {"Regex": "(unclosed"}, "behavior": "Isolated"})")),
              HasSubstr("does not compile"));
}

// Found by the tokenizer_json fuzzer: a vocabulary id near 2^31 made the loader allocate a
// table of that many strings (tens of GB); an added token id of 2^31 - 1 overflowed vocab_size.
TEST(TokenizerTest, HugeTokenIdsAreErrors) {
  auto error = [](const std::string& json) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(json, "");
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  EXPECT_THAT(error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2100000000}, "merges": []}})"),
              HasSubstr("token b: id 2100000000 is not an integer in [0, 4194304)"));
  EXPECT_THAT(error(TinyTokenizer(R"(, "added_tokens": [{"id": 2147483647, "content": "<x>"}])")),
              HasSubstr("added token id 2147483647"));
  EXPECT_THAT(error(TinyTokenizer(R"(, "added_tokens": [{"id": -1, "content": "<x>"}])")),
              HasSubstr("added token id -1"));
  // Found by the tokenizer_json fuzzer: a number beyond uint64 parses as a double, and
  // nlohmann's get<int32_t>() of 9.2e21 is undefined behaviour (UBSan: "outside the range of
  // representable values"). Floats, strings and integers beyond int32 are errors now.
  for (const std::string id : {"9223372036854775808269", "1.5", "\"3\"", "4294967296",
                               "-9223372036854775808"}) {
    EXPECT_THAT(error(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": )" + id +
                      R"(}, "merges": []}})"),
                HasSubstr("token b: id"))
        << id;
    EXPECT_THAT(error(TinyTokenizer(R"(, "added_tokens": [{"id": )" + id +
                                    R"(, "content": "<x>"}])")),
                HasSubstr("added token id"))
        << id;
  }
}

TEST(TokenizerTest, MissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromFile("/nonexistent/model");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("cannot read /nonexistent/model"));
}

}  // namespace
}  // namespace loraserve
