// `loraserve generate --server ADDR`: the same request as the in-process command, sent to a
// running server over gRPC and streamed back. Adds --server/--token/--prompt/--stream to the
// lead's `generate` subcommand and reads its other flags by name, so both paths share them;
// --adapter means ID[@WEIGHT] here (a registered adapter) instead of a local folder.
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "proto/inference.grpc.pb.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/grpc_client.h"

namespace loraserve::cli {

struct RemoteGenerateFlags {
  ClientFlags client;
  std::string prompt;
  std::vector<std::string> stop;
  bool stream = true;
};

namespace {

template <typename T>
T Flag(const CLI::App& cmd, const std::string& name) {
  return cmd.get_option(name)->as<T>();
}

}  // namespace

std::shared_ptr<RemoteGenerateFlags> AddRemoteGenerateOptions(CLI::App* cmd) {
  auto flags = std::make_shared<RemoteGenerateFlags>();
  flags->client.token_env = "LORASERVE_INFERENCE_TOKEN";
  cmd->add_option("--server", flags->client.server,
                  "Send the request to a running server HOST:PORT instead of running in-process");
  AddClientFlags(cmd, &flags->client, /*server_option=*/false);
  cmd->add_option("--prompt", flags->prompt, "Prompt text (encoded with the model's tokenizer)");
  cmd->add_option("--stop", flags->stop, "Stop string (with --server; repeat)");
  cmd->add_flag("!--no-stream", flags->stream, "Use unary Generate instead of GenerateStream");
  // Either path supplies the model and prompt, so neither flag is required on its own.
  cmd->get_option("--model")->required(false);
  cmd->get_option("--prompt-ids")->required(false);
  return flags;
}

bool RunRemoteGenerate(const CLI::App& cmd, const RemoteGenerateFlags& flags, int* exit_code) {
  auto fail = [&](const std::string& message) {
    std::cerr << "error: " << message << "\n";
    *exit_code = 1;
    return true;
  };
  if (flags.client.server.empty()) {
    return false;  // the in-process path runs (and checks its own flags)
  }
  v1::GenerateRequest request;
  const std::string prompt_ids = Flag<std::string>(cmd, "--prompt-ids");
  const std::string chat = Flag<std::string>(cmd, "--chat");
  if (!chat.empty()) {
    const std::string system = Flag<std::string>(cmd, "--system");
    if (!system.empty()) {
      v1::ChatMessage* m = request.mutable_chat()->add_messages();
      m->set_role("system");
      m->set_content(system);
    }
    v1::ChatMessage* m = request.mutable_chat()->add_messages();
    m->set_role("user");
    m->set_content(chat);
  } else if (!flags.prompt.empty()) {
    request.set_text(flags.prompt);
  } else if (!prompt_ids.empty()) {
    auto ids = ParseIdList(prompt_ids, "--prompt-ids");
    if (!ids.ok()) return fail(std::string(ids.status().message()));
    request.mutable_token_ids()->mutable_ids()->Assign(ids->begin(), ids->end());
  } else {
    return fail("one of --chat, --prompt or --prompt-ids is required");
  }
  // CLI11 reports an unset vector option as one empty string.
  std::vector<std::string> adapters = Flag<std::vector<std::string>>(cmd, "--adapter");
  std::erase(adapters, std::string());
  for (const std::string& spec : adapters) {
    std::pair<std::string, std::string> parts = absl::StrSplit(spec, absl::MaxSplits('@', 1));
    float weight = 1.0f;
    if (!parts.second.empty() && !absl::SimpleAtof(parts.second, &weight)) {
      return fail("--adapter " + spec + ": weight is not a number");
    }
    if (adapters.size() == 1 && parts.second.empty()) {
      request.set_adapter_id(parts.first);
    } else {
      v1::WeightedAdapter* a = request.mutable_mix()->add_adapters();
      a->set_adapter_id(parts.first);
      a->set_weight(weight);
    }
  }
  request.set_max_tokens(Flag<int>(cmd, "--max-tokens"));
  request.mutable_sampling()->set_temperature(Flag<float>(cmd, "--temperature"));
  request.mutable_sampling()->set_top_k(Flag<int>(cmd, "--top-k"));
  request.mutable_sampling()->set_top_p(Flag<float>(cmd, "--top-p"));
  request.mutable_sampling()->set_seed(Flag<uint64_t>(cmd, "--seed"));
  request.set_ignore_eos(Flag<bool>(cmd, "--ignore-eos"));
  for (const std::string& stop : flags.stop) request.add_stop(stop);
  const bool print_ids = Flag<bool>(cmd, "--print-ids");

  auto stub = v1::Inference::NewStub(MakeChannel(flags.client));
  grpc::ClientContext context;
  PrepareContext(flags.client, &context);
  v1::GenerateResponse result;
  grpc::Status status;
  if (flags.stream) {
    auto reader = stub->GenerateStream(&context, request);
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) {
      std::cout << message.text() << std::flush;
      if (message.has_final()) result = message.final();
    }
    status = reader->Finish();
    std::cout << "\n";
  } else {
    status = stub->Generate(&context, request, &result);
    if (status.ok()) std::cout << result.text() << "\n";
  }
  if (!status.ok()) return fail(StatusText(status));
  if (print_ids) {
    std::cout << JoinIds(std::vector<int32_t>(result.token_ids().begin(), result.token_ids().end()))
              << "\n";
  }
  return true;
}

}  // namespace loraserve::cli
