// The GPT-2 byte-to-unicode alphabet used by ByteLevel pre-tokenizers and decoders: every byte
// maps to one printable code point so that BPE vocabularies never contain raw control bytes.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace loraserve::tokenizer {

// UTF-8 encodings of the 256 byte symbols, indexed by byte.
const std::array<std::string, 256>& ByteLevelAlphabet();

// Appends the byte-level spelling of `bytes` to `out`.
void AppendByteLevel(std::string_view bytes, std::string* out);

// Maps a byte-level spelled token back to bytes. Returns false (leaving `out` untouched) when
// some code point is not in the alphabet; the reference then keeps the token's raw bytes.
bool AppendBytesFromByteLevel(std::string_view token, std::string* out);

}  // namespace loraserve::tokenizer
