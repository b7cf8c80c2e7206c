// Added-token matching. The reference uses Aho-Corasick with leftmost-longest semantics; a byte
// trie walked from each position gives the same matches, and added tokens are few.
#include "runtime/tokenizer/added_tokens.h"

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

// Rust's char::is_alphanumeric, approximated: ASCII letters/digits and any non-ASCII
// non-whitespace character. Only single_word tokens consult it.
bool IsWordChar(char32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
  return !IsUnicodeWhitespace(cp);
}

char32_t LastCodePoint(std::string_view s) {
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return DecodeUtf8(s, &start);
}

}  // namespace

absl::StatusOr<int32_t> ReadTokenId(const nlohmann::json& value, std::string_view what) {
  if (value.is_number_unsigned() && value.get<uint64_t>() < static_cast<uint64_t>(kMaxTokenId)) {
    return static_cast<int32_t>(value.get<uint64_t>());
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", std::string(what), " ",
                                                 value.dump().substr(0, 40),
                                                 " is not an integer in [0, ", kMaxTokenId, ")"));
}

absl::StatusOr<AddedTokens> AddedTokens::FromJson(const nlohmann::json& added_tokens) {
  AddedTokens result;
  result.trie_[0].emplace_back();
  result.trie_[1].emplace_back();
  if (added_tokens.is_null()) return result;
  if (!added_tokens.is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: added_tokens must be an array");
  }
  for (const auto& entry : added_tokens) {
    AddedToken token;
    absl::StatusOr<int32_t> id = ReadTokenId(entry.at("id"), "added token id");
    if (!id.ok()) return id.status();
    token.id = *id;
    token.content = entry.at("content").get<std::string>();
    token.single_word = entry.value("single_word", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    token.normalized = entry.value("normalized", false);
    token.special = entry.value("special", false);
    if (token.id < 0 || token.id >= kMaxTokenId) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: added token id ", token.id,
                                                     " is not in [0, ", kMaxTokenId, ")"));
    }
    if (token.content.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: added token ", token.id, " has empty content"));
    }
    result.by_id_[token.id] = result.tokens_.size();
    result.has_normalized_ |= token.normalized;
    std::vector<TrieNode>& trie = result.trie_[token.normalized ? 1 : 0];
    int node = 0;
    for (unsigned char c : token.content) {
      auto it = trie[node].children.find(c);
      if (it == trie[node].children.end()) {
        trie[node].children[c] = static_cast<int>(trie.size());
        node = static_cast<int>(trie.size());
        trie.emplace_back();
      } else {
        node = it->second;
      }
    }
    trie[node].token = static_cast<int>(result.tokens_.size());
    result.tokens_.push_back(std::move(token));
  }
  return result;
}

int AddedTokens::LongestMatch(std::string_view text, size_t pos, bool normalized) const {
  const std::vector<TrieNode>& trie = trie_[normalized ? 1 : 0];
  int node = 0, best = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = trie[node].children.find(static_cast<unsigned char>(text[i]));
    if (it == trie[node].children.end()) break;
    node = it->second;
    if (trie[node].token >= 0) best = trie[node].token;
  }
  return best;
}

void AddedTokens::Split(std::string_view text, bool normalized,
                        std::vector<TextSegment>* out) const {
  const std::vector<TrieNode>& trie = trie_[normalized ? 1 : 0];
  size_t emitted = 0;  // text[0, emitted) has been handed out
  for (size_t pos = 0; pos < text.size();) {
    if (!trie[0].children.contains(static_cast<unsigned char>(text[pos]))) {
      ++pos;
      continue;
    }
    const int index = LongestMatch(text, pos, normalized);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos, stop = pos + token.content.size();
    pos = stop;
    if (token.single_word) {
      const bool space_before = start == 0 || !IsWordChar(LastCodePoint(text.substr(0, start)));
      size_t probe = stop;
      const bool space_after = stop == text.size() || !IsWordChar(DecodeUtf8(text, &probe));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) {
      while (start > emitted) {
        const size_t before = start;
        size_t char_start = start - 1;
        while (char_start > 0 && (static_cast<unsigned char>(text[char_start]) & 0xC0) == 0x80) {
          --char_start;
        }
        size_t probe = char_start;
        if (!IsUnicodeWhitespace(DecodeUtf8(text, &probe))) break;
        start = char_start;
        if (start == before) break;
      }
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t probe = stop;
        if (!IsUnicodeWhitespace(DecodeUtf8(text, &probe))) break;
        stop = probe;
      }
      pos = stop;
    }
    if (emitted < start) out->push_back({text.substr(emitted, start - emitted), -1});
    out->push_back({text.substr(start, stop - start), token.id});
    emitted = stop;
  }
  if (emitted < text.size() || text.empty()) {
    out->push_back({text.substr(emitted), -1});
  }
}

const AddedToken* AddedTokens::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedTokens::FindByContent(std::string_view content) const {
  const int index = LongestMatch(content, 0, false);
  if (index >= 0 && tokens_[index].content == content) return tokens_[index].id;
  const int normalized_index = LongestMatch(content, 0, true);
  if (normalized_index >= 0 && tokens_[normalized_index].content == content) {
    return tokens_[normalized_index].id;
  }
  return std::nullopt;
}

}  // namespace loraserve::tokenizer
