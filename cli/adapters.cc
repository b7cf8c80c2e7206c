// `loraserve adapters upload|list|load|unload|pin|fuse`: the admin client. Uploads stream the
// PEFT files in chunks with a progress bar on stderr.
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "proto/admin.grpc.pb.h"
#include "cli/commands.h"
#include "cli/grpc_client.h"

namespace loraserve::cli {
namespace {

constexpr size_t kChunkBytes = 1 << 20;
constexpr const char* kUploadFiles[] = {"adapter_config.json", "adapter_model.safetensors",
                                        "README.md"};

const char* StateName(v1::AdapterState state) {
  switch (state) {
    case v1::ADAPTER_STATE_STORED:
      return "stored";
    case v1::ADAPTER_STATE_HOST:
      return "host";
    case v1::ADAPTER_STATE_LOADING:
      return "loading";
    case v1::ADAPTER_STATE_RESIDENT:
      return "resident";
    default:
      return "?";
  }
}

void PrintAdapter(const v1::AdapterStatus& a) {
  std::cout << a.id() << "\t" << StateName(a.state()) << (a.pinned() ? ",pinned" : "")
            << "\trank=" << a.rank() << "\talpha=" << a.alpha()
            << "\ttargets=" << absl::StrJoin(a.target_modules(), ",") << "\tbytes=" << a.bytes()
            << "\tin_flight=" << a.in_flight() << "\n";
}

void Progress(uint64_t sent, uint64_t total) {
  constexpr int kWidth = 40;
  const double fraction = total == 0 ? 1.0 : static_cast<double>(sent) / total;
  const int filled = static_cast<int>(fraction * kWidth);
  std::cerr << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, ' ') << "] "
            << std::setw(3) << static_cast<int>(fraction * 100) << "% " << sent << "/" << total
            << " bytes" << std::flush;
}

int Upload(const ClientFlags& flags, const std::string& id, const std::string& dir,
           const std::string& sha256, bool quiet) {
  std::vector<std::pair<std::string, std::string>> files;
  uint64_t total = 0;
  for (const char* name : kUploadFiles) {
    const auto path = std::filesystem::path(dir) / name;
    if (!std::filesystem::exists(path)) continue;
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    total += bytes.size();
    files.emplace_back(name, std::move(bytes));
  }
  if (files.empty()) {
    std::cerr << "error: " << dir << " holds no adapter_config.json / adapter_model.safetensors\n";
    return 1;
  }
  auto stub = v1::Admin::NewStub(MakeChannel(flags));
  grpc::ClientContext context;
  PrepareContext(flags, &context);
  v1::AdapterStatus response;
  auto writer = stub->UploadAdapter(&context, &response);
  v1::UploadAdapterRequest message;
  message.mutable_header()->set_adapter_id(id);
  message.mutable_header()->set_sha256(sha256);
  message.mutable_header()->set_format(v1::ADAPTER_FORMAT_PEFT);
  message.mutable_header()->set_total_bytes(total);
  bool open = writer->Write(message);
  uint64_t sent = 0;
  for (const auto& [name, bytes] : files) {
    for (size_t offset = 0; open && (offset < bytes.size() || offset == 0); offset += kChunkBytes) {
      v1::UploadAdapterRequest chunk;
      chunk.mutable_chunk()->set_file_name(name);
      chunk.mutable_chunk()->set_offset(offset);
      const size_t n = std::min(kChunkBytes, bytes.size() - offset);
      chunk.mutable_chunk()->set_data(bytes.substr(offset, n));
      open = writer->Write(chunk);
      sent += n;
      if (!quiet) Progress(sent, total);
      if (bytes.empty()) break;
    }
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!quiet) std::cerr << "\n";
  if (!status.ok()) {
    std::cerr << "error: " << StatusText(status) << "\n";
    return 1;
  }
  PrintAdapter(response);
  return 0;
}

}  // namespace

void AddAdaptersCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ClientFlags>();
  flags->token_env = "LORASERVE_ADMIN_TOKEN";
  CLI::App* cmd = app.add_subcommand("adapters", "Manage the adapters of a running server");
  cmd->require_subcommand(1);
  cmd->fallthrough();  // `adapters list --server X` works like `adapters --server X list`
  AddClientFlags(cmd, flags.get());
  auto stub = [flags] { return v1::Admin::NewStub(MakeChannel(*flags)); };
  auto finish = [exit_code](const grpc::Status& status) {
    if (status.ok()) return true;
    std::cerr << "error: " << StatusText(status) << "\n";
    *exit_code = 1;
    return false;
  };

  struct Args {
    std::string id, dir, sha256, path, method = "linear";
    std::vector<std::string> sources;
    bool quiet = false, keep = false, unpin = false;
    int rank = 0;
    float density = 1.0f;
    float svd_clamp = -1.0f;
    std::string majority_sign = "total";
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();

  CLI::App* upload = cmd->add_subcommand("upload", "Upload a local PEFT folder");
  upload->add_option("id", args->id, "New adapter id")->required();
  upload->add_option("dir", args->dir, "PEFT adapter folder")->required()->check(CLI::ExistingDirectory);
  upload->add_option("--sha256", args->sha256, "Expected sha256 of adapter_model.safetensors");
  upload->add_flag("--quiet", args->quiet, "No progress bar");
  upload->callback([=] { *exit_code = Upload(*flags, args->id, args->dir, args->sha256, args->quiet); });

  CLI::App* list = cmd->add_subcommand("list", "List registered adapters");
  list->callback([=] {
    grpc::ClientContext context;
    PrepareContext(*flags, &context);
    v1::ListAdaptersResponse response;
    if (!finish(stub()->ListAdapters(&context, {}, &response))) return;
    for (const auto& a : response.adapters()) PrintAdapter(a);
  });

  CLI::App* load = cmd->add_subcommand("load", "Load a PEFT folder that lies on the server");
  load->add_option("id", args->id, "New adapter id")->required();
  load->add_option("path", args->path, "Folder on the server, under its --load-root")->required();
  load->callback([=] {
    grpc::ClientContext context;
    PrepareContext(*flags, &context);
    v1::LoadAdapterRequest request;
    request.set_adapter_id(args->id);
    request.set_path(args->path);
    v1::AdapterStatus response;
    if (finish(stub()->LoadAdapter(&context, request, &response))) PrintAdapter(response);
  });

  CLI::App* unload = cmd->add_subcommand("unload", "Unregister an adapter and delete it");
  unload->add_option("id", args->id, "Adapter id")->required();
  unload->add_flag("--keep", args->keep, "Keep its files in the store");
  unload->callback([=] {
    grpc::ClientContext context;
    PrepareContext(*flags, &context);
    v1::UnloadAdapterRequest request;
    request.set_adapter_id(args->id);
    request.set_keep_in_store(args->keep);
    v1::UnloadAdapterResponse response;
    if (finish(stub()->UnloadAdapter(&context, request, &response))) {
      std::cout << "unloaded " << args->id << " (" << response.in_flight()
                << " requests still finishing)\n";
    }
  });

  CLI::App* pin = cmd->add_subcommand("pin", "Pin an adapter in the adapter pool");
  pin->add_option("id", args->id, "Adapter id")->required();
  pin->add_flag("--unpin", args->unpin, "Unpin instead");
  pin->callback([=] {
    grpc::ClientContext context;
    PrepareContext(*flags, &context);
    v1::PinAdapterRequest request;
    request.set_adapter_id(args->id);
    request.set_pinned(!args->unpin);
    v1::AdapterStatus response;
    if (finish(stub()->PinAdapter(&context, request, &response))) PrintAdapter(response);
  });

  CLI::App* fuse = cmd->add_subcommand("fuse", "Fuse adapters offline into a new one");
  fuse->add_option("id", args->id, "New adapter id")->required();
  fuse->add_option("--source", args->sources, "ID@WEIGHT (repeat)")->required();
  fuse->add_option("--method", args->method,
                   "PEFT combination_type: linear, cat, svd, ties, ties_svd, dare_linear, "
                   "dare_ties, dare_linear_svd, dare_ties_svd, magnitude_prune, "
                   "magnitude_prune_svd")
      ->check(CLI::IsMember({"linear", "cat", "svd", "ties", "ties_svd", "dare_linear",
                             "dare_ties", "dare_linear_svd", "dare_ties_svd", "magnitude_prune",
                             "magnitude_prune_svd"}))
      ->capture_default_str();
  fuse->add_option("--rank", args->rank, "Target rank of SVD methods; 0 = largest source rank");
  fuse->add_option("--density", args->density, "TIES/DARE/magnitude_prune density in (0, 1]")
      ->capture_default_str();
  fuse->add_option("--svd-clamp", args->svd_clamp,
                   "SVD methods: clamp factors at this quantile; negative = no clamp")
      ->capture_default_str();
  fuse->add_option("--majority-sign", args->majority_sign, "TIES sign election")
      ->check(CLI::IsMember({"total", "frequency"}))
      ->capture_default_str();
  fuse->add_option("--seed", args->seed, "Seed of DARE's random drop")->capture_default_str();
  fuse->callback([=] {
    v1::FuseAdaptersRequest request;
    request.set_new_adapter_id(args->id);
    for (const std::string& spec : args->sources) {
      std::pair<std::string, std::string> parts = absl::StrSplit(spec, absl::MaxSplits('@', 1));
      float weight = 1.0f;
      if (!parts.second.empty() && !absl::SimpleAtof(parts.second, &weight)) {
        std::cerr << "error: --source " << spec << ": weight is not a number\n";
        *exit_code = 1;
        return;
      }
      v1::FuseSource* source = request.add_sources();
      source->set_adapter_id(parts.first);
      source->set_weight(weight);
    }
    v1::FuseMethod method;
    // --method is checked against the list above, so the name always parses.
    v1::FuseMethod_Parse(absl::AsciiStrToUpper(absl::StrCat("FUSE_METHOD_", args->method)),
                         &method);
    request.set_method(method);
    request.set_rank(args->rank);
    request.set_density(args->density);
    if (args->svd_clamp >= 0) request.set_svd_clamp(args->svd_clamp);
    request.set_majority_sign_method(args->majority_sign == "frequency"
                                         ? v1::MAJORITY_SIGN_METHOD_FREQUENCY
                                         : v1::MAJORITY_SIGN_METHOD_TOTAL);
    request.set_seed(args->seed);
    grpc::ClientContext context;
    PrepareContext(*flags, &context);
    v1::AdapterStatus response;
    if (finish(stub()->FuseAdapters(&context, request, &response))) PrintAdapter(response);
  });
}

}  // namespace loraserve::cli
