// Builds the byte <-> code point tables once; lookups are array reads.
#include "runtime/tokenizer/byte_level.h"

#include <vector>

#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

struct Tables {
  std::array<std::string, 256> alphabet;
  std::vector<int> byte_of_code_point = std::vector<int>(512, -1);  // all symbols are < U+0200

  Tables() {
    // Printable Latin-1 bytes map to themselves; the rest are shifted to U+0100 onwards in
    // byte order.
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? b : 0x100 + next++;
      AppendUtf8(cp, &alphabet[b]);
      byte_of_code_point[cp] = b;
    }
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

}  // namespace

const std::array<std::string, 256>& ByteLevelAlphabet() { return GetTables().alphabet; }

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const auto& alphabet = GetTables().alphabet;
  for (unsigned char b : bytes) out->append(alphabet[b]);
}

bool AppendBytesFromByteLevel(std::string_view token, std::string* out) {
  const auto& table = GetTables().byte_of_code_point;
  const size_t start = out->size();
  for (size_t i = 0; i < token.size();) {
    if (Utf8SequenceLength(token, i) == 0) {
      out->resize(start);
      return false;
    }
    const char32_t cp = DecodeUtf8(token, &i);
    if (cp >= table.size() || table[cp] < 0) {
      out->resize(start);
      return false;
    }
    out->push_back(static_cast<char>(table[cp]));
  }
  return true;
}

}  // namespace loraserve::tokenizer
