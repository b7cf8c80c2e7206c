// Loads the real tokenizers from ../shared/tokenizers (test data) for the tokenizer tests,
// failing loudly when the folder is missing instead of skipping.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "runtime/tokenizer/tokenizer.h"

namespace loraserve {

inline std::filesystem::path TokenizersDir() {
  if (const char* env = std::getenv("LORASERVE_TOKENIZERS")) return env;
  return std::filesystem::path(LORASERVE_SOURCE_DIR).parent_path() / "shared" / "tokenizers";
}

// Returns null after recording a fatal-looking failure when the test data is absent.
inline std::unique_ptr<Tokenizer> LoadRealTokenizer(const std::string& name) {
  const std::filesystem::path dir = TokenizersDir() / name;
  if (!std::filesystem::exists(dir / "tokenizer.json")) {
    ADD_FAILURE() << "tokenizer test data missing: " << (dir / "tokenizer.json")
                  << " not found; set LORASERVE_TOKENIZERS to a folder with llama2/, llama3/, qwen3/";
    return nullptr;
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(dir.string());
  if (!tokenizer.ok()) {
    ADD_FAILURE() << tokenizer.status();
    return nullptr;
  }
  return *std::move(tokenizer);
}

}  // namespace loraserve
