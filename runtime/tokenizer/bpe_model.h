// The BPE model of tokenizer.json ("model": {"type": "BPE"}): vocabulary, ranked merges,
// byte fallback and unk handling, with a per-word cache because natural text repeats words.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

// Hash that lets maps keyed by std::string be queried with a string_view without copying.
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <typename V>
using StringMap = std::unordered_map<std::string, V, StringViewHash, std::equal_to<>>;

class BpeModel {
 public:
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized word. Characters that are neither in the vocabulary
  // nor coverable by byte fallback become unk, or are dropped when the model has no unk token.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Null when `id` is not in the model vocabulary.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;
  // Splits a word into initial symbols: characters, byte-fallback tokens, fused unks.
  void InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const;

  StringMap<int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // empty strings mark holes in the id space
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_fallback_ids_[256];  // -1 where <0xXX> is missing from the vocabulary

  static constexpr size_t kCacheCapacity = 200000;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable std::shared_mutex cache_mutex_;  // guards cache_
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace loraserve::tokenizer
