// The OpenAI body decoder on its own: every prompt form, choice indices and seeds, defaults,
// field precedence, refused features, merged_adapters validation, and errors that name fields.
#include "server/http/openai_request.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loraserve::server::http {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

absl::StatusOr<OpenAiRequest> Completion(const json& body, uint64_t seed = 100) {
  return ParseOpenAiRequest(ApiKind::kCompletion, body, seed);
}
absl::StatusOr<OpenAiRequest> Chat(const json& body, uint64_t seed = 100) {
  return ParseOpenAiRequest(ApiKind::kChat, body, seed);
}
std::string Error(const absl::StatusOr<OpenAiRequest>& r) {
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

TEST(OpenAiRequestTest, EveryPromptFormBecomesChoicesInPromptMajorOrder) {
  auto text = Completion({{"model", "m"}, {"prompt", "hi"}});
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_EQ(text->choices.size(), 1u);
  EXPECT_EQ(std::get<TextPrompt>(text->choices[0].input.prompt).text, "hi");
  EXPECT_EQ(text->model, "m");

  auto many = Completion({{"model", "m"}, {"prompt", {"a", "b"}}, {"n", 2}});
  ASSERT_TRUE(many.ok()) << many.status();
  ASSERT_EQ(many->choices.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(many->choices[i].index, i);
    EXPECT_EQ(many->choices[i].prompt_index, i / 2);
    EXPECT_EQ(std::get<TextPrompt>(many->choices[i].input.prompt).text, i < 2 ? "a" : "b");
  }
  EXPECT_EQ(many->choices[3].input.fields.text, "prompt[1]");
  EXPECT_EQ(many->num_prompts, 2);

  auto ids = Completion({{"model", "m"}, {"prompt", {1, 2, 3}}});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(std::get<TokenPrompt>(ids->choices[0].input.prompt).ids,
            (std::vector<int32_t>{1, 2, 3}));
  auto nested = Completion({{"model", "m"}, {"prompt", {{1, 2}, {3}}}});
  ASSERT_TRUE(nested.ok());
  ASSERT_EQ(nested->choices.size(), 2u);
  EXPECT_EQ(std::get<TokenPrompt>(nested->choices[1].input.prompt).ids,
            (std::vector<int32_t>{3}));
  EXPECT_EQ(nested->choices[1].input.fields.token_ids, "prompt[1]");
}

TEST(OpenAiRequestTest, MalformedPromptsNameTheElement) {
  EXPECT_THAT(Error(Completion({{"model", "m"}})), StartsWith("prompt: is required"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", json::array()}})),
              StartsWith("prompt: must not be empty"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", {1, "x"}}})),
              StartsWith("prompt[1]:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", {"x", 1}}})),
              StartsWith("prompt[1]:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", {{1}, json::array()}}})),
              StartsWith("prompt[1]: must not be empty"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", {-4}}})), StartsWith("prompt[0]:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", 7}})), StartsWith("prompt:"));
  EXPECT_THAT(Error(Completion({{"prompt", "x"}})), StartsWith("model: is required"));
  EXPECT_THAT(Error(Completion({{"model", 3}, {"prompt", "x"}})), StartsWith("model:"));
  EXPECT_THAT(Error(ParseOpenAiRequest(ApiKind::kCompletion, json::array(), 0)),
              StartsWith("body:"));
}

TEST(OpenAiRequestTest, SeedsMakeChoicesReproducibleAndDistinct) {
  auto seeded = Completion({{"model", "m"}, {"prompt", "x"}, {"n", 3}, {"seed", 5}});
  ASSERT_TRUE(seeded.ok());
  for (int j = 0; j < 3; ++j) {
    ASSERT_TRUE(seeded->choices[j].input.sampling.has_value());
    EXPECT_EQ(seeded->choices[j].input.sampling->seed, 5u + j);
    EXPECT_EQ(seeded->choices[j].input.sampling->temperature, 1.0f);  // OpenAI's default
  }
  auto unseeded = Completion({{"model", "m"}, {"prompt", "x"}, {"n", 2}}, 77);
  ASSERT_TRUE(unseeded.ok());
  EXPECT_EQ(unseeded->choices[1].input.sampling->seed, 78u);
  auto greedy = Completion({{"model", "m"}, {"prompt", "x"}, {"temperature", 0}});
  ASSERT_TRUE(greedy.ok());
  EXPECT_FALSE(greedy->choices[0].input.sampling.has_value());
  auto topk = Completion({{"model", "m"}, {"prompt", "x"}, {"top_k", -1}, {"top_p", 0.5}});
  ASSERT_TRUE(topk.ok());
  EXPECT_EQ(topk->choices[0].input.sampling->top_k, 0);
  EXPECT_FLOAT_EQ(topk->choices[0].input.sampling->top_p, 0.5f);
}

TEST(OpenAiRequestTest, TokenBudgetDefaultsAndPrecedence) {
  auto completion = Completion({{"model", "m"}, {"prompt", "x"}});
  ASSERT_TRUE(completion.ok());
  EXPECT_EQ(completion->choices[0].input.max_tokens, 0);  // the server default (16)
  EXPECT_FALSE(completion->choices[0].input.max_tokens_to_context);
  auto chat = Chat({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_TRUE(chat->choices[0].input.max_tokens_to_context);
  auto both = Chat({{"model", "m"},
                    {"messages", {{{"role", "user"}, {"content", "x"}}}},
                    {"max_tokens", 9},
                    {"max_completion_tokens", 4}});
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->choices[0].input.max_tokens, 4);
  EXPECT_EQ(both->choices[0].input.fields.max_tokens, "max_completion_tokens");
  auto integral = Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 3.0}});
  ASSERT_TRUE(integral.ok());
  EXPECT_EQ(integral->choices[0].input.max_tokens, 3);
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 2.5}})),
              StartsWith("max_tokens:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", 0}})),
              StartsWith("max_tokens:"));
  auto nulls = Completion({{"model", "m"}, {"prompt", "x"}, {"max_tokens", nullptr},
                           {"stop", nullptr}, {"n", nullptr}});
  ASSERT_TRUE(nulls.ok()) << nulls.status();
}

TEST(OpenAiRequestTest, ChatMessagesAndContentParts) {
  auto chat = Chat({{"model", "m"},
                    {"messages",
                     {{{"role", "system"}, {"content", "be brief"}},
                      {{"role", "user"},
                       {"content", {{{"type", "text"}, {"text", "a"}},
                                    {{"type", "text"}, {"text", "b"}}}}},
                      {{"role", "assistant"}, {"content", nullptr}}}}});
  ASSERT_TRUE(chat.ok()) << chat.status();
  const auto& messages = std::get<ChatPrompt>(chat->choices[0].input.prompt).messages;
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[1].content, "ab");
  EXPECT_EQ(messages[2].content, "");
  EXPECT_THAT(Error(Chat({{"model", "m"}, {"messages", {{{"role", "x"}, {"content", "y"}}}}})),
              StartsWith("messages[0].role:"));
  EXPECT_THAT(Error(Chat({{"model", "m"}, {"messages", {{{"role", "user"}}}}})),
              StartsWith("messages[0].content:"));
  EXPECT_THAT(
      Error(Chat({{"model", "m"},
                  {"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}})),
      StartsWith("messages[0].content[0]:"));
}

TEST(OpenAiRequestTest, StreamingLogprobsAndVllmExtras) {
  auto stream = Chat({{"model", "m"},
                      {"messages", {{{"role", "user"}, {"content", "x"}}}},
                      {"stream", true},
                      {"stream_options", {{"include_usage", true}}},
                      {"logprobs", true},
                      {"top_logprobs", 3},
                      {"min_tokens", 2},
                      {"ignore_eos", true},
                      {"stop", "END"}});
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_TRUE(stream->stream && stream->include_usage && stream->logprobs);
  const GenerationInput& in = stream->choices[0].input;
  EXPECT_EQ(in.logprobs, 3);
  EXPECT_EQ(in.min_tokens, 2);
  EXPECT_TRUE(in.ignore_eos);
  EXPECT_EQ(in.stop, std::vector<std::string>{"END"});
  auto completion = Completion({{"model", "m"}, {"prompt", "x"}, {"logprobs", 0}});
  ASSERT_TRUE(completion.ok());
  EXPECT_EQ(completion->choices[0].input.logprobs, 0);  // the sampled token only
  auto none = Completion({{"model", "m"}, {"prompt", "x"}});
  EXPECT_EQ(none->choices[0].input.logprobs, -1);
  EXPECT_THAT(Error(Chat({{"model", "m"},
                          {"messages", {{{"role", "user"}, {"content", "x"}}}},
                          {"top_logprobs", 2}})),
              StartsWith("top_logprobs:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"stream_options", json::object()}})),
              StartsWith("stream_options:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"logprobs", 21}})),
              StartsWith("logprobs:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"echo", true}, {"logprobs", 1}})),
              StartsWith("echo:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"stop", {"a", 1}}})),
              StartsWith("stop[1]:"));
  EXPECT_THAT(Error(Completion(
                  {{"model", "m"}, {"prompt", "x"}, {"stop", std::vector<std::string>(17, "s")}})),
              StartsWith("stop: at most 16"));
  EXPECT_THAT(
      Error(Completion({{"model", "m"}, {"prompt", "x"}, {"stop", {"a", std::string(257, 'b')}}})),
      StartsWith("stop[1]: at most 256 bytes"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"n", 65}})), StartsWith("n:"));
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", {"a", "b", "c"}}, {"n", 30}})),
              StartsWith("n:"));
}

TEST(OpenAiRequestTest, UnsupportedFeaturesAreRefusedUnlessOff) {
  for (const char* key : {"presence_penalty", "frequency_penalty"}) {
    EXPECT_TRUE(Completion({{"model", "m"}, {"prompt", "x"}, {key, 0}}).ok());
    EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {key, 0.5}})),
                StartsWith(std::string(key) + ":"));
  }
  EXPECT_TRUE(Completion({{"model", "m"}, {"prompt", "x"}, {"logit_bias", json::object()}}).ok());
  EXPECT_THAT(Error(Completion({{"model", "m"}, {"prompt", "x"}, {"logit_bias", {{"5", 1}}}})),
              StartsWith("logit_bias:"));
  EXPECT_TRUE(Chat({{"model", "m"},
                    {"messages", {{{"role", "user"}, {"content", "x"}}}},
                    {"response_format", {{"type", "text"}}},
                    {"tool_choice", "none"}})
                  .ok());
  EXPECT_THAT(Error(Chat({{"model", "m"},
                          {"messages", {{{"role", "user"}, {"content", "x"}}}},
                          {"response_format", {{"type", "json_object"}}}})),
              StartsWith("response_format:"));
  // Unknown fields pass, as in vLLM.
  EXPECT_TRUE(Completion({{"model", "m"}, {"prompt", "x"}, {"user", "u"}, {"zzz", {1, 2}}}).ok());
}

TEST(OpenAiRequestTest, MergedAdaptersValidatedLikeLorax) {
  auto ok = Completion({{"model", "m"},
                        {"prompt", "x"},
                        {"merged_adapters",
                         {{"ids", {"a", "b"}}, {"weights", {0.25, 0.75}}, {"merge_strategy", "linear"}}}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_TRUE(ok->merged_adapters.has_value());
  EXPECT_EQ(ok->merged_adapters->ids, (std::vector<std::string>{"a", "b"}));
  EXPECT_FLOAT_EQ(ok->merged_adapters->weights[1], 0.75f);
  auto bad = [](json merged) {
    return Error(Completion({{"model", "m"}, {"prompt", "x"}, {"merged_adapters", merged}}));
  };
  EXPECT_THAT(bad({{"ids", json::array()}, {"weights", json::array()}}),
              StartsWith("merged_adapters.ids:"));
  EXPECT_THAT(bad({{"ids", {"a"}}}), StartsWith("merged_adapters.weights:"));
  EXPECT_THAT(bad({{"ids", {"a", "b"}}, {"weights", {1}}}), StartsWith("merged_adapters.weights:"));
  EXPECT_THAT(bad({{"ids", {"a"}}, {"weights", {"x"}}}), StartsWith("merged_adapters.weights[0]:"));
  EXPECT_THAT(bad({{"ids", {1}}, {"weights", {1}}}), StartsWith("merged_adapters.ids[0]:"));
  EXPECT_THAT(bad({{"ids", {"a"}}, {"weights", {1}}, {"merge_strategy", "magic"}}),
              HasSubstr("is not one of"));
  EXPECT_THAT(bad({{"ids", {"a"}}, {"weights", {1}}, {"merge_strategy", "ties"}}),
              HasSubstr("FuseAdapters"));
  EXPECT_THAT(bad({{"ids", {"a"}}, {"weights", {1}}, {"density", 2}}),
              StartsWith("merged_adapters.density:"));
  EXPECT_THAT(bad("a"), StartsWith("merged_adapters:"));
  // At most kMaxMixAdapters, the gRPC mix's limit too.
  json ids = json::array(), weights = json::array();
  for (int i = 0; i < kMaxMixAdapters + 1; ++i) {
    ids.push_back(absl::StrCat("a", i));
    weights.push_back(1);
  }
  EXPECT_THAT(bad({{"ids", ids}, {"weights", weights}}),
              StartsWith("merged_adapters.ids: at most 16 adapters"));
}

// Found in review of the openai_request fuzz target (its runs had not reached it): a "type"
// that is not a string in response_format or a content part threw nlohmann's type_error out of
// the decoder instead of a 400 naming the field.
TEST(OpenAiRequestTest, TypeFieldsOfTheWrongTypeAreFieldErrors) {
  EXPECT_THAT(
      Error(Completion({{"model", "m"}, {"prompt", "x"}, {"response_format", {{"type", 1}}}})),
      StartsWith("response_format:"));
  EXPECT_THAT(Error(Chat({{"model", "m"},
                          {"messages",
                           {{{"role", "user"}, {"content", {{{"type", 2}, {"text", "x"}}}}}}}})),
              StartsWith("messages[0].content[0]:"));
  // An empty response_format means text, as before.
  EXPECT_TRUE(
      Completion({{"model", "m"}, {"prompt", "x"}, {"response_format", json::object()}}).ok());
}

}  // namespace
}  // namespace loraserve::server::http
