// Added tokens of tokenizer.json ("added_tokens"): strings such as <|eot_id|> that are matched
// in the raw text before normalization and BPE, so they always become their own id.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace loraserve::tokenizer {

// Token ids (model vocabulary and added tokens) must be below this: tables are indexed by id, and
// the largest real vocabularies hold about 2^18 tokens.
inline constexpr int32_t kMaxTokenId = 1 << 22;

// A token id read from tokenizer.json: a JSON integer in [0, kMaxTokenId). nlohmann's
// get<int32_t>() converts a float or a wider integer without a check (undefined behaviour for
// 9.2e21), so every id goes through here. `what` names the id in the error.
absl::StatusOr<int32_t> ReadTokenId(const nlohmann::json& value, std::string_view what);

struct AddedToken {
  int32_t id;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A span of input text: either an added token (id >= 0) or plain text (id == -1).
struct TextSegment {
  std::string_view text;
  int32_t id;
};

class AddedTokens {
 public:
  static absl::StatusOr<AddedTokens> FromJson(const nlohmann::json& added_tokens);

  // Splits `text` on the added tokens whose `normalized` flag equals `normalized`, leftmost
  // longest first, honouring single_word/lstrip/rstrip. Segments point into `text`.
  void Split(std::string_view text, bool normalized, std::vector<TextSegment>* out) const;
  bool has_normalized_tokens() const { return has_normalized_; }

  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> FindByContent(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  struct TrieNode {
    std::unordered_map<unsigned char, int> children;
    int token = -1;  // index into tokens_
  };
  // Index into tokens_ of the longest token (of the given kind) starting at text[pos], or -1.
  int LongestMatch(std::string_view text, size_t pos, bool normalized) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::vector<TrieNode> trie_[2];  // [0]: non-normalized tokens, [1]: normalized ones
  bool has_normalized_ = false;
};

}  // namespace loraserve::tokenizer
