// PeftConfig target matching and per-module rank/alpha. Expected values were produced by
// peft 0.13.2 itself (get_peft_model on a 2-layer Llama, listing each LoraLayer's r and scaling).
#include "adapters/peft_config.h"

#include <chrono>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace loraserve {
namespace {

using json = nlohmann::ordered_json;

PeftConfig ParseOk(json fields) {
  fields["peft_type"] = "LORA";
  if (!fields.contains("r")) fields["r"] = 4;
  if (!fields.contains("lora_alpha")) fields["lora_alpha"] = 8;
  auto config = ParsePeftConfig(fields.dump(), "adapter_config.json");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : PeftConfig{};
}

std::vector<std::string> Targeted(const PeftConfig& config) {
  std::vector<std::string> out;
  for (int layer = 0; layer < 2; ++layer) {
    for (const char* parent_module :
         {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      const std::string key = "model.layers." + std::to_string(layer) + "." + parent_module;
      if (config.TargetsModule(key)) out.push_back(key);
    }
  }
  return out;
}

TEST(PeftConfigTest, RegexTargetIsFullMatch) {
  EXPECT_THAT(
      Targeted(ParseOk({{"target_modules", R"(.*\.(q|v)_proj)"}})),
      ::testing::ElementsAre("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                             "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"));
  // A bare name is not a full match of a module path.
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", "q_proj"}})), ::testing::IsEmpty());
}

TEST(PeftConfigTest, ListEntriesMatchWholeNameComponents) {
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", {"proj", "_proj"}}})), ::testing::IsEmpty());
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", {"mlp.up_proj"}}})),
              ::testing::ElementsAre("model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"));
}

TEST(PeftConfigTest, LayersToTransform) {
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", {"q_proj"}}, {"layers_to_transform", {1}}})),
              ::testing::ElementsAre("model.layers.1.self_attn.q_proj"));
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", {"down_proj"}},
                                {"layers_to_transform", 0},
                                {"layers_pattern", "layers"}})),
              ::testing::ElementsAre("model.layers.0.mlp.down_proj"));
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", {"down_proj"}},
                                {"layers_to_transform", 0},
                                {"layers_pattern", "blocks"}})),
              ::testing::IsEmpty());
}

TEST(PeftConfigTest, ExactKeyBypassesLayerFilter) {
  EXPECT_THAT(
      Targeted(ParseOk({{"target_modules", {"model.layers.0.self_attn.q_proj", "v_proj"}},
                        {"layers_to_transform", {1}}})),
      ::testing::ElementsAre("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"));
}

TEST(PeftConfigTest, AllLinearTargetsEveryModule) {
  EXPECT_EQ(Targeted(ParseOk({{"target_modules", "all-linear"}})).size(), 14u);
}

TEST(PeftConfigTest, AlphaPatternPerModule) {
  const PeftConfig config =
      ParseOk({{"target_modules", {"q_proj", "o_proj"}},
               {"alpha_pattern", {{"layers.1.self_attn.q_proj", 32}, {"o_proj", 4}}}});
  auto scaling = [&](const std::string& key) { return config.ScalingFor(config.HyperFor(key)); };
  EXPECT_DOUBLE_EQ(scaling("model.layers.0.self_attn.q_proj"), 2.0);
  EXPECT_DOUBLE_EQ(scaling("model.layers.0.self_attn.o_proj"), 1.0);
  EXPECT_DOUBLE_EQ(scaling("model.layers.1.self_attn.q_proj"), 8.0);
  EXPECT_DOUBLE_EQ(scaling("model.layers.1.self_attn.o_proj"), 1.0);
}

// PEFT picks the first matching key over rank_pattern then alpha_pattern and looks that key up
// in both maps, so a broader rank_pattern key hides a narrower alpha_pattern key.
TEST(PeftConfigTest, FirstMatchingPatternKeyWinsAsInPeft) {
  const PeftConfig config = ParseOk({{"target_modules", {"q_proj"}},
                                     {"rank_pattern", {{"q_proj", 2}}},
                                     {"alpha_pattern", {{"layers.1.self_attn.q_proj", 32}}}});
  for (const char* key : {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}) {
    const PeftModuleHyper hyper = config.HyperFor(key);
    EXPECT_EQ(hyper.rank, 2) << key;
    EXPECT_DOUBLE_EQ(config.ScalingFor(hyper), 4.0) << key;
  }
}

TEST(PeftConfigTest, RsLoraScaling) {
  const PeftConfig config =
      ParseOk({{"target_modules", {"q_proj"}}, {"r", 16}, {"lora_alpha", 8}, {"use_rslora", true}});
  EXPECT_DOUBLE_EQ(config.ScalingFor(config.HyperFor("model.layers.0.self_attn.q_proj")), 2.0);
}

TEST(PeftConfigTest, KeepsDescriptiveFields) {
  const PeftConfig config = ParseOk({{"target_modules", {"q_proj"}},
                                     {"task_type", "CAUSAL_LM"},
                                     {"base_model_name_or_path", "meta-llama/Llama-3.2-1B"},
                                     {"use_dora", true},
                                     {"bias", "none"}});
  EXPECT_EQ(config.task_type, "CAUSAL_LM");
  EXPECT_EQ(config.base_model_name_or_path, "meta-llama/Llama-3.2-1B");
  EXPECT_TRUE(config.use_dora);
}

// Found by the peft_config fuzzer: a back-reference or repetition count of 19+ digits made
// libstdc++'s regex compiler overflow a signed long (undefined behaviour).
TEST(PeftConfigTest, HugeRegexNumbersAreRefused) {
  for (const std::string pattern : {R"(.*\.(self_attn|mlp)\8888888888888888888888)",
                                    R"(.*_proj{1,99999999999999999999})", R"(q{2000000})"}) {
    auto config = ParsePeftConfig(json({{"peft_type", "LORA"}, {"target_modules", pattern}}).dump(),
                                  "adapter_config.json");
    ASSERT_FALSE(config.ok()) << pattern;
    EXPECT_THAT(std::string(config.status().message()), ::testing::HasSubstr("target_modules"));
  }
  auto rank = ParsePeftConfig(json({{"peft_type", "LORA"},
                                    {"target_modules", {"q_proj"}},
                                    {"rank_pattern", {{"q{99999999999999999999}", 2}}}})
                                  .dump(),
                              "c");
  EXPECT_FALSE(rank.ok());
  // Ordinary counts still work.
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", R"(model\.layers\.\d{1,3}\.mlp\.up_proj)"}})),
              ::testing::ElementsAre("model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj"));
}

// Found in review of the fuzz target: a layers_pattern with its own group moved the layer index
// out of group 1, and std::stoi threw on the group's text (an exception out of an upload).
TEST(PeftConfigTest, LayersPatternWithAGroupIsRefused) {
  for (const char* pattern : {"(layers)", "(x)?layers"}) {
    auto config = ParsePeftConfig(json({{"peft_type", "LORA"},
                                        {"target_modules", {"q_proj"}},
                                        {"layers_to_transform", {0}},
                                        {"layers_pattern", pattern}})
                                      .dump(),
                                  "adapter_config.json");
    ASSERT_FALSE(config.ok()) << pattern;
    EXPECT_THAT(std::string(config.status().message()), ::testing::HasSubstr("(?:"));
  }
  EXPECT_THAT(Targeted(ParseOk({{"target_modules", {"q_proj"}},
                                {"layers_to_transform", {1}},
                                {"layers_pattern", "(?:layers|blocks)"}})),
              ::testing::ElementsAre("model.layers.1.self_attn.q_proj"));
}

// Found by the peft_config fuzzer: nested quantifiers and alternations in an uploaded
// target_modules regex backtracked exponentially (minutes per module key) in std::regex's
// depth-first executor; module patterns now run on the breadth-first one.
TEST(PeftConfigTest, PathologicalRegexesMatchInLinearTime) {
  const auto start = std::chrono::steady_clock::now();
  for (const std::string pattern :
       {R"(.*\.(s2***************C|||||||'|||||||||.|)|||||||||||||||||||||||||||||||||||ro*)",
        "(((.*)*)*)*x", "(a|a?)+(a|a?)+(a|a?)+(a|a?)+b"}) {
    const PeftConfig config = ParseOk({{"target_modules", pattern}});
    (void)Targeted(config);
    EXPECT_FALSE(config.TargetsModule("model.layers.0.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // Back-references would need the backtracking executor: refused, like other unsupported syntax.
  auto backref = ParsePeftConfig(
      json({{"peft_type", "LORA"}, {"target_modules", R"(.*\.(q)_proj\1)"}}).dump(), "c");
  ASSERT_FALSE(backref.ok());
  EXPECT_THAT(std::string(backref.status().message()), ::testing::HasSubstr("back-references"));
  auto longest = ParsePeftConfig(
      json({{"peft_type", "LORA"}, {"target_modules", std::string(2000, 'a')}}).dump(), "c");
  EXPECT_FALSE(longest.ok());
}

}  // namespace
}  // namespace loraserve
