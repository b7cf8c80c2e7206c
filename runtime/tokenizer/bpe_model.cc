// BPE as the reference implements it: start from characters, repeatedly apply the lowest-ranked
// merge (leftmost on ties) using a heap over a linked list of symbols, O(n log n) per word.
#include "runtime/tokenizer/bpe_model.h"

#include <cstdio>
#include <mutex>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/added_tokens.h"
#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
         static_cast<uint32_t>(right);
}

absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const nlohmann::json& merge,
                                                                size_t index) {
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    return std::make_pair(merge[0].get<std::string>(), merge[1].get<std::string>());
  }
  if (merge.is_string()) {
    const std::string line = merge.get<std::string>();
    const size_t space = line.find(' ');
    if (space != std::string::npos && line.find(' ', space + 1) == std::string::npos) {
      return std::make_pair(line.substr(0, space), line.substr(space + 1));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", index, " (",
                                                 merge.dump(),
                                                 ") is neither \"a b\" nor [\"a\", \"b\"]"));
}

std::string OptionalString(const nlohmann::json& model, const char* key) {
  auto it = model.find(key);
  return it == model.end() || it->is_null() ? std::string() : it->get<std::string>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: model type '", type,
                                                 "' is not supported (only BPE)"));
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      model["dropout"].get<double>() != 0.0) {
    return absl::UnimplementedError("tokenizer.json: BPE dropout is not supported at inference");
  }
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  const nlohmann::json& vocab = model.at("vocab");
  if (!vocab.is_object()) return absl::InvalidArgumentError("tokenizer.json: model.vocab must be an object");
  bpe->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    // id_to_token_ is indexed by id, so a stray huge id would allocate gigabytes.
    absl::StatusOr<int32_t> read = ReadTokenId(it.value(), absl::StrCat("token ", it.key(), ": id"));
    if (!read.ok()) return read.status();
    const int32_t id = *read;
    bpe->vocab_.emplace(it.key(), id);
    if (static_cast<size_t>(id) >= bpe->id_to_token_.size()) bpe->id_to_token_.resize(id + 1);
    bpe->id_to_token_[id] = it.key();
  }
  bpe->continuing_subword_prefix_ = OptionalString(model, "continuing_subword_prefix");
  bpe->end_of_word_suffix_ = OptionalString(model, "end_of_word_suffix");
  bpe->fuse_unk_ = model.value("fuse_unk", false);
  bpe->byte_fallback_ = model.value("byte_fallback", false);
  bpe->ignore_merges_ = model.value("ignore_merges", false);
  const std::string unk = OptionalString(model, "unk_token");
  if (!unk.empty()) {
    bpe->unk_id_ = bpe->TokenToId(unk);
    if (!bpe->unk_id_) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: unk_token '", unk, "' is not in the vocabulary"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    bpe->byte_fallback_ids_[b] = bpe->TokenToId(name).value_or(-1);
  }

  const nlohmann::json& merges = model.at("merges");
  bpe->merges_.reserve(merges.size());
  const size_t prefix_len = bpe->continuing_subword_prefix_.size();
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    absl::StatusOr<std::pair<std::string, std::string>> merge = ParseMerge(merges[rank], rank);
    if (!merge.ok()) return merge.status();
    const auto& [left, right] = *merge;
    const std::optional<int32_t> left_id = bpe->TokenToId(left);
    const std::optional<int32_t> right_id = bpe->TokenToId(right);
    if (!left_id || !right_id) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", rank, " '", left,
                                                     " ", right, "' uses a token missing from the vocabulary"));
    }
    const std::string merged =
        left + (right.size() >= prefix_len ? right.substr(prefix_len) : right);
    const std::optional<int32_t> merged_id = bpe->TokenToId(merged);
    if (!merged_id) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", rank, " produces '",
                                                     merged, "', which is not in the vocabulary"));
    }
    bpe->merges_.emplace(PairKey(*left_id, *right_id),
                         Merge{static_cast<int32_t>(rank), *merged_id});
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  const std::string& token = id_to_token_[id];
  if (token.empty() && !vocab_.contains(token)) return nullptr;
  return &token;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (std::optional<int32_t> id = TokenToId(word)) {
      ids->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) {
      cache_.emplace(std::string(word), std::vector<int32_t>(ids->begin() + start, ids->end()));
    }
  }
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const {
  std::optional<int32_t> pending_unk;  // fused unks are emitted when a known symbol follows
  std::string affixed;
  for (size_t pos = 0; pos < word.size();) {
    const size_t begin = pos;
    const int len = Utf8SequenceLength(word, pos);
    pos += len == 0 ? 1 : len;
    std::string_view ch = word.substr(begin, pos - begin);
    const bool first = begin == 0, last = pos == word.size();
    if ((!first && !continuing_subword_prefix_.empty()) ||
        (last && !end_of_word_suffix_.empty())) {
      affixed.clear();
      if (!first) affixed += continuing_subword_prefix_;
      affixed += ch;
      if (last) affixed += end_of_word_suffix_;
      ch = affixed;
    }
    if (std::optional<int32_t> id = TokenToId(ch)) {
      if (pending_unk) symbols->push_back(*std::exchange(pending_unk, std::nullopt));
      symbols->push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (unsigned char b : ch) all_bytes &= byte_fallback_ids_[b] >= 0;
      if (all_bytes) {
        // The reference does not flush a pending unk here; keep its order.
        for (unsigned char b : ch) symbols->push_back(byte_fallback_ids_[b]);
        continue;
      }
    }
    if (!unk_id_) continue;
    if (pending_unk && !fuse_unk_) symbols->push_back(*pending_unk);
    pending_unk = unk_id_;
  }
  if (pending_unk) symbols->push_back(*pending_unk);
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };

  std::vector<int32_t> initial;
  InitialSymbols(word, &initial);
  const int n = static_cast<int>(initial.size());
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) symbols[i] = {initial[i], i - 1, i + 1 < n ? i + 1 : -1, true};

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push_pair = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) heap.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    // Stale entry: one side has merged with something else since it was queued.
    auto it = merges_.find(PairKey(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int i = 0; i >= 0 && i < n; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace loraserve::tokenizer
