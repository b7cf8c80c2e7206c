// Decoder implementations, each mirroring one reference decoder's decode_chain.
#include "runtime/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/pattern.h"
#include "runtime/tokenizer/utf8.h"

namespace loraserve::tokenizer {
namespace {

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// All tokens become one string; code points outside the alphabet keep their UTF-8 bytes for
// that token, and invalid UTF-8 in the result is repaired lossily.
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      if (!AppendBytesFromByteLevel(token, &bytes)) bytes += token;
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }
};

// Runs of <0xXX> tokens become the bytes they name: one string when the run is valid UTF-8,
// otherwise one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& token : *tokens) {
      if (std::optional<unsigned char> byte = ParseByteToken(token)) {
        pending.push_back(static_cast<char>(*byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static std::optional<unsigned char> ParseByteToken(const std::string& token) {
    if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return std::nullopt;
    int value = 0;
    for (int i = 3; i < 5; ++i) {
      const char c = token[i];
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
        digit = (c | 0x20) - 'a' + 10;
      } else {
        return std::nullopt;
      }
      value = value * 16 + digit;
    }
    return static_cast<unsigned char>(value);
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& token : *tokens) joined += token;
    tokens->assign(1, std::move(joined));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) token = pattern_.ReplaceAll(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Removes up to `start` leading and `stop` trailing copies of one code point from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      size_t begin = 0, end = token.size();
      for (int i = 0; i < start_ && std::string_view(token).substr(begin).starts_with(content_);
           ++i) {
        begin += content_.size();
      }
      for (int i = 0; i < stop_ && end >= begin + content_.size() &&
                      std::string_view(token).substr(0, end).ends_with(content_);
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(Pattern::Literal(std::move(replacement))), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      token = replacement_.ReplaceAll(token, " ");
      if (i == 0 && strip_first_ && token.starts_with(' ')) token.erase(0, 1);
    }
  }

 private:
  Pattern replacement_;
  bool strip_first_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& config) {
  if (config.is_null()) return std::unique_ptr<Decoder>();
  if (!config.is_object() || !config.contains("type")) {
    return absl::InvalidArgumentError("tokenizer.json: decoder must be an object with a type");
  }
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& step : config.at("decoders")) {
      absl::StatusOr<std::unique_ptr<Decoder>> parsed = ParseDecoder(step);
      if (!parsed.ok()) return parsed.status();
      if (*parsed) steps.push_back(*std::move(parsed));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    absl::StatusOr<Pattern> pattern = Pattern::FromJson(config.at("pattern"));
    if (!pattern.ok()) return pattern.status();
    return std::make_unique<ReplaceDecoder>(*std::move(pattern),
                                            config.at("content").get<std::string>());
  }
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(config.at("content").get<std::string>(),
                                          config.value("start", 0), config.value("stop", 0));
  }
  if (type == "Metaspace") {
    bool strip_first = config.value("add_prefix_space", true);
    if (config.contains("prepend_scheme")) {
      strip_first = config["prepend_scheme"].get<std::string>() != "never";
    }
    return std::make_unique<MetaspaceDecoder>(config.value("replacement", "\u2581"), strip_first);
  }
  return absl::UnimplementedError(absl::StrCat(
      "tokenizer.json: decoder type '", type,
      "' is not supported (supported: ByteLevel, ByteFallback, Metaspace, Strip, Fuse, Replace, "
      "Sequence)"));
}

}  // namespace loraserve::tokenizer
