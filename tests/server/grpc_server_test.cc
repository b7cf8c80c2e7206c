// The real server on a loopback port, driven by real gRPC clients: adapter upload / generate /
// unload-while-streaming / re-upload, logprobs and min_tokens, every status code of the API,
// corrupt uploads, auth, drain on shutdown, and 100 concurrent streams over 20 adapters.
#include <httplib.h>

#include <fstream>

#include <span>
#include <thread>

#include "gmock/gmock.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/server/server_test_util.h"

namespace loraserve::testing {
namespace {

using ::testing::HasSubstr;

class GrpcServerTest : public ServerFixture {
 protected:
  // Streams `request` to the end; returns the status and every streamed token.
  grpc::Status Stream(const v1::GenerateRequest& request, std::vector<int32_t>* tokens,
                      v1::GenerateResponse* final_message = nullptr) {
    grpc::ClientContext context;
    auto reader = inference_->GenerateStream(&context, request);
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) {
      tokens->insert(tokens->end(), message.token_ids().begin(), message.token_ids().end());
      if (message.has_final() && final_message != nullptr) *final_message = message.final();
    }
    return reader->Finish();
  }

  std::vector<int32_t> Prompt(int salt) { return {1 + salt % 50, 7, 42 + salt, 100, 3}; }
};

TEST_F(GrpcServerTest, UploadGenerateUnloadWhileStreamingAndUploadAgain) {
  const auto files = AdapterFiles(base_, 11);
  v1::AdapterStatus uploaded;
  ASSERT_TRUE(Upload("alpha", files, &uploaded).ok());
  EXPECT_EQ(uploaded.id(), "alpha");
  EXPECT_EQ(uploaded.rank(), 4);
  EXPECT_THAT(ListIds(), ::testing::ElementsAre("alpha"));

  v1::GenerateResponse with_adapter, without;
  ASSERT_TRUE(Generate(Request(Prompt(0), "alpha", 12), &with_adapter).ok());
  ASSERT_TRUE(Generate(Request(Prompt(0), "", 12), &without).ok());
  EXPECT_EQ(with_adapter.token_ids_size(), 12);
  EXPECT_EQ(with_adapter.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(with_adapter.usage().prompt_tokens(), 5);
  EXPECT_NE(std::vector<int32_t>(with_adapter.token_ids().begin(), with_adapter.token_ids().end()),
            std::vector<int32_t>(without.token_ids().begin(), without.token_ids().end()))
      << "the adapter should change greedy tokens";

  // A long stream on the adapter; unload after its first message.
  const int long_tokens = 1500;
  grpc::ClientContext stream_context;
  auto reader =
      inference_->GenerateStream(&stream_context, Request(Prompt(0), "alpha", long_tokens));
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  int streamed = message.token_ids_size();
  {
    grpc::ClientContext context;
    Authorize(&context);
    v1::UnloadAdapterRequest request;
    request.set_adapter_id("alpha");
    v1::UnloadAdapterResponse response;
    ASSERT_TRUE(admin_->UnloadAdapter(&context, request, &response).ok());
  }
  v1::GenerateResponse after;
  const grpc::Status not_found = Generate(Request(Prompt(0), "alpha", 4), &after);
  EXPECT_EQ(not_found.error_code(), grpc::StatusCode::NOT_FOUND) << not_found.error_message();
  EXPECT_TRUE(ListIds().empty());
  EXPECT_TRUE(StoreEntries().empty());
  std::vector<int32_t> final_tokens;
  while (reader->Read(&message)) {
    streamed += message.token_ids_size();
    if (message.has_final()) {
      final_tokens.assign(message.final().token_ids().begin(), message.final().token_ids().end());
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(streamed, long_tokens);
  ASSERT_EQ(final_tokens.size(), static_cast<size_t>(long_tokens));
  EXPECT_TRUE(std::equal(with_adapter.token_ids().begin(), with_adapter.token_ids().end(),
                         final_tokens.begin()))
      << "the in-flight stream kept using the unloaded adapter";

  ASSERT_TRUE(Upload("alpha", files).ok());
  v1::GenerateResponse again;
  ASSERT_TRUE(Generate(Request(Prompt(0), "alpha", 12), &again).ok());
  EXPECT_EQ(std::vector<int32_t>(again.token_ids().begin(), again.token_ids().end()),
            std::vector<int32_t>(with_adapter.token_ids().begin(), with_adapter.token_ids().end()));
}

TEST_F(GrpcServerTest, TextChatAndTokenizeUseTheModelTokenizer) {
  v1::GenerateRequest text;
  text.set_text("the adapter model");
  text.set_max_tokens(5);
  text.set_ignore_eos(true);
  text.set_return_prompt_ids(true);
  v1::GenerateResponse response;
  ASSERT_TRUE(Generate(text, &response).ok());
  EXPECT_EQ(response.token_ids_size(), 5);
  EXPECT_GT(response.prompt_ids_size(), 0);

  v1::TokenizeRequest tokenize;
  tokenize.set_text("the adapter model");
  tokenize.set_add_special_tokens(true);
  v1::TokenizeResponse ids;
  grpc::ClientContext context;
  ASSERT_TRUE(inference_->Tokenize(&context, tokenize, &ids).ok());
  EXPECT_TRUE(std::equal(ids.ids().begin(), ids.ids().end(), response.prompt_ids().begin(),
                         response.prompt_ids().end()));

  v1::GenerateRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hello");
  chat.set_max_tokens(3);
  chat.set_ignore_eos(true);
  v1::GenerateResponse chat_response;
  ASSERT_TRUE(Generate(chat, &chat_response).ok());
  EXPECT_EQ(chat_response.token_ids_size(), 3);

  v1::ModelInfo info;
  grpc::ClientContext info_context;
  ASSERT_TRUE(inference_->GetModelInfo(&info_context, {}, &info).ok());
  EXPECT_EQ(info.hidden_size(), 64);
  EXPECT_EQ(info.num_layers(), 2);
}

TEST_F(GrpcServerTest, StreamedTokensEqualUnaryTokens) {
  v1::GenerateResponse unary, final_message;
  ASSERT_TRUE(Generate(Request(Prompt(3), "", 20), &unary).ok());
  std::vector<int32_t> streamed;
  ASSERT_TRUE(Stream(Request(Prompt(3), "", 20), &streamed, &final_message).ok());
  EXPECT_EQ(streamed, std::vector<int32_t>(unary.token_ids().begin(), unary.token_ids().end()));
  EXPECT_EQ(final_message.usage().completion_tokens(), 20);
  EXPECT_GT(final_message.timings().total_seconds(), 0);
}

TEST_F(GrpcServerTest, LogprobsComeWithEveryTokenUnaryAndStreamed) {
  auto tokenizer = Tokenizer::FromFile(TinyModelDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  v1::GenerateRequest request = Request(Prompt(8), "", 10);
  request.set_logprobs(true);
  request.set_top_logprobs(3);
  v1::GenerateResponse unary;
  ASSERT_TRUE(Generate(request, &unary).ok());
  ASSERT_EQ(unary.token_ids_size(), 10);
  ASSERT_EQ(unary.logprobs_size(), 10);
  for (int i = 0; i < unary.token_ids_size(); ++i) {
    const v1::TokenLogprobs& lp = unary.logprobs(i);
    EXPECT_EQ(lp.chosen().token_id(), unary.token_ids(i));
    EXPECT_LT(lp.chosen().logprob(), 0.0f);
    ASSERT_EQ(lp.top_size(), 3);
    EXPECT_EQ(lp.top(0).token_id(), lp.chosen().token_id()) << "greedy";
    EXPECT_EQ(lp.top(0).logprob(), lp.chosen().logprob());
    for (const v1::TokenLogprob& t : lp.top()) {
      const int32_t id = t.token_id();
      EXPECT_EQ(t.text(), (*tokenizer)->Decode(std::span<const int32_t>(&id, 1), false));
    }
    EXPECT_EQ(lp.chosen().text(), lp.top(0).text());
  }

  // Streamed: each message's logprobs are parallel to its token ids; together, the unary ones.
  grpc::ClientContext context;
  auto reader = inference_->GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  std::vector<v1::TokenLogprobs> streamed;
  int final_logprobs = 0;
  while (reader->Read(&message)) {
    EXPECT_EQ(message.logprobs_size(), message.token_ids_size());
    for (int i = 0; i < message.logprobs_size(); ++i) {
      EXPECT_EQ(message.logprobs(i).chosen().token_id(), message.token_ids(i));
      streamed.push_back(message.logprobs(i));
    }
    if (message.has_final()) final_logprobs = message.final().logprobs_size();
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(streamed.size(), 10u);
  EXPECT_EQ(final_logprobs, 10);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(streamed[i].chosen().logprob(), unary.logprobs(i).chosen().logprob());
    EXPECT_EQ(streamed[i].top(2).token_id(), unary.logprobs(i).top(2).token_id());
  }

  // Only the flag: the chosen token, no alternatives. Neither: no logprobs at all.
  request.set_top_logprobs(0);
  v1::GenerateResponse chosen_only;
  ASSERT_TRUE(Generate(request, &chosen_only).ok());
  ASSERT_EQ(chosen_only.logprobs_size(), 10);
  EXPECT_EQ(chosen_only.logprobs(0).top_size(), 0);
  EXPECT_EQ(chosen_only.logprobs(0).chosen().logprob(), unary.logprobs(0).chosen().logprob());
  request.set_logprobs(false);
  request.set_min_tokens(10);
  v1::GenerateResponse none;
  ASSERT_TRUE(Generate(request, &none).ok());
  EXPECT_EQ(none.logprobs_size(), 0);
  EXPECT_EQ(none.token_ids_size(), 10);
}

TEST_F(GrpcServerTest, LogprobsAndMinTokensErrorsNameTheProtoField) {
  struct Case {
    int logprobs;  // -1: flag unset
    int top_logprobs;
    int min_tokens;
    std::string prefix;
  };
  const std::vector<Case> cases = {
      {-1, 2, 0, "top_logprobs: set logprobs = true"},
      {1, 21, 0, "top_logprobs: at most 20 alternatives"},
      {1, -1, 0, "top_logprobs: must be >= 0"},
      {-1, 0, 5, "min_tokens: 5 exceeds the most tokens to generate (max_tokens = 4)"},
      {-1, 0, -3, "min_tokens: must be >= 0"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest request = Request({1, 2, 3}, "", 4);
    request.set_logprobs(c.logprobs > 0);
    request.set_top_logprobs(c.top_logprobs);
    request.set_min_tokens(c.min_tokens);
    v1::GenerateResponse response;
    const grpc::Status s = Generate(request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.prefix;
    EXPECT_EQ(s.error_message().rfind(c.prefix, 0), 0u) << s.error_message();
  }
}

TEST_F(GrpcServerTest, StatusCodes) {
  v1::GenerateResponse response;
  // INVALID_ARGUMENT naming the field.
  v1::GenerateRequest no_prompt;
  grpc::Status s = Generate(no_prompt, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("prompt"));
  v1::GenerateRequest bad_token = Request({1, 100000}, "", 4);
  s = Generate(bad_token, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("token_ids.ids[1]"));
  v1::GenerateRequest bad_sampling = Request({1, 2}, "", 4);
  bad_sampling.mutable_sampling()->set_temperature(-1);
  s = Generate(bad_sampling, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("sampling"));
  // NOT_FOUND.
  s = Generate(Request({1, 2}, "nope", 4), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  // ALREADY_EXISTS.
  ASSERT_TRUE(Upload("dup", AdapterFiles(base_, 1)).ok());
  s = Upload("dup", AdapterFiles(base_, 2));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  // INVALID_ARGUMENT (not a retryable capacity error): prompt beyond the context, and a prompt
  // that fits but leaves too little room for max_tokens.
  s = Generate(Request(std::vector<int32_t>(base_.max_position_embeddings + 1, 5), "", 4),
               &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("token_ids"));
  s = Generate(Request(std::vector<int32_t>(base_.max_position_embeddings - 2, 5), "", 4),
               &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("max_tokens"));
  // DEADLINE_EXCEEDED.
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(30));
    s = inference_->Generate(&context, Request(Prompt(1), "", 1900), &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // UNAUTHENTICATED (missing and wrong token), PERMISSION_DENIED (path outside the root).
  {
    grpc::ClientContext context;
    v1::ListAdaptersResponse list;
    EXPECT_EQ(admin_->ListAdapters(&context, {}, &list).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext wrong;
    Authorize(&wrong, "not-the-token");
    EXPECT_EQ(admin_->ListAdapters(&wrong, {}, &list).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext upload_context;
    v1::AdapterStatus status;
    auto writer = admin_->UploadAdapter(&upload_context, &status);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    TempDir outside;
    WriteAdapterDir(outside.path() + "/a", AdapterFiles(base_, 3));
    grpc::ClientContext context;
    Authorize(&context);
    v1::LoadAdapterRequest request;
    request.set_adapter_id("outside");
    request.set_path(outside.path() + "/a");
    v1::AdapterStatus status;
    EXPECT_EQ(admin_->LoadAdapter(&context, request, &status).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    WriteAdapterDir(load_root_.path() + "/inside", AdapterFiles(base_, 3));
    grpc::ClientContext ok_context;
    Authorize(&ok_context);
    request.set_adapter_id("inside");
    request.set_path(load_root_.path() + "/inside");
    EXPECT_TRUE(admin_->LoadAdapter(&ok_context, request, &status).ok());
    grpc::ClientContext escape_context;
    Authorize(&escape_context);
    request.set_adapter_id("escape");
    request.set_path(load_root_.path() + "/../" +
                     std::filesystem::path(outside.path()).filename().string() + "/a");
    EXPECT_EQ(admin_->LoadAdapter(&escape_context, request, &status).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  // A fuse request without a new adapter id names the missing field.
  {
    grpc::ClientContext context;
    Authorize(&context);
    v1::AdapterStatus status;
    grpc::Status result = admin_->FuseAdapters(&context, {}, &status);
    EXPECT_EQ(result.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(result.error_message().find("new_adapter_id"), std::string::npos);
  }
}

TEST_F(GrpcServerTest, ClientCancelFreesTheRequest) {
  grpc::ClientContext context;
  auto reader = inference_->GenerateStream(&context, Request(Prompt(2), "", 1900));
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The engine frees the request at its next step.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  EngineStats stats = server_->engine()->Stats();
  while ((stats.running > 0 || stats.kv_pages_used > 0) &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stats = server_->engine()->Stats();
  }
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.kv_pages_used, 0);
}

TEST_F(GrpcServerTest, CorruptUploadsAreRejectedAndChangeNothing) {
  ASSERT_TRUE(Upload("good", AdapterFiles(base_, 5)).ok());
  const std::vector<std::string> ids_before = ListIds();
  const std::vector<std::string> store_before = StoreEntries();

  auto expect_rejected = [&](const std::string& id, const std::map<std::string, std::string>& files,
                             grpc::StatusCode code, const std::string& fragment) {
    const grpc::Status s = Upload(id, files);
    EXPECT_EQ(s.error_code(), code) << id << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(fragment)) << id;
    EXPECT_EQ(ListIds(), ids_before) << id;
    EXPECT_EQ(StoreEntries(), store_before) << id;
  };

  auto bad_header = AdapterFiles(base_, 6);
  bad_header["adapter_model.safetensors"] = std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{", 9);
  expect_rejected("bad-header", bad_header, grpc::StatusCode::INVALID_ARGUMENT, "safetensors");

  // Shapes of a different base model (hidden 16 instead of 64).
  auto wrong_shapes = AdapterFiles(TinyBase(), 6);
  expect_rejected("wrong-shapes", wrong_shapes, grpc::StatusCode::INVALID_ARGUMENT, "shape");

  // A NaN inside lora_B.
  std::vector<TestTensor> tensors;
  AddModule(tensors, base_, 0, Module::kQ, 4);
  tensors[1].values[3] = std::nanf("");
  auto nan_files = AdapterFiles(base_, 6);
  nan_files["adapter_config.json"] =
      LoraConfigJson({{"r", 4}, {"target_modules", {"q_proj"}}, {"layers_to_transform", {0}}});
  nan_files["adapter_model.safetensors"] = SafetensorsBytes(tensors);
  expect_rejected("nan", nan_files, grpc::StatusCode::INVALID_ARGUMENT, "finite");

  // One module of rank 513, one above the default --max-lora-rank (small enough to upload).
  std::vector<TestTensor> high_rank;
  AddModule(high_rank, base_, 0, Module::kQ, 513);
  auto rank_files = AdapterFiles(base_, 6);
  rank_files["adapter_config.json"] =
      LoraConfigJson({{"r", 513}, {"target_modules", {"q_proj"}}, {"layers_to_transform", {0}}});
  rank_files["adapter_model.safetensors"] = SafetensorsBytes(high_rank);
  expect_rejected("rank-too-high", rank_files, grpc::StatusCode::INVALID_ARGUMENT, "rank 513");
  expect_rejected("../x", AdapterFiles(base_, 6), grpc::StatusCode::INVALID_ARGUMENT, "adapter_id");

  auto oversize = AdapterFiles(base_, 6);
  oversize["README.md"] = std::string(2 << 20, 'x');
  expect_rejected("oversize", oversize, grpc::StatusCode::RESOURCE_EXHAUSTED, "--max-upload-bytes");

  auto wrong_sha = AdapterFiles(base_, 6);
  const grpc::Status sha = Upload("wrong-sha", wrong_sha, nullptr, 4096, std::string(64, '0'));
  EXPECT_EQ(sha.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << sha.error_message();
  EXPECT_EQ(ListIds(), ids_before);
  EXPECT_EQ(StoreEntries(), store_before);
}

TEST_F(GrpcServerTest, StoredAdaptersAreRegisteredAtRestart) {
  ASSERT_TRUE(Upload("persisted", AdapterFiles(base_, 9)).ok());
  v1::GenerateResponse before;
  ASSERT_TRUE(Generate(Request(Prompt(4), "persisted", 8), &before).ok());
  server_->Shutdown(std::chrono::seconds(1));
  server_.reset();
  StartServer();
  EXPECT_THAT(ListIds(), ::testing::ElementsAre("persisted"));
  v1::GenerateResponse after;
  ASSERT_TRUE(Generate(Request(Prompt(4), "persisted", 8), &after).ok());
  EXPECT_EQ(std::vector<int32_t>(before.token_ids().begin(), before.token_ids().end()),
            std::vector<int32_t>(after.token_ids().begin(), after.token_ids().end()));
}

// A restart registers stored adapters from their manifests' index entries (nothing is parsed
// until a request needs it), and a weights file damaged after it was stored (same size, so the
// start-up scan passes) fails only the requests for that adapter, with DATA_LOSS.
TEST_F(GrpcServerTest, RestartRegistersIndexEntriesAndADamagedStoreFileFailsOnlyItsRequests) {
  ASSERT_TRUE(Upload("good", AdapterFiles(base_, 21)).ok());
  ASSERT_TRUE(Upload("bad", AdapterFiles(base_, 22)).ok());
  v1::GenerateResponse before;
  ASSERT_TRUE(Generate(Request(Prompt(6), "good", 8), &before).ok());
  server_->Shutdown(std::chrono::seconds(1));
  server_.reset();
  const std::string store = store_.path() + "/store";
  {
    std::ifstream manifest(std::filesystem::path(store) / "bad" / kStoreManifestFile);
    const std::string text((std::istreambuf_iterator<char>(manifest)), {});
    EXPECT_THAT(text, ::testing::HasSubstr("\"index\""));
    EXPECT_THAT(text, ::testing::HasSubstr("\"max_rank\""));
  }
  {
    std::fstream weights(std::filesystem::path(store) / "bad" / "adapter_model.safetensors",
                         std::ios::in | std::ios::out | std::ios::binary);
    weights.seekg(-3, std::ios::end);
    char byte = 0;
    weights.read(&byte, 1);
    weights.seekp(-3, std::ios::end);
    byte ^= 0x40;
    weights.write(&byte, 1);
  }
  StartServer();
  grpc::ClientContext list_context;
  Authorize(&list_context);
  v1::ListAdaptersResponse listed;
  ASSERT_TRUE(admin_->ListAdapters(&list_context, {}, &listed).ok());
  ASSERT_EQ(listed.adapters_size(), 2);
  for (const v1::AdapterStatus& adapter : listed.adapters()) {
    EXPECT_EQ(adapter.state(), v1::ADAPTER_STATE_STORED) << adapter.id();
    EXPECT_EQ(adapter.rank(), 4) << adapter.id();  // AdapterFiles' rank, from the index
  }
  v1::GenerateResponse failed;
  const grpc::Status damaged = Generate(Request(Prompt(6), "bad", 8), &failed);
  EXPECT_EQ(damaged.error_code(), grpc::StatusCode::DATA_LOSS) << damaged.error_message();
  EXPECT_THAT(damaged.error_message(), ::testing::HasSubstr("adapter 'bad'"));
  EXPECT_THAT(damaged.error_message(), ::testing::HasSubstr("sha256"));
  v1::GenerateResponse after;
  ASSERT_TRUE(Generate(Request(Prompt(6), "good", 8), &after).ok());
  EXPECT_EQ(std::vector<int32_t>(before.token_ids().begin(), before.token_ids().end()),
            std::vector<int32_t>(after.token_ids().begin(), after.token_ids().end()));
  EXPECT_EQ(server_->engine()->Stats().host_load_failures, 1);
  EXPECT_EQ(server_->engine()->Stats().host_loads, 1);
}

TEST_F(GrpcServerTest, ShutdownDrainsInFlightStreamsAndRefusesNewWork) {
  grpc::ClientContext context;
  auto reader = inference_->GenerateStream(&context, Request(Prompt(5), "", 600));
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));
  int streamed = message.token_ids_size();
  std::thread shutdown([&] { EXPECT_TRUE(server_->Shutdown(std::chrono::seconds(60))); });
  while (reader->Read(&message)) streamed += message.token_ids_size();
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  EXPECT_EQ(streamed, 600);
  shutdown.join();
  v1::GenerateResponse response;
  EXPECT_EQ(Generate(Request(Prompt(5), "", 4), &response).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(GrpcServerTest, HundredConcurrentStreamsOverTwentyAdaptersMatchSoloRuns) {
  constexpr int kAdapters = 20, kRequests = 100, kTokens = 12;
  for (int i = 0; i < kAdapters; ++i) {
    ASSERT_TRUE(Upload("a" + std::to_string(i), AdapterFiles(base_, 100 + i)).ok());
  }
  std::vector<v1::GenerateRequest> requests;
  std::vector<std::vector<int32_t>> alone(kRequests);
  for (int r = 0; r < kRequests; ++r) {
    requests.push_back(Request(Prompt(r), "a" + std::to_string(r % kAdapters), kTokens));
    ASSERT_TRUE(Stream(requests.back(), &alone[r]).ok());
    ASSERT_EQ(alone[r].size(), static_cast<size_t>(kTokens));
  }
  std::vector<std::vector<int32_t>> together(kRequests);
  std::vector<grpc::Status> statuses(kRequests);
  std::vector<std::thread> clients;
  for (int r = 0; r < kRequests; ++r) {
    clients.emplace_back([&, r] { statuses[r] = Stream(requests[r], &together[r]); });
  }
  for (auto& t : clients) t.join();
  for (int r = 0; r < kRequests; ++r) {
    EXPECT_TRUE(statuses[r].ok()) << r << ": " << statuses[r].error_message();
    EXPECT_EQ(together[r], alone[r]) << "request " << r;
  }
}

TEST_F(GrpcServerTest, MetricsEndpointServesPrometheusText) {
  ASSERT_TRUE(Upload("m", AdapterFiles(base_, 7)).ok());
  v1::GenerateResponse response;
  ASSERT_TRUE(Generate(Request(Prompt(6), "m", 5), &response).ok());
  const std::string text = server_->state().metrics().Scrape(server_->engine(), 128, 1);
  EXPECT_THAT(text, HasSubstr("loraserve_requests_total{adapter=\"m\",status=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("loraserve_generation_tokens_total{adapter=\"m\"} 5\n"));
  // Residency: the adapter stays listed as running once its request finished (idle in the pool).
  EXPECT_THAT(text, HasSubstr("loraserve_lora_requests_info{max_lora=\"128\",running_lora_"
                              "adapters=\"m\",waiting_lora_adapters=\"\"} "));
  EXPECT_THAT(text, HasSubstr("loraserve_time_to_first_token_seconds_count 1\n"));
}

TEST_F(GrpcServerTest, GetStatsAndEveryScrapeSeeTheSameAdapterLoads) {
  ASSERT_TRUE(Upload("h", AdapterFiles(base_, 8)).ok());
  v1::GenerateResponse response;
  ASSERT_TRUE(Generate(Request(Prompt(7), "h", 3), &response).ok());  // loads "h" into the pool
  auto get_stats = [&] {
    grpc::ClientContext context;
    Authorize(&context);
    v1::Stats stats;
    const grpc::Status status = admin_->GetStats(&context, {}, &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return stats;
  };
  const v1::Stats first = get_stats();
  EXPECT_GE(first.adapter_loads(), 1);
  EXPECT_EQ(get_stats().adapter_loads(), first.adapter_loads());

  // Reading the engine's statistics once used to drain the load samples: now every reader sees
  // the whole cumulative histogram.
  httplib::Client http("127.0.0.1", server_->metrics_port());
  auto load_count = [&]() -> std::string {
    auto reply = http.Get("/metrics");
    if (!reply || reply->status != 200) return "no /metrics reply";
    const std::string key = "\nloraserve_adapter_pool_load_duration_seconds_count ";
    const size_t at = reply->body.find(key);
    if (at == std::string::npos) return "no load histogram";
    const size_t begin = at + key.size();
    return reply->body.substr(begin, reply->body.find('\n', begin) - begin);
  };
  const std::string after_get_stats = load_count();
  EXPECT_EQ(after_get_stats, std::to_string(first.adapter_loads()));
  EXPECT_EQ(load_count(), after_get_stats) << "the first scrape consumed the samples";
  EXPECT_EQ(get_stats().adapter_loads(), first.adapter_loads());
}

}  // namespace
}  // namespace loraserve::testing
