// UTF-8 decoding and the lossy repair used when decoded bytes are not valid text.
#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

// Follows the Unicode "well-formed byte sequences" table (Table 3-7), which is also what
// from_utf8_lossy uses to decide where one ill-formed subsequence ends.
bool InRange(unsigned char c, unsigned char lo, unsigned char hi) { return c >= lo && c <= hi; }

// Returns the number of bytes of the longest prefix of a well-formed sequence at pos (>= 1 for
// any lead byte that can start one) and whether the sequence is complete.
int ValidPrefix(std::string_view s, size_t pos, bool* complete) {
  const unsigned char c0 = s[pos];
  *complete = false;
  if (c0 < 0x80) {
    *complete = true;
    return 1;
  }
  int need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (InRange(c0, 0xC2, 0xDF)) {
    need = 2;
  } else if (InRange(c0, 0xE0, 0xEF)) {
    need = 3;
    if (c0 == 0xE0) lo = 0xA0;
    if (c0 == 0xED) hi = 0x9F;
  } else if (InRange(c0, 0xF0, 0xF4)) {
    need = 4;
    if (c0 == 0xF0) lo = 0x90;
    if (c0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  int len = 1;
  for (; len < need; ++len) {
    if (pos + len >= s.size()) return len;
    const unsigned char c = s[pos + len];
    if (len == 1 ? !InRange(c, lo, hi) : !InRange(c, 0x80, 0xBF)) return len;
  }
  *complete = true;
  return len;
}

}  // namespace

int Utf8SequenceLength(std::string_view s, size_t pos) {
  bool complete;
  const int len = ValidPrefix(s, pos, &complete);
  return complete ? len : 0;
}

char32_t DecodeUtf8(std::string_view s, size_t* pos) {
  const unsigned char c0 = s[*pos];
  if (c0 < 0x80) {
    ++*pos;
    return c0;
  }
  int len = c0 >= 0xF0 ? 4 : c0 >= 0xE0 ? 3 : 2;
  char32_t cp = c0 & (0x7F >> len);
  for (int i = 1; i < len && *pos + i < s.size(); ++i) {
    cp = (cp << 6) | (static_cast<unsigned char>(s[*pos + i]) & 0x3F);
  }
  *pos += len;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int len = Utf8SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    bool complete;
    const int len = ValidPrefix(bytes, i, &complete);
    if (complete) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      AppendUtf8(kReplacementChar, &out);
      i += len == 0 ? 1 : len;
    }
  }
  return out;
}

bool IsUnicodeWhitespace(char32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

}  // namespace loraserve::tokenizer
