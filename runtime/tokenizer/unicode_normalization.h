// Canonical Unicode normalization (NFD, NFC) without ICU, from the generated tables in
// unicode_data.cc. Compatibility forms (NFKC/NFKD) are not built in.
#pragma once

#include <string>
#include <string_view>

namespace loraserve::tokenizer {

// Both take and return valid UTF-8. Text that is already normalized (the common case: ASCII,
// CJK, most precomposed Latin) is detected by a quick check and returned unchanged.
std::string ToNfd(std::string_view text);
std::string ToNfc(std::string_view text);

}  // namespace loraserve::tokenizer
