// ParsePeftAdapter: exact read-back, per-module scaling, and one negative test per validation
// rule (each checks the error is InvalidArgument and names the offending tensor or field).
#include "adapters/lora_adapter.h"

#include <cmath>
#include <limits>

#include "adapters/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/adapters/adapter_test_util.h"

namespace loraserve {
namespace {

using ::loraserve::testing::AddModule;
using ::loraserve::testing::LoraConfigJson;
using ::loraserve::testing::ModuleKey;
using ::loraserve::testing::TestFile;
using ::loraserve::testing::TestTensor;
using ::loraserve::testing::TinyBase;
using ::testing::HasSubstr;
using json = nlohmann::json;

absl::StatusOr<LoraAdapter> Parse(const json& overrides, const std::vector<TestTensor>& tensors,
                                  AdapterLimits limits = {}) {
  auto file = TestFile(tensors);
  if (file == nullptr) return absl::InternalError("bad test file");
  return ParsePeftAdapter("test", LoraConfigJson(overrides), *file, TinyBase(), limits);
}

// Both q_proj and v_proj of both layers at rank 4: the adapter the default config describes.
std::vector<TestTensor> QvTensors(int rank = 4, bool dora = false) {
  std::vector<TestTensor> tensors;
  for (int layer = 0; layer < 2; ++layer) {
    AddModule(tensors, TinyBase(), layer, Module::kQ, rank, dora);
    AddModule(tensors, TinyBase(), layer, Module::kV, rank, dora);
  }
  return tensors;
}

void ExpectRejected(const absl::StatusOr<LoraAdapter>& result,
                    const std::vector<std::string>& substrings) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  for (const std::string& s : substrings) {
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(s));
  }
}

TEST(LoraAdapterTest, ReadsValuesBackExactly) {
  const std::vector<TestTensor> tensors = QvTensors();
  auto adapter = Parse({}, tensors);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->id, "test");
  EXPECT_EQ(adapter->num_layers, 2);
  EXPECT_EQ(adapter->max_rank, 4);
  EXPECT_FALSE(adapter->use_dora);
  const ModelConfig base = TinyBase();
  size_t expected_bytes = 0;
  for (const TestTensor& t : tensors) expected_bytes += 4 * t.values.size();
  EXPECT_EQ(adapter->weight_bytes, expected_bytes);
  for (int layer = 0; layer < 2; ++layer) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& module = adapter->modules[layer][m];
      const bool targeted = m == static_cast<int>(Module::kQ) || m == static_cast<int>(Module::kV);
      ASSERT_EQ(module.has_value(), targeted) << layer << " " << kModuleNames[m];
      if (!targeted) continue;
      EXPECT_EQ(module->rank, 4);
      EXPECT_FLOAT_EQ(module->scaling, 16.0f / 4.0f);
      EXPECT_TRUE(module->dora_magnitude.empty());
      const std::string key = ModuleKey(layer, static_cast<Module>(m));
      for (const TestTensor& t : tensors) {
        if (t.name == key + ".lora_A.weight") EXPECT_EQ(module->a, t.values);
        if (t.name == key + ".lora_B.weight") EXPECT_EQ(module->b, t.values);
      }
      EXPECT_EQ(module->a.size(), 4u * base.Dims(static_cast<Module>(m)).in);
    }
  }
}

TEST(LoraAdapterTest, ConvertsBf16) {
  std::vector<TestTensor> tensors = QvTensors();
  for (TestTensor& t : tensors) t.dtype = "BF16";
  auto adapter = Parse({}, tensors);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  const auto& q = *adapter->modules[0][static_cast<int>(Module::kQ)];
  EXPECT_EQ(q.a[5], Bf16ToFloat(FloatToBf16(tensors[0].values[5])));
}

TEST(LoraAdapterTest, RsLoraScalesByAlphaOverSqrtRank) {
  auto adapter = Parse({{"use_rslora", true}}, QvTensors());
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_FLOAT_EQ(adapter->modules[1][static_cast<int>(Module::kV)]->scaling,
                  16.0f / std::sqrt(4.0f));
}

TEST(LoraAdapterTest, RankAndAlphaPatternsApplyPerModule) {
  const ModelConfig base = TinyBase();
  std::vector<TestTensor> tensors;
  AddModule(tensors, base, 0, Module::kQ, 4);
  AddModule(tensors, base, 1, Module::kQ, 4);
  AddModule(tensors, base, 0, Module::kDown, 2);
  AddModule(tensors, base, 1, Module::kDown, 2);
  auto adapter = Parse({{"target_modules", {"q_proj", "down_proj"}},
                        {"rank_pattern", {{"down_proj", 2}}},
                        {"alpha_pattern", {{"layers.1.self_attn.q_proj", 32}}}},
                       tensors);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->max_rank, 4);
  EXPECT_FLOAT_EQ(adapter->modules[0][static_cast<int>(Module::kQ)]->scaling, 16.0f / 4);
  EXPECT_FLOAT_EQ(adapter->modules[1][static_cast<int>(Module::kQ)]->scaling, 32.0f / 4);
  EXPECT_EQ(adapter->modules[0][static_cast<int>(Module::kDown)]->rank, 2);
  EXPECT_FLOAT_EQ(adapter->modules[1][static_cast<int>(Module::kDown)]->scaling, 16.0f / 2);
}

TEST(LoraAdapterTest, DoraMagnitudeIsRead) {
  const std::vector<TestTensor> tensors = QvTensors(4, /*dora=*/true);
  auto adapter = Parse({{"use_dora", true}}, tensors);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_TRUE(adapter->use_dora);
  EXPECT_EQ(adapter->modules[0][static_cast<int>(Module::kQ)]->dora_magnitude, tensors[2].values);
}

TEST(LoraAdapterTest, OlderDoraMagnitudeNameIsAccepted) {
  std::vector<TestTensor> tensors = QvTensors(4, /*dora=*/true);
  for (TestTensor& t : tensors) {
    if (t.name.ends_with("lora_magnitude_vector")) t.name += ".weight";
  }
  EXPECT_TRUE(Parse({{"use_dora", true}}, tensors).ok());
}

TEST(LoraAdapterTest, RegexTargetsAndLayerSubsets) {
  const ModelConfig base = TinyBase();
  std::vector<TestTensor> tensors;
  AddModule(tensors, base, 1, Module::kUp, 4);
  EXPECT_TRUE(Parse({{"target_modules", R"(.*\.mlp\.(up|gate)_proj)"}}, tensors).ok());
  EXPECT_TRUE(Parse({{"target_modules", {"up_proj"}}, {"layers_to_transform", {1}}}, tensors).ok());
  EXPECT_TRUE(Parse({{"target_modules", "all-linear"}}, tensors).ok());
}

TEST(LoraAdapterTest, LoadFromDirectoryRecordsSha256) {
  ::loraserve::testing::TempDir dir;
  const std::string bytes = ::loraserve::testing::SafetensorsBytes(QvTensors());
  ::loraserve::testing::WriteFile(dir.path() + "/adapter_model.safetensors", bytes);
  ::loraserve::testing::WriteFile(dir.path() + "/adapter_config.json", LoraConfigJson());
  auto adapter = LoadPeftAdapter("from-dir", dir.path(), TinyBase(), {});
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->sha256, Sha256Hex(bytes));
  EXPECT_FALSE(LoadPeftAdapter("x", dir.path() + "/missing", TinyBase(), {}).ok());
}

// ---- adapter_config.json rules -------------------------------------------------------------

TEST(LoraAdapterRejects, ConfigNotJson) {
  auto file = TestFile(QvTensors());
  ExpectRejected(ParsePeftAdapter("t", "{nope", *file, TinyBase(), {}), {"adapter_config.json"});
}

TEST(LoraAdapterRejects, NonLoraPeftType) {
  ExpectRejected(Parse({{"peft_type", "IA3"}}, QvTensors()), {"peft_type", "IA3"});
}

TEST(LoraAdapterRejects, BadRank) {
  ExpectRejected(Parse({{"r", 0}}, QvTensors()), {"\"r\""});
  ExpectRejected(Parse({{"r", "8"}}, QvTensors()), {"\"r\""});
}

TEST(LoraAdapterRejects, BadAlpha) {
  ExpectRejected(Parse({{"lora_alpha", "sixteen"}}, QvTensors()), {"lora_alpha"});
}

TEST(LoraAdapterRejects, MissingTargetModules) {
  ExpectRejected(Parse({{"target_modules", nullptr}}, QvTensors()), {"target_modules"});
}

TEST(LoraAdapterRejects, InvalidTargetRegex) {
  ExpectRejected(Parse({{"target_modules", "(q_proj"}}, QvTensors()), {"target_modules"});
}

TEST(LoraAdapterRejects, BadRankPatternValue) {
  ExpectRejected(Parse({{"rank_pattern", {{"q_proj", -1}}}}, QvTensors()),
                 {"rank_pattern", "q_proj"});
  ExpectRejected(Parse({{"alpha_pattern", {{"q_proj", "x"}}}}, QvTensors()),
                 {"alpha_pattern", "q_proj"});
}

TEST(LoraAdapterRejects, BadLayersToTransform) {
  ExpectRejected(Parse({{"layers_to_transform", "0"}}, QvTensors()), {"layers_to_transform"});
  ExpectRejected(Parse({{"layers_to_transform", {-1}}}, QvTensors()), {"layers_to_transform"});
}

TEST(LoraAdapterRejects, UnknownBiasMode) {
  ExpectRejected(Parse({{"bias", "some"}}, QvTensors()), {"bias"});
}

TEST(LoraAdapterRejects, TrainedBiasTensor) {
  std::vector<TestTensor> tensors = QvTensors();
  const std::string name = ModuleKey(0, Module::kQ) + ".bias";
  tensors.push_back({name, "F32", {16}, std::vector<float>(16, 0.5f)});
  ExpectRejected(Parse({{"bias", "all"}}, tensors), {name, "bias=\"all\""});
}

TEST(LoraAdapterRejects, FanInFanOut) {
  ExpectRejected(Parse({{"fan_in_fan_out", true}}, QvTensors()), {"fan_in_fan_out"});
}

TEST(LoraAdapterRejects, ModulesToSaveWithTensors) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors.push_back(
      {"base_model.model.lm_head.weight", "F32", {32, 16}, std::vector<float>(32 * 16, 0.0f)});
  ExpectRejected(Parse({{"modules_to_save", {"lm_head"}}}, tensors),
                 {"base_model.model.lm_head.weight", "modules_to_save", "lm_head"});
}

TEST(LoraAdapterRejects, SemanticOptionsLoraserveCannotHonour) {
  ExpectRejected(Parse({{"use_qalora", true}}, QvTensors()), {"use_qalora"});
  ExpectRejected(Parse({{"lora_bias", true}}, QvTensors()), {"lora_bias"});
  ExpectRejected(Parse({{"layer_replication", {{0, 1}}}}, QvTensors()), {"layer_replication"});
  ExpectRejected(Parse({{"init_lora_weights", "pissa"}}, QvTensors()), {"init_lora_weights"});
  // Unknown options left at a default-like value change nothing and are accepted.
  EXPECT_TRUE(Parse({{"use_qalora", false}, {"exclude_modules", nullptr}}, QvTensors()).ok());
}

// ---- adapter_model.safetensors rules -------------------------------------------------------

TEST(LoraAdapterRejects, NameWithoutPeftPrefix) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[0].name = "model.layers.0.self_attn.q_proj.lora_A.weight";
  ExpectRejected(Parse({}, tensors), {"'model.layers.0.self_attn.q_proj.lora_A.weight'"});
}

TEST(LoraAdapterRejects, LayerBeyondBaseModel) {
  std::vector<TestTensor> tensors = QvTensors();
  const ModelConfig base = TinyBase();
  AddModule(tensors, base, 0, Module::kQ, 4);  // then renamed to layer 2
  tensors[tensors.size() - 2].name = ModuleKey(2, Module::kQ) + ".lora_A.weight";
  tensors[tensors.size() - 1].name = ModuleKey(2, Module::kQ) + ".lora_B.weight";
  ExpectRejected(Parse({}, tensors), {"layers.2.self_attn.q_proj", "different base model"});
}

TEST(LoraAdapterRejects, UnknownModule) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors.push_back({"base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight",
                     "F32",
                     {4, 16},
                     std::vector<float>(64, 0.0f)});
  ExpectRejected(Parse({}, tensors), {"qkv_proj.lora_A.weight", "not a linear module"});
}

TEST(LoraAdapterRejects, WrongParentForModule) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[0].name = "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight";
  ExpectRejected(Parse({}, tensors), {"mlp.q_proj.lora_A.weight", "self_attn"});
}

TEST(LoraAdapterRejects, AShapeDoesNotMatchBase) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[0].shape = {4, 8};  // in_features 8, base has 16
  tensors[0].values.resize(32);
  ExpectRejected(Parse({}, tensors), {"layers.0.self_attn.q_proj.lora_A.weight", "[4, 8]",
                                      "[4, 16]", "different base model"});
}

TEST(LoraAdapterRejects, BShapeDoesNotMatchBase) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[3].shape = {16, 4};  // v_proj out is 8
  tensors[3].values.resize(64);
  ExpectRejected(Parse({}, tensors), {"layers.0.self_attn.v_proj.lora_B.weight", "[8, 4]"});
}

TEST(LoraAdapterRejects, RankDisagreesWithRankPattern) {
  ExpectRejected(Parse({{"rank_pattern", {{"v_proj", 2}}}}, QvTensors()),
                 {"v_proj.lora_A.weight", "r=2", "rank_pattern"});
}

TEST(LoraAdapterRejects, MissingLoraB) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors.erase(tensors.begin() + 1);  // layer 0 q_proj lora_B
  ExpectRejected(Parse({}, tensors), {"layers.0.self_attn.q_proj.lora_B.weight"});
}

TEST(LoraAdapterRejects, MissingLoraA) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors.erase(tensors.begin());
  ExpectRejected(Parse({}, tensors), {"layers.0.self_attn.q_proj.lora_A.weight"});
}

TEST(LoraAdapterRejects, MagnitudeWrongLength) {
  std::vector<TestTensor> tensors = QvTensors(4, /*dora=*/true);
  tensors[2].shape = {8};
  tensors[2].values.resize(8);
  ExpectRejected(Parse({{"use_dora", true}}, tensors),
                 {"layers.0.self_attn.q_proj.lora_magnitude_vector", "[16]"});
}

TEST(LoraAdapterRejects, DoraWithoutMagnitude) {
  ExpectRejected(Parse({{"use_dora", true}}, QvTensors()),
                 {"use_dora", "layers.0.self_attn.q_proj.lora_magnitude_vector"});
}

TEST(LoraAdapterRejects, MagnitudeWithoutDora) {
  ExpectRejected(Parse({}, QvTensors(4, /*dora=*/true)),
                 {"lora_magnitude_vector", "use_dora=false"});
}

TEST(LoraAdapterRejects, DuplicateMagnitude) {
  std::vector<TestTensor> tensors = QvTensors(4, /*dora=*/true);
  TestTensor copy = tensors[2];
  copy.name += ".weight";
  tensors.push_back(copy);
  ExpectRejected(Parse({{"use_dora", true}}, tensors), {"duplicates"});
}

TEST(LoraAdapterRejects, NonFloatDtype) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[1].dtype = "I32";
  ExpectRejected(Parse({}, tensors), {"q_proj.lora_B.weight", "I32"});
}

TEST(LoraAdapterRejects, RankAboveLimit) {
  AdapterLimits limits;
  limits.max_rank = 2;
  ExpectRejected(Parse({}, QvTensors(), limits), {"q_proj.lora_A.weight", "rank 4", "maximum"});
}

TEST(LoraAdapterRejects, BytesAboveLimit) {
  AdapterLimits limits;
  limits.max_bytes = 1024;
  ExpectRejected(Parse({}, QvTensors(), limits), {"limit"});
}

TEST(LoraAdapterRejects, NaN) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[5].values[3] = std::numeric_limits<float>::quiet_NaN();
  ExpectRejected(Parse({}, tensors), {"'" + tensors[5].name + "'", "non-finite", "element 3"});
}

TEST(LoraAdapterRejects, Inf) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors[0].values[0] = -std::numeric_limits<float>::infinity();
  ExpectRejected(Parse({}, tensors), {tensors[0].name, "non-finite"});
}

TEST(LoraAdapterRejects, ModuleNotInTargetModules) {
  std::vector<TestTensor> tensors = QvTensors();
  AddModule(tensors, TinyBase(), 0, Module::kK, 4);
  ExpectRejected(Parse({}, tensors), {"k_proj.lora_A.weight", "target_modules"});
}

TEST(LoraAdapterRejects, LayerNotInLayersToTransform) {
  ExpectRejected(Parse({{"layers_to_transform", {0}}}, QvTensors()),
                 {"layers.1.self_attn.q_proj.lora_A.weight", "layers_to_transform"});
}

TEST(LoraAdapterRejects, EmbeddingLora) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors.push_back({"base_model.model.model.embed_tokens.lora_embedding_A",
                     "F32",
                     {4, 32},
                     std::vector<float>(128, 0.0f)});
  ExpectRejected(Parse({}, tensors), {"embed_tokens.lora_embedding_A", "embeddings"});
}

TEST(LoraAdapterRejects, LmHeadLora) {
  std::vector<TestTensor> tensors = QvTensors();
  tensors.push_back(
      {"base_model.model.lm_head.lora_A.weight", "F32", {4, 16}, std::vector<float>(64, 0.0f)});
  ExpectRejected(Parse({}, tensors), {"lm_head.lora_A.weight", "lm_head"});
}

TEST(LoraAdapterRejects, NoLoraTensors) { ExpectRejected(Parse({}, {}), {"no LoRA tensors"}); }

}  // namespace
}  // namespace loraserve
