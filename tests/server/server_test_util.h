// Shared pieces of the server tests: a tiny generated base model (tools/gen_model.py, cached on
// the generator), PEFT adapters written byte by byte, and a fixture that starts the real
// LoraServer on a loopback port with an adapter store and an admin token.
#pragma once

#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/inference.grpc.pb.h"
#include "server/lora_server.h"
#include "tests/adapters/adapter_test_util.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve::testing {

inline constexpr char kAdminToken[] = "test-admin-token";

// hidden 64, 2 layers, vocab 512, 2048 positions, with tokenizer.json and a chat template.
// Generated once per generator version and shared by every test process (ctest runs each test
// in its own), not once per process.
inline const std::string& TinyModelDir() {
  static const std::string dir = GeneratedModelDir("server_tiny", "--seed 1");
  return dir;
}

// The files of a random PEFT adapter for `base` (rank r on q/v/o/down), deterministic in seed.
inline std::map<std::string, std::string> AdapterFiles(const ModelConfig& base, uint32_t seed,
                                                      int rank = 4,
                                                      nlohmann::json overrides = {}) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<TestTensor> tensors;
  const std::vector<Module> modules = {Module::kQ, Module::kV, Module::kO, Module::kDown};
  for (int layer = 0; layer < base.num_layers; ++layer) {
    for (Module m : modules) {
      const ModuleDims dims = base.Dims(m);
      const std::string key = ModuleKey(layer, m);
      std::vector<float> a(static_cast<size_t>(rank) * dims.in), b(static_cast<size_t>(dims.out) * rank);
      for (float& v : a) v = normal(rng);
      for (float& v : b) v = normal(rng);
      tensors.push_back({key + ".lora_A.weight", "F32", {rank, dims.in}, a});
      tensors.push_back({key + ".lora_B.weight", "F32", {dims.out, rank}, b});
    }
  }
  nlohmann::json config = {{"r", rank},
                           {"lora_alpha", 2 * rank},
                           {"target_modules", {"q_proj", "v_proj", "o_proj", "down_proj"}}};
  if (!overrides.is_null()) {
    for (auto it = overrides.begin(); it != overrides.end(); ++it) config[it.key()] = it.value();
  }
  return {{"adapter_config.json", LoraConfigJson(config)},
          {"adapter_model.safetensors", SafetensorsBytes(tensors)}};
}

inline void WriteAdapterDir(const std::string& dir, const std::map<std::string, std::string>& files) {
  std::filesystem::create_directories(dir);
  for (const auto& [name, bytes] : files) WriteFile(dir + "/" + name, bytes);
}

// A running server on 127.0.0.1:<picked> with /metrics on another picked port.
class ServerFixture : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::seconds(5));
    server_.reset();
  }

  virtual void Configure(server::ServerOptions& options) {}

  void StartServer() {
    server::ServerOptions options;
    options.model_dir = TinyModelDir();
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.store_dir = store_.path() + "/store";
    options.adapters.load_root = load_root_.path();
    options.admin_token = kAdminToken;
    options.engine.pool_bytes = 64ll << 20;
    options.adapters.max_upload_bytes = 1 << 20;
    options.log = [](const std::string&) {};
    Configure(options);
    auto server = server::LoraServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                       grpc::InsecureChannelCredentials());
    inference_ = v1::Inference::NewStub(channel);
    admin_ = v1::Admin::NewStub(channel);
    base_ = server_->engine()->model_config();
  }

  static void Authorize(grpc::ClientContext* context, const std::string& token = kAdminToken) {
    context->AddMetadata("authorization", "Bearer " + token);
  }

  grpc::Status Upload(const std::string& id, const std::map<std::string, std::string>& files,
                      v1::AdapterStatus* out = nullptr, size_t chunk = 4096,
                      const std::string& sha256 = "") {
    grpc::ClientContext context;
    Authorize(&context);
    v1::AdapterStatus response;
    auto writer = admin_->UploadAdapter(&context, &response);
    v1::UploadAdapterRequest header;
    header.mutable_header()->set_adapter_id(id);
    header.mutable_header()->set_sha256(sha256);
    bool open = writer->Write(header);
    for (const auto& [name, bytes] : files) {
      for (size_t offset = 0; open && offset < bytes.size(); offset += chunk) {
        v1::UploadAdapterRequest message;
        message.mutable_chunk()->set_file_name(name);
        message.mutable_chunk()->set_offset(offset);
        message.mutable_chunk()->set_data(bytes.substr(offset, chunk));
        open = writer->Write(message);
      }
    }
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (out != nullptr) *out = response;
    return status;
  }

  std::vector<std::string> ListIds() {
    grpc::ClientContext context;
    Authorize(&context);
    v1::ListAdaptersResponse response;
    grpc::Status status = admin_->ListAdapters(&context, {}, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> ids;
    for (const auto& a : response.adapters()) ids.push_back(a.id());
    return ids;
  }

  // Published entries of the store folder (staging and trash excluded).
  std::vector<std::string> StoreEntries() {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(store_.path() + "/store")) {
      const std::string name = e.path().filename().string();
      if (!name.empty() && name[0] != '.') names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  static v1::GenerateRequest Request(std::vector<int32_t> ids, const std::string& adapter,
                                     int max_tokens) {
    v1::GenerateRequest request;
    request.mutable_token_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
    if (!adapter.empty()) request.set_adapter_id(adapter);
    request.set_max_tokens(max_tokens);
    request.set_ignore_eos(true);
    return request;
  }

  grpc::Status Generate(const v1::GenerateRequest& request, v1::GenerateResponse* response) {
    grpc::ClientContext context;
    return inference_->Generate(&context, request, response);
  }

  TempDir store_;
  TempDir load_root_;
  std::unique_ptr<server::LoraServer> server_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  ModelConfig base_;
};

}  // namespace loraserve::testing
