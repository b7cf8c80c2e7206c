// Stop strings while streaming: text that might begin a stop string is held back, a stop string
// (even one spread over several tokens) never reaches the stream, streamed chunks are whole
// UTF-8, min_tokens holds stop strings off, and the streamed text always equals the final text
// (bytes of a character left incomplete at the end included). Driven token by token through
// RequestState with the real Llama 3 tokenizer, then end to end through Engine::Submit.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/request_state.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/utf8.h"
#include "tests/runtime/test_model_fixture.h"
#include "tests/runtime/tokenizer/tokenizer_test_util.h"

namespace loraserve {
namespace {

// Llama 3's byte-level BPE decodes a concatenation of ids to the concatenation of their texts,
// so each piece below becomes its own tokens and the token boundaries are the piece boundaries.
const Tokenizer& Llama3() {
  static const std::unique_ptr<Tokenizer> tokenizer = LoadRealTokenizer("llama3");
  return *tokenizer;
}

// One request's stream: feeds pieces of text as the tokens that encode them and records every
// chunk the stream sends.
class StreamedRequest {
 public:
  explicit StreamedRequest(std::vector<std::string> stop_strings, int max_tokens = 1000,
                           int min_tokens = 0) {
    GenerationRequest request;
    request.prompt_ids = {1};
    request.max_tokens = max_tokens;
    request.min_tokens = min_tokens;
    request.stop_strings = std::move(stop_strings);
    RequestCallbacks callbacks;
    callbacks.on_token = [this](const TokenEvent& event) { chunks_.push_back(event.text); };
    state_.Init(std::move(request), std::move(callbacks), RequestState::Clock::now());
  }

  // Appends the tokens of `piece`; returns the finish reason if one of them ended the request.
  std::optional<FinishReason> Feed(const std::string& piece) {
    const std::vector<int32_t> ids = Llama3().Encode(piece, /*add_special_tokens=*/false);
    EXPECT_FALSE(ids.empty()) << piece;
    return FeedIds(ids);
  }

  std::optional<FinishReason> FeedIds(const std::vector<int32_t>& ids) {
    for (size_t i = 0; i < ids.size(); ++i) {
      fed_.push_back(ids[i]);
      if (auto reason = state_.Append(ids[i], false, &Llama3(), RequestState::Clock::now())) {
        EXPECT_EQ(i + 1, ids.size()) << "finished inside a piece at token " << i;
        return reason;
      }
    }
    return std::nullopt;
  }

  std::optional<FinishReason> FeedEos() {
    return state_.Append(0, /*is_eos=*/true, &Llama3(), RequestState::Clock::now());
  }

  RequestResult Finish(FinishReason reason) {
    return state_.MakeResult(reason, absl::OkStatus(), RequestState::Clock::now());
  }

  std::string streamed() const {
    std::string all;
    for (const std::string& chunk : chunks_) all += chunk;
    return all;
  }
  const std::vector<std::string>& chunks() const { return chunks_; }
  size_t generated() const { return fed_.size(); }
  // The premise of the piece-by-piece tests: the tokens fed decode to the pieces joined.
  std::string decoded() const { return Llama3().Decode(fed_, /*skip_special_tokens=*/true); }

 private:
  RequestState state_;
  std::vector<std::string> chunks_;
  std::vector<int32_t> fed_;
};

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

TEST(StopStringsTest, StopSpanningTokensIsNeverStreamedNotEvenPartly) {
  StreamedRequest stream({" the end"});
  const std::string before = "Hello world";
  for (const char* piece : {"Hello", " world", " the"}) {
    ASSERT_FALSE(stream.Feed(piece).has_value());
    EXPECT_TRUE(StartsWith(before, stream.streamed())) << "streamed: " << stream.streamed();
  }
  EXPECT_EQ(stream.Feed(" end"), FinishReason::kStop);
  EXPECT_EQ(stream.decoded(), "Hello world the end");
  const RequestResult result = stream.Finish(FinishReason::kStop);
  EXPECT_EQ(result.text, before);
  EXPECT_EQ(stream.streamed(), before);
}

TEST(StopStringsTest, StopInsideOneTokenCutsThatToken) {
  StreamedRequest stream({"orl"});
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  EXPECT_EQ(stream.Feed(" world"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "Hello w");
  EXPECT_EQ(stream.streamed(), "Hello w");
}

TEST(StopStringsTest, TextBeforeAStopIsStreamedWhileGenerating) {
  // Streaming is incremental, not deferred to the end: with a 5-byte stop string, text more
  // than 5 bytes back from the end cannot be part of a stop and must already be out.
  StreamedRequest stream({"<END>"});
  std::string text;
  for (const char* piece : {"The", " quick", " brown", " fox", " jumps", " over"}) {
    ASSERT_FALSE(stream.Feed(piece).has_value());
    text += piece;
    EXPECT_TRUE(StartsWith(text, stream.streamed()));
    if (text.size() > 5) {
      EXPECT_GE(stream.streamed().size(), text.size() - 5) << "held back too much of " << text;
    }
  }
  EXPECT_EQ(stream.Feed("<END>"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, text);
  EXPECT_EQ(stream.streamed(), text);
}

TEST(StopStringsTest, HeldBackPrefixIsReleasedWhenNoStopFollows) {
  StreamedRequest stream({" the end"});
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  ASSERT_FALSE(stream.Feed(" world").has_value());
  ASSERT_FALSE(stream.Feed(" the").has_value());
  // " the" could begin " the end": it must not be out yet.
  EXPECT_TRUE(StartsWith("Hello world", stream.streamed())) << stream.streamed();
  ASSERT_FALSE(stream.Feed(" beginning").has_value());
  // " the beginning" is not a stop: the held-back " the" is released.
  EXPECT_TRUE(StartsWith(stream.streamed(), "Hello world the")) << stream.streamed();
  ASSERT_FALSE(stream.Feed(" of the").has_value());
  const std::string full = "Hello world the beginning of the";
  EXPECT_EQ(stream.decoded(), full);
  // Finishing for another reason flushes whatever is still held back, stop prefix included.
  const RequestResult result = stream.Finish(FinishReason::kLength);
  EXPECT_EQ(result.text, full);
  EXPECT_EQ(stream.streamed(), full);
}

TEST(StopStringsTest, MaxTokensFlushesHeldBackText) {
  StreamedRequest stream({"never appears"}, /*max_tokens=*/3);
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  ASSERT_FALSE(stream.Feed(" world").has_value());
  EXPECT_EQ(stream.Feed(" again"), FinishReason::kLength);
  EXPECT_EQ(stream.Finish(FinishReason::kLength).text, "Hello world again");
  EXPECT_EQ(stream.streamed(), "Hello world again");
}

TEST(StopStringsTest, EosFinishesAndFlushesHeldBackText) {
  StreamedRequest stream({" the end"});
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  ASSERT_FALSE(stream.Feed(" world").has_value());
  EXPECT_EQ(stream.FeedEos(), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "Hello world");
  EXPECT_EQ(stream.streamed(), "Hello world");
}

TEST(StopStringsTest, StopStringAtTheVeryStartStreamsNothing) {
  StreamedRequest stream({"Hello world"});
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  EXPECT_EQ(stream.Feed(" world"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "");
  EXPECT_EQ(stream.streamed(), "");
}

TEST(StopStringsTest, EmptyStopStringIsIgnored) {
  // "" occurs everywhere; honouring it would end every request before its first character.
  StreamedRequest stream({""});
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  EXPECT_EQ(stream.streamed(), "Hello") << "nothing can start a stop: no hold-back";
  ASSERT_FALSE(stream.Feed(" world").has_value());
  EXPECT_EQ(stream.Finish(FinishReason::kLength).text, "Hello world");
  EXPECT_EQ(stream.streamed(), "Hello world");
}

TEST(StopStringsTest, MultiByteStopStringAcrossTokens) {
  // "日本語" is two tokens ("日本", "語"); the stop must not leak its first character.
  StreamedRequest stream({"日本語"});
  ASSERT_FALSE(stream.Feed("Kanji:").has_value());
  ASSERT_FALSE(stream.Feed(" 日本").has_value());
  EXPECT_TRUE(StartsWith("Kanji: ", stream.streamed())) << stream.streamed();
  EXPECT_EQ(stream.Feed("語"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "Kanji: ");
  EXPECT_EQ(stream.streamed(), "Kanji: ");
}

// Every streamed chunk must be valid UTF-8 on its own: each becomes a proto3 `string` field of a
// GenerateStream message, and a client rejects a message holding half a character. The hold-back
// (longest stop - 1 bytes) must back off to a character boundary rather than cut at a byte.
TEST(StopStringsTest, StreamedChunksNeverSplitMultiByteCharacters) {
  // Emoji (4 bytes, one byte-token each), accented Latin (2 bytes), CJK (3 bytes), tried with
  // every hold-back length from 1 to 9 bytes so that cuts land at every offset in a character.
  const std::vector<std::string> pieces = {"Hi",   " 🦙", " café",  " 日本語", " été",
                                           "🦙", "🦙",  " naïve", " 語",     " done"};
  std::string full;
  for (const std::string& piece : pieces) full += piece;
  for (int stop_length = 2; stop_length <= 10; ++stop_length) {
    SCOPED_TRACE(::testing::Message() << "stop length " << stop_length);
    StreamedRequest stream({std::string(stop_length, '#')});
    for (const std::string& piece : pieces) ASSERT_FALSE(stream.Feed(piece).has_value());
    const RequestResult result = stream.Finish(FinishReason::kLength);
    ASSERT_EQ(stream.decoded(), full);
    EXPECT_EQ(result.text, full);
    EXPECT_EQ(stream.streamed(), full);
    std::vector<std::string> split;
    for (const std::string& chunk : stream.chunks()) {
      if (!tokenizer::IsValidUtf8(chunk)) split.push_back(chunk);
    }
    EXPECT_TRUE(split.empty()) << split.size() << " chunks split a character, the first "
                               << ::testing::PrintToString(split.front());
  }
}

// When one token completes two stop strings, the output must end before the earlier one,
// whichever order the request lists them in ({"ld", "o w"} once returned "hello wor", which
// holds the whole stop "o w").
TEST(StopStringsTest, EarliestStopWinsWhateverTheListOrder) {
  for (const std::vector<std::string>& stops :
       {std::vector<std::string>{"ld", "o w"}, std::vector<std::string>{"o w", "ld"}}) {
    SCOPED_TRACE(stops[0]);
    StreamedRequest stream(stops);
    ASSERT_FALSE(stream.Feed("hello").has_value());
    EXPECT_EQ(stream.Feed(" world"), FinishReason::kStop);
    EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "hell");
    EXPECT_EQ(stream.streamed(), "hell");
  }
}

TEST(StopStringsTest, MinTokensHoldsStopStringsOffUntilReached) {
  // " end" completes at token 3 and again at token 6; min_tokens = 5 honours only the second.
  StreamedRequest stream({" end"}, 1000, /*min_tokens=*/5);
  for (const char* piece : {"Hello", " the", " end", " and", " the"}) {
    ASSERT_FALSE(stream.Feed(piece).has_value()) << piece;
  }
  ASSERT_EQ(stream.generated(), 5u);
  EXPECT_EQ(stream.Feed(" end"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "Hello the end and the");
  EXPECT_EQ(stream.streamed(), "Hello the end and the");
}

TEST(StopStringsTest, StopStringCompletedUnderMinTokensStaysInTheText) {
  // " end" is complete at token 3, held off; token 4 reaches min_tokens and must not look back
  // at it (only a stop string the newest text completes counts).
  StreamedRequest stream({" end"}, 1000, /*min_tokens=*/4);
  for (const char* piece : {"Hello", " the", " end", " again"}) {
    ASSERT_FALSE(stream.Feed(piece).has_value()) << piece;
  }
  EXPECT_EQ(stream.Feed(" end"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "Hello the end again");
  EXPECT_EQ(stream.streamed(), "Hello the end again");
}

TEST(StopStringsTest, MinTokensReachedByTheStoppingTokenHonoursTheStop) {
  // min_tokens counts the token that completes the stop, as vLLM's check does.
  StreamedRequest stream({" end"}, 1000, /*min_tokens=*/3);
  ASSERT_FALSE(stream.Feed("Hello").has_value());
  ASSERT_FALSE(stream.Feed(" the").has_value());
  EXPECT_EQ(stream.Feed(" end"), FinishReason::kStop);
  EXPECT_EQ(stream.Finish(FinishReason::kStop).text, "Hello the");
}

// The leading byte-level tokens of a 4-byte emoji: a character still incomplete when the
// request ends.
std::vector<int32_t> PartialEmoji() {
  const std::vector<int32_t> ids = Llama3().Encode("🦙", /*add_special_tokens=*/false);
  EXPECT_GE(ids.size(), 2u) << "the emoji is one token: the premise of the test fails";
  return std::vector<int32_t>(ids.begin(), ids.end() - 1);
}

TEST(StopStringsTest, EndingMidCharacterKeepsItsBytesInTextAndStream) {
  for (FinishReason reason : {FinishReason::kLength, FinishReason::kCancelled}) {
    SCOPED_TRACE(FinishReasonName(reason));
    StreamedRequest stream({});
    ASSERT_FALSE(stream.Feed("Hi").has_value());
    ASSERT_FALSE(stream.FeedIds(PartialEmoji()).has_value());
    const RequestResult result = stream.Finish(reason);
    // A full decode of the same ids: the incomplete bytes become U+FFFD.
    EXPECT_EQ(result.text, stream.decoded());
    EXPECT_NE(result.text, "Hi");
    EXPECT_EQ(stream.streamed(), result.text);
    EXPECT_EQ(result.finish_reason, reason);
  }
}

TEST(StopStringsTest, FlushedBytesCanCompleteAStopString) {
  // Stop on U+FFFD: only the end-of-request flush of the incomplete emoji produces it.
  StreamedRequest stream({"\xEF\xBF\xBD"});
  ASSERT_FALSE(stream.Feed("Hi").has_value());
  ASSERT_FALSE(stream.FeedIds(PartialEmoji()).has_value());
  const RequestResult result = stream.Finish(FinishReason::kLength);
  EXPECT_EQ(result.text, "Hi");
  EXPECT_EQ(result.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stream.streamed(), "Hi");
}

TEST(StopStringsEngineTest, StopStringsWithoutTokenizerAreRejected) {
  auto engine = Engine::Create(testing::LoadTinyModel(), EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationRequest request;
  request.prompt_ids = {4, 8, 15};
  request.stop_strings = {"stop"};
  const auto id = (*engine)->Submit(std::move(request), RequestCallbacks{});
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(id.status().message().find("tokenizer"), std::string::npos) << id.status();
}

// End to end through the engine: a greedy run without stop strings gives the text, then the
// same request with a stop string taken from its middle must stream exactly the text before it.
TEST(StopStringsEngineTest, SubmitWithStopStringStreamsOnlyTextBeforeIt) {
  const Tokenizer& tokenizer = Llama3();
  auto run = [&](std::vector<std::string> stops) {
    auto model = testing::LoadTinyModel();
    EngineOptions options;
    options.tokenizer = &tokenizer;
    auto engine = Engine::Create(std::move(model), options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    GenerationRequest request;
    request.prompt_ids = {4, 8, 15, 16, 23, 42};  // the tiny model's vocabulary is 512 ids
    request.max_tokens = 40;
    request.ignore_eos = true;
    request.stop_strings = std::move(stops);
    auto streamed = std::make_shared<std::string>();
    auto done = std::make_shared<std::promise<RequestResult>>();
    RequestCallbacks callbacks;
    callbacks.on_token = [streamed](const TokenEvent& e) { *streamed += e.text; };
    callbacks.on_finish = [done](const RequestResult& r) { done->set_value(r); };
    auto future = done->get_future();
    const auto id = (*engine)->Submit(std::move(request), std::move(callbacks));
    EXPECT_TRUE(id.ok()) << id.status();
    RequestResult result = id.ok() ? future.get() : RequestResult{};
    return std::make_pair(result, *streamed);
  };
  const auto [free_run, free_streamed] = run({});
  ASSERT_EQ(free_run.tokens.size(), 40u);
  EXPECT_EQ(free_streamed, free_run.text);
  // A stop of whole tokens 20..22, so it spans at least two tokens and ends mid-generation.
  auto decode = [&](size_t from, size_t to) {
    return tokenizer.Decode(std::span(free_run.tokens).subspan(from, to - from), true);
  };
  const std::string stop = decode(20, 23);
  ASSERT_EQ(free_run.text.find(decode(0, 20)), 0u) << "token texts do not concatenate";
  ASSERT_GE(stop.size(), 2u);
  const size_t cut = free_run.text.find(stop);
  ASSERT_NE(cut, std::string::npos);
  const auto [stopped, stopped_streamed] = run({stop});
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped.text, free_run.text.substr(0, cut));
  EXPECT_EQ(stopped_streamed, stopped.text);
  // Generation stopped early (the detokenizer may hold back partial bytes for a few tokens, so
  // not necessarily at token 23) and along the same greedy path.
  ASSERT_LT(stopped.tokens.size(), free_run.tokens.size());
  EXPECT_TRUE(std::equal(stopped.tokens.begin(), stopped.tokens.end(), free_run.tokens.begin()));
}

// min_tokens end to end: a stop string that ends the free run early is ignored when min_tokens
// covers the whole generation.
TEST(StopStringsEngineTest, MinTokensIgnoresStopStringsUntilReached) {
  const Tokenizer& tokenizer = Llama3();
  auto engine = Engine::Create(testing::LoadTinyModel(), [&] {
    EngineOptions options;
    options.tokenizer = &tokenizer;
    return options;
  }());
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto run = [&](std::vector<std::string> stops, int min_tokens) {
    GenerationRequest request;
    request.prompt_ids = {4, 8, 15, 16, 23, 42};
    request.max_tokens = 30;
    request.ignore_eos = true;
    request.stop_strings = std::move(stops);
    request.min_tokens = min_tokens;
    auto streamed = std::make_shared<std::string>();
    auto done = std::make_shared<std::promise<RequestResult>>();
    RequestCallbacks callbacks;
    callbacks.on_token = [streamed](const TokenEvent& e) { *streamed += e.text; };
    callbacks.on_finish = [done](const RequestResult& r) { done->set_value(r); };
    auto future = done->get_future();
    const auto id = (*engine)->Submit(std::move(request), std::move(callbacks));
    EXPECT_TRUE(id.ok()) << id.status();
    RequestResult result = id.ok() ? future.get() : RequestResult{};
    EXPECT_EQ(*streamed, result.text);
    return result;
  };
  const RequestResult free_run = run({}, 0);
  ASSERT_EQ(free_run.tokens.size(), 30u);
  const std::string stop = tokenizer.Decode(std::span(free_run.tokens).subspan(3, 2), true);
  ASSERT_GE(stop.size(), 2u);
  ASSERT_NE(free_run.text.find(stop), std::string::npos);
  const RequestResult stopped = run({stop}, 0);
  ASSERT_EQ(stopped.finish_reason, FinishReason::kStop);
  ASSERT_LT(stopped.tokens.size(), 30u);
  const RequestResult held = run({stop}, 30);
  EXPECT_EQ(held.finish_reason, FinishReason::kLength);
  EXPECT_EQ(held.tokens, free_run.tokens);
  EXPECT_EQ(held.text, free_run.text);
}

}  // namespace
}  // namespace loraserve
