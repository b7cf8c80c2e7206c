// config.json parsing: defaults as in transformers, clear errors naming the missing field.
#include "formats/model_config.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace loraserve {
namespace {

constexpr const char* kLlama = R"({"model_type":"llama","vocab_size":100,"hidden_size":64,
  "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
  "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
  "original_max_position_embeddings":8192},"eos_token_id":[1,2]})";

TEST(ModelConfig, ParsesLlamaWithDefaults) {
  auto c = ModelConfig::FromJson(kLlama, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->kv_dim(), 32);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->kind, RopeScaling::Kind::kLlama3);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{1, 2}));
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->Dims(Module::kDown).in, 128);
  EXPECT_EQ(c->Dims(Module::kK).out, 32);
}

TEST(ModelConfig, Qwen2HasQkvBiasOnly) {
  auto c = ModelConfig::FromJson(R"({"model_type":"qwen2","vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2})", "c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->HasBias(Module::kQ));
  EXPECT_FALSE(c->HasBias(Module::kO));
  EXPECT_EQ(c->num_kv_heads, 2);
}

TEST(ModelConfig, MissingFieldIsNamed) {
  auto c = ModelConfig::FromJson(R"({"model_type":"llama","vocab_size":10,"hidden_size":8,
    "num_hidden_layers":1,"num_attention_heads":2})", "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find("\"intermediate_size\""), std::string::npos);
  EXPECT_NE(std::string(c.status().message()).find("config.json"), std::string::npos);
}

TEST(ModelConfig, RejectsUnsupportedArchitectureAndRope) {
  EXPECT_FALSE(ModelConfig::FromJson(R"({"model_type":"gpt2"})", "c").ok());
  auto yarn = ModelConfig::FromJson(R"({"model_type":"llama","vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
    "rope_scaling":{"rope_type":"yarn","factor":2.0}})", "c");
  ASSERT_FALSE(yarn.ok());
  EXPECT_NE(std::string(yarn.status().message()).find("yarn"), std::string::npos);
  EXPECT_FALSE(ModelConfig::FromJson("not json", "c").ok());
  EXPECT_FALSE(ModelConfig::FromJson(R"({"model_type":"llama","vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":3,
    "num_key_value_heads":2})", "c").ok());
}

// Found by the model_config fuzzer: a field of the wrong type threw nlohmann's type_error out of
// FromJson instead of returning an error.
TEST(ModelConfig, WrongTypesAreErrorsNamingTheField) {
  const std::string base = R"("vocab_size":10,"hidden_size":8,"intermediate_size":16,
    "num_hidden_layers":1,"num_attention_heads":2)";
  for (const auto& [extra, field] : std::vector<std::pair<std::string, std::string>>{
           {R"("model_type":12)", "model_type"},
           {R"("model_type":"llama","tie_word_embeddings":"yes")", "tie_word_embeddings"},
           {R"("model_type":"llama","attention_bias":1)", "attention_bias"},
           {R"("model_type":"llama","mlp_bias":[])", "mlp_bias"},
           {R"("model_type":"llama","rope_scaling":{"rope_type":3,"factor":2})", "rope_type"},
           {R"("model_type":"llama","rope_scaling":{"type":{},"factor":2})", "type"}}) {
    auto c = ModelConfig::FromJson("{" + base + "," + extra + "}", "config.json");
    ASSERT_FALSE(c.ok()) << extra;
    EXPECT_NE(std::string(c.status().message()).find("\"" + field + "\""), std::string::npos)
        << c.status();
  }
  // null means the default, as transformers reads it.
  auto c = ModelConfig::FromJson(
      "{" + base + R"(,"model_type":"llama","tie_word_embeddings":null,"mlp_bias":null})", "c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->tie_word_embeddings);
}

// Found in review of the fuzz target: dimensions beyond int truncated (2^32 heads became 0 and
// divided by zero), and a hidden size below the head count gave head_dim 0.
TEST(ModelConfig, DimensionsThatDoNotFitAreErrors) {
  auto parse = [](const std::string& heads, const std::string& hidden, const std::string& extra) {
    return ModelConfig::FromJson(R"({"model_type":"llama","vocab_size":10,"hidden_size":)" +
                                     hidden + R"(,"intermediate_size":16,"num_hidden_layers":1,)" +
                                     R"("num_attention_heads":)" + heads + extra + "}",
                                 "c");
  };
  EXPECT_FALSE(parse("4294967296", "8", "").ok());
  EXPECT_FALSE(parse("2", "8", R"(,"num_key_value_heads":4294967296)").ok());
  EXPECT_FALSE(parse("2", "18446744073709551615", "").ok());
  auto zero = parse("4", "2", "");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(std::string(zero.status().message()).find("head_dim"), std::string::npos);
  EXPECT_FALSE(parse("65536", "65536", R"(,"head_dim":65536)").ok());
}

}  // namespace
}  // namespace loraserve
