// UTF-8 helpers shared by the tokenizer stages: decoding code points, encoding them, and the
// lossy repair that mirrors Rust's String::from_utf8_lossy (what the reference decoder emits).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace loraserve::tokenizer {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Length in bytes of a valid UTF-8 sequence starting at `s[pos]`, or 0 when the bytes there are
// not a complete, well-formed sequence.
int Utf8SequenceLength(std::string_view s, size_t pos);

// Decodes the code point at `s[*pos]` and advances `*pos`. Callers only pass valid UTF-8.
char32_t DecodeUtf8(std::string_view s, size_t* pos);

void AppendUtf8(char32_t cp, std::string* out);

bool IsValidUtf8(std::string_view s);

// Replaces every maximal ill-formed subsequence with U+FFFD, exactly like from_utf8_lossy.
std::string Utf8Lossy(std::string_view bytes);

// Rust's char::is_whitespace (the Unicode White_Space property).
bool IsUnicodeWhitespace(char32_t cp);

}  // namespace loraserve::tokenizer
