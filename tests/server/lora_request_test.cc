// vLLM's LoRA route bodies and the resolver's adapter_config.json check, decoded without a
// server: vLLM's 400s and their texts, and configs that are not ours to load.
#include "server/http/lora_request.h"

#include <string>
#include <variant>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loraserve::server::http {
namespace {

using ::testing::HasSubstr;

HttpError LoadError(const std::string& body) {
  auto decoded = DecodeLoadLoraBody(body);
  EXPECT_TRUE(std::holds_alternative<HttpError>(decoded)) << body;
  return std::holds_alternative<HttpError>(decoded) ? std::get<HttpError>(decoded) : HttpError{};
}

TEST(LoraRequestTest, LoadBody) {
  auto ok = DecodeLoadLoraBody(R"({"lora_name": "kjv", "lora_path": "/a/kjv"})");
  ASSERT_TRUE(std::holds_alternative<LoadLoraBody>(ok));
  EXPECT_EQ(std::get<LoadLoraBody>(ok).name, "kjv");
  EXPECT_EQ(std::get<LoadLoraBody>(ok).path, "/a/kjv");
  EXPECT_FALSE(std::get<LoadLoraBody>(ok).in_place);
  auto in_place =
      DecodeLoadLoraBody(R"({"lora_name": "k", "lora_path": "/p", "load_inplace": true})");
  ASSERT_TRUE(std::holds_alternative<LoadLoraBody>(in_place));
  EXPECT_TRUE(std::get<LoadLoraBody>(in_place).in_place);

  EXPECT_EQ(LoadError("[1]").type, "Bad Request");
  EXPECT_EQ(LoadError("{").status, 400);
  EXPECT_THAT(LoadError(R"({"lora_name": 1, "lora_path": "/p"})").message,
              HasSubstr("lora_name: must be a string"));
  const HttpError missing = LoadError(R"({"lora_name": "k", "lora_path": null})");
  EXPECT_EQ(missing.type, "InvalidUserInput");
  EXPECT_EQ(missing.message, "Both 'lora_name' and 'lora_path' must be provided.");
  EXPECT_THAT(LoadError(R"({"lora_name": "k", "lora_path": "/p", "load_inplace": "yes"})").message,
              HasSubstr("load_inplace"));
}

TEST(LoraRequestTest, UnloadBody) {
  auto ok = DecodeUnloadLoraBody(R"({"lora_name": "kjv"})");
  ASSERT_TRUE(std::holds_alternative<std::string>(ok));
  EXPECT_EQ(std::get<std::string>(ok), "kjv");
  for (const char* body : {"", "null", R"({"lora_name": 3})", R"({"lora_name": ""})", "{}"}) {
    auto bad = DecodeUnloadLoraBody(body);
    ASSERT_TRUE(std::holds_alternative<HttpError>(bad)) << body;
    EXPECT_EQ(std::get<HttpError>(bad).status, 400) << body;
  }
}

TEST(LoraRequestTest, ResolverTakesLorasForThisBaseOnly) {
  const std::vector<std::string> names = {"smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"};
  EXPECT_TRUE(IsResolvableLoraConfig(
      R"({"peft_type": "LORA", "base_model_name_or_path": "smollm2"})", names));
  EXPECT_FALSE(IsResolvableLoraConfig(
      R"({"peft_type": "LORA", "base_model_name_or_path": "llama"})", names));
  EXPECT_FALSE(IsResolvableLoraConfig(
      R"({"peft_type": "IA3", "base_model_name_or_path": "smollm2"})", names));
  EXPECT_FALSE(IsResolvableLoraConfig("not json", names));
}

// Found by the lora_request fuzzer: a peft_type or base_model_name_or_path that is not a string
// threw nlohmann's type_error out of the resolver (an HTTP request for an unknown model).
TEST(LoraRequestTest, ResolverIgnoresFieldsOfTheWrongType) {
  const std::vector<std::string> names = {"smollm2"};
  EXPECT_FALSE(IsResolvableLoraConfig(R"({"peft_type": 6, "lora_pBath": null})", names));
  EXPECT_FALSE(IsResolvableLoraConfig(
      R"({"peft_type": "LORA", "base_model_name_or_path": ["smollm2"]})", names));
}

}  // namespace
}  // namespace loraserve::server::http
