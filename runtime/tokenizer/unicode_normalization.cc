// Canonical decomposition, canonical ordering and canonical composition (UAX #15), built once
// from the generated tables into hash maps plus a BMP bitmap for the "nothing to do" check.
#include "runtime/tokenizer/unicode_normalization.h"

#include <algorithm>
#include <bitset>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/tokenizer/unicode_data.h"
#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
              kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<char32_t, std::pair<char32_t, char32_t>> decomposition;
  std::unordered_map<uint64_t, char32_t> composition;
  std::unordered_map<char32_t, uint8_t> combining_class;
  // BMP code points that may change the text under NFD (decomposable or non-starter) and under
  // NFC (non-starter, able to combine with a preceding character, or never kept composed);
  // text without such code points is already normalized.
  std::bitset<0x10000> nfd_unstable;
  std::bitset<0x10000> nfc_unstable;

  Tables() {
    using namespace unicode_data;
    for (size_t i = 0; i + 2 < kCombiningClassRangesSize; i += 3) {
      for (char32_t cp = kCombiningClassRanges[i]; cp <= kCombiningClassRanges[i + 1]; ++cp) {
        combining_class[cp] = static_cast<uint8_t>(kCombiningClassRanges[i + 2]);
        if (cp < 0x10000) {
          nfd_unstable.set(cp);
          nfc_unstable.set(cp);
        }
      }
    }
    std::vector<char32_t> excluded(kCompositionExclusions,
                                   kCompositionExclusions + kCompositionExclusionsSize);
    for (size_t i = 0; i + 2 < kDecompositionsSize; i += 3) {
      const char32_t cp = kDecompositions[i], first = kDecompositions[i + 1],
                     second = kDecompositions[i + 2];
      decomposition[cp] = {first, second};
      if (cp < 0x10000) nfd_unstable.set(cp);
      if (second != 0 && !std::binary_search(excluded.begin(), excluded.end(), cp)) {
        composition[(uint64_t{first} << 32) | second] = cp;
        if (second < 0x10000) nfc_unstable.set(second);
      } else if (cp < 0x10000) {
        nfc_unstable.set(cp);  // singleton or excluded: NFC replaces it
      }
    }
    for (char32_t cp = kSBase; cp < kSBase + kSCount; ++cp) nfd_unstable.set(cp);
    for (char32_t cp = kVBase; cp < kVBase + kVCount; ++cp) nfc_unstable.set(cp);
    for (char32_t cp = kTBase; cp < kTBase + kTCount; ++cp) nfc_unstable.set(cp);
  }

  uint8_t CombiningClass(char32_t cp) const {
    auto it = combining_class.find(cp);
    return it == combining_class.end() ? 0 : it->second;
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

// `skip_below` is a lead byte below which every code point is stable for the form (0x80 for
// NFD; 0xCC, i.e. below U+0300, for NFC).
bool IsStable(const Tables& t, const std::bitset<0x10000>& unstable, unsigned char skip_below,
              std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < skip_below) {
      ++i;
      continue;
    }
    const char32_t cp = DecodeUtf8(text, &i);
    if (cp < 0x10000 ? unstable.test(cp)
                     : (t.decomposition.count(cp) || t.combining_class.count(cp))) {
      return false;
    }
  }
  return true;
}

void DecomposeInto(const Tables& t, char32_t cp, std::vector<char32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const int s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  auto it = t.decomposition.find(cp);
  if (it == t.decomposition.end()) {
    out->push_back(cp);
    return;
  }
  DecomposeInto(t, it->second.first, out);
  if (it->second.second != 0) DecomposeInto(t, it->second.second, out);
}

// Full canonical decomposition followed by canonical ordering of non-starter runs.
std::vector<char32_t> Decompose(const Tables& t, std::string_view text) {
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) DecomposeInto(t, DecodeUtf8(text, &i), &cps);
  for (size_t i = 0; i < cps.size();) {
    if (t.CombiningClass(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && t.CombiningClass(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j, [&](char32_t a, char32_t b) {
      return t.CombiningClass(a) < t.CombiningClass(b);
    });
    i = j;
  }
  return cps;
}

char32_t Compose(const Tables& t, char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = t.composition.find((uint64_t{a} << 32) | b);
  return it == t.composition.end() ? 0 : it->second;
}

std::string Encode(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size() * 2);
  for (char32_t cp : cps) AppendUtf8(cp, &out);
  return out;
}

}  // namespace

std::string ToNfd(std::string_view text) {
  const Tables& t = GetTables();
  if (IsStable(t, t.nfd_unstable, 0x80, text)) return std::string(text);
  return Encode(Decompose(t, text));
}

std::string ToNfc(std::string_view text) {
  const Tables& t = GetTables();
  if (IsStable(t, t.nfc_unstable, 0xCC, text)) return std::string(text);
  std::vector<char32_t> cps = Decompose(t, text);
  if (cps.empty()) return {};
  // Canonical composition (the UAX #15 sample algorithm): a character combines with the last
  // starter unless a character of the same or higher combining class sits between them.
  // A leading non-starter gets class 256 so nothing composes onto it.
  size_t starter = 0;
  int last_class = t.CombiningClass(cps[0]) == 0 ? 0 : 256;
  size_t out = 1;
  for (size_t i = 1; i < cps.size(); ++i) {
    const char32_t cp = cps[i];
    const int cls = t.CombiningClass(cp);
    if (last_class < cls || last_class == 0) {
      if (char32_t composed = Compose(t, cps[starter], cp)) {
        cps[starter] = composed;
        continue;
      }
    }
    if (cls == 0) starter = out;
    last_class = cls;
    cps[out++] = cp;
  }
  cps.resize(out);
  return Encode(cps);
}

}  // namespace loraserve::tokenizer
