// `loraserve tokenize`: a line-oriented front end to the tokenizer, used by the parity tests
// against Hugging Face tokenizers and handy for inspecting prompts by hand.
//   encode: one JSON string per input line  -> one JSON array of ids per output line
//   decode: one JSON array of ids per line   -> one JSON string per line
//   chat:   one JSON array of {role, content} messages per line -> one JSON string per line
#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "nlohmann/json.hpp"
#include "runtime/tokenizer/tokenizer.h"
#include "cli/commands.h"

namespace loraserve::cli {
namespace {

struct TokenizeOptions {
  std::string tokenizer_path;
  bool add_special_tokens = false;
  bool decode = false;
  bool skip_special_tokens = false;
  bool chat = false;
  bool add_generation_prompt = false;
  std::string chat_template_file;
};

// Handles one input line; returns false (after printing why) when the line is malformed.
bool ProcessLine(const Tokenizer& tokenizer, const TokenizeOptions& options,
                 const std::string& chat_template, const std::string& line) {
  const nlohmann::json input = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (input.is_discarded()) {
    std::cerr << "tokenize: input line is not JSON: " << line << "\n";
    return false;
  }
  if (options.chat) {
    std::vector<ChatMessage> messages;
    if (!input.is_array()) {
      std::cerr << "tokenize --chat: expected a JSON array of messages\n";
      return false;
    }
    for (const auto& message : input) {
      if (!message.is_object() || !message.contains("role") || !message.contains("content") ||
          !message["role"].is_string() || !message["content"].is_string()) {
        std::cerr << "tokenize --chat: each message needs string \"role\" and \"content\"\n";
        return false;
      }
      messages.push_back({message["role"].get<std::string>(),
                          message["content"].get<std::string>()});
    }
    absl::StatusOr<std::string> rendered =
        tokenizer.ApplyChatTemplate(messages, options.add_generation_prompt, chat_template);
    if (!rendered.ok()) {
      std::cerr << "tokenize --chat: " << rendered.status().message() << "\n";
      return false;
    }
    std::cout << nlohmann::json(*rendered).dump(-1, ' ', /*ensure_ascii=*/true) << "\n";
    return true;
  }
  if (options.decode) {
    if (!input.is_array()) {
      std::cerr << "tokenize --decode: expected a JSON array of ids\n";
      return false;
    }
    std::vector<int32_t> ids;
    for (const auto& id : input) {
      if (!id.is_number_integer()) {
        std::cerr << "tokenize --decode: ids must be integers\n";
        return false;
      }
      ids.push_back(id.get<int32_t>());
    }
    const std::string text = tokenizer.Decode(ids, options.skip_special_tokens);
    std::cout << nlohmann::json(text).dump(-1, ' ', /*ensure_ascii=*/true) << "\n";
    return true;
  }
  if (!input.is_string()) {
    std::cerr << "tokenize: expected a JSON string per line\n";
    return false;
  }
  const std::vector<int32_t> ids =
      tokenizer.Encode(input.get<std::string>(), options.add_special_tokens);
  std::cout << nlohmann::json(ids).dump() << "\n";
  return true;
}

int RunTokenize(const TokenizeOptions& options) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(options.tokenizer_path);
  if (!tokenizer.ok()) {
    std::cerr << "tokenize: " << tokenizer.status().message() << "\n";
    return 1;
  }
  std::string chat_template;
  if (!options.chat_template_file.empty()) {
    std::ifstream in(options.chat_template_file, std::ios::binary);
    if (!in) {
      std::cerr << "tokenize: cannot read --chat-template " << options.chat_template_file << "\n";
      return 1;
    }
    chat_template.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  int exit_code = 0;
  while (std::getline(std::cin, line)) {
    if (!ProcessLine(**tokenizer, options, chat_template, line)) {
      std::cout << "null\n";  // keep output lines aligned with input lines
      exit_code = 1;
    }
    std::cout.flush();
  }
  return exit_code;
}

}  // namespace

void AddTokenizeCommand(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* command = app.add_subcommand(
      "tokenize", "Encode JSON strings (one per stdin line) to JSON id arrays, or decode them");
  command->add_option("--tokenizer", options->tokenizer_path, "tokenizer.json or a model folder")
      ->required();
  command->add_flag("--add-special-tokens", options->add_special_tokens,
                    "add the post-processor's special tokens (e.g. BOS)");
  command->add_flag("--decode", options->decode, "read JSON id arrays and write JSON strings");
  command->add_flag("--skip-special-tokens", options->skip_special_tokens,
                    "with --decode: drop special tokens");
  command->add_flag("--chat", options->chat,
                    "read JSON arrays of {role, content} messages and write the rendered template");
  command->add_flag("--add-generation-prompt", options->add_generation_prompt,
                    "with --chat: end with the assistant header");
  command->add_option("--chat-template", options->chat_template_file,
                      "with --chat: a file holding the template to use instead of the config's");
  command->callback([options, exit_code] { *exit_code = RunTokenize(*options); });
}

}  // namespace loraserve::cli
