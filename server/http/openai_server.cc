#include "server/http/openai_server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "server/http/generation_exchange.h"
#include "server/http/http_reply.h"
#include "server/http/openai_response.h"
#include "server/metrics_http.h"

namespace loraserve::server::http {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// A non-streamed request still running after this long answers with chunked spaces (JSON
// allows leading whitespace) until it finishes: the write that fails tells a vanished client
// apart, so its generation is cancelled instead of running on for nobody.
constexpr milliseconds kPlainAnswerWait{2000};
constexpr milliseconds kHeartbeat{1000};

void Send(httplib::Response& res, const HttpReply& reply) {
  res.status = reply.status;
  for (const auto& [name, value] : reply.headers) res.set_header(name, value);
  res.set_content(reply.body, reply.content_type);
}

void SendError(httplib::Response& res, const HttpError& error) { Send(res, ErrorReply(error)); }

std::string RandomHex(size_t bytes) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const uint64_t v = rng();
    out.push_back(kHex[v & 15]);
    out.push_back(kHex[(v >> 4) & 15]);
  }
  return out;
}

uint64_t RandomSeed() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsLoopback(const std::string& address) {
  return address == "127.0.0.1" || address == "::1" || address.rfind("127.", 0) == 0 ||
         address == "::ffff:127.0.0.1";
}

std::string ServedName(const HttpOptions& options, const std::string& model_dir) {
  return options.served_model_name.empty() ? model_dir : options.served_model_name;
}

std::vector<std::string> BaseNames(const std::string& served, const std::string& model_dir) {
  std::vector<std::string> names = {served, model_dir};
  std::error_code ec;
  const auto canonical = std::filesystem::weakly_canonical(model_dir, ec);
  if (!ec) {
    names.push_back(canonical.string());
    names.push_back(canonical.filename().string());
  }
  return names;
}

// Builds each choice's input: the adapters `model` (or merged_adapters) names.
absl::StatusOr<std::vector<AdapterInput>> AdaptersFor(const OpenAiRequest& request,
                                                      const std::string& served_name,
                                                      AdapterManager& adapters,
                                                      LoraRoutes& lora) {
  std::vector<AdapterInput> out;
  const bool base = request.model == served_name;
  if (!base) {
    if (absl::Status s = lora.Resolve(adapters, request.model); !s.ok()) return s;
    if (request.merged_adapters.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "merged_adapters: conflicts with model '", request.model,
          "', which names an adapter; send merged_adapters with model = the base model ('",
          served_name, "')"));
    }
    out.push_back({request.model, 1.0f, "model", "model"});
    return out;
  }
  if (request.merged_adapters.has_value()) {
    const MergedAdaptersInput& m = *request.merged_adapters;
    for (size_t i = 0; i < m.ids.size(); ++i) {
      const std::string field = absl::StrCat("merged_adapters.ids[", i, "]");
      if (absl::Status s = lora.Resolve(adapters, m.ids[i]); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(field, ": adapter '", m.ids[i],
                                                   "' does not exist"));
      }
      out.push_back({m.ids[i], m.weights[i], field,
                     absl::StrCat("merged_adapters.weights[", i, "]")});
    }
  }
  return out;
}

// What a streamed response has sent so far.
struct StreamProgress {
  bool opened = false;
  int finished = 0;
  bool failed = false;
  std::vector<size_t> text_offsets;      // completions' logprobs text_offset per choice
  std::vector<int> prompt_tokens;        // per prompt, from its first finished choice
  int completion_tokens = 0;
};

}  // namespace

OpenAiHttpServer::OpenAiHttpServer(HttpOptions options, std::string model_dir,
                                   std::string admin_token, ServingState* state,
                                   std::function<std::string()> metrics)
    : options_(std::move(options)),
      model_dir_(std::move(model_dir)),
      served_name_(ServedName(options_, model_dir_)),
      state_(state),
      metrics_(std::move(metrics)),
      api_auth_(options_.api_key, /*required=*/false, ""),
      admin_auth_(std::move(admin_token), /*required=*/true,
                  "the LoRA endpoints are disabled: start the server with --admin-token (or "
                  "--allow-loopback-lora-updates for a sidecar in the pod)"),
      lora_(options_.lora_resolver_dir, BaseNames(served_name_, model_dir_)),
      created_unix_(UnixNow()) {}

absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Start(
    HttpOptions options, std::string model_dir, std::string admin_token, ServingState* state,
    std::function<std::string()> metrics) {
  auto host_port = SplitHostPort(options.listen, "--http-listen");
  if (!host_port.ok()) return host_port.status();
  std::unique_ptr<OpenAiHttpServer> server(new OpenAiHttpServer(
      std::move(options), std::move(model_dir), std::move(admin_token), state,
      std::move(metrics)));
  const HttpOptions& o = server->options_;
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return absl::InvalidArgumentError("--http-tls-cert and --http-tls-key must be given together");
  }
  if (!o.tls_client_ca.empty() && o.tls_cert.empty()) {
    return absl::InvalidArgumentError(
        "--http-tls-client-ca needs --http-tls-cert and --http-tls-key");
  }
  if (o.tls_cert.empty()) {
    server->http_ = std::make_unique<httplib::Server>();
  } else {
    auto tls = std::make_unique<httplib::SSLServer>(
        o.tls_cert.c_str(), o.tls_key.c_str(),
        o.tls_client_ca.empty() ? nullptr : o.tls_client_ca.c_str());
    if (!tls->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--http-tls-cert ", o.tls_cert, ", --http-tls-key ", o.tls_key,
          o.tls_client_ca.empty() ? "" : absl::StrCat(", --http-tls-client-ca ", o.tls_client_ca),
          ": cannot be loaded (PEM files, the key matching the certificate)"));
    }
    // httplib allows TLS 1.1; nothing that speaks the OpenAI API needs less than 1.2.
    SSL_CTX_set_min_proto_version(tls->ssl_context(), TLS1_2_VERSION);
    server->http_ = std::move(tls);
  }
  httplib::Server& http = *server->http_;
  const int threads = std::max(2, server->options_.threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(server->options_.max_body_bytes);
  http.set_read_timeout(server->options_.read_timeout_seconds, 0);
  http.set_write_timeout(30, 0);
  http.set_keep_alive_timeout(30);
  http.set_keep_alive_max_count(10000);  // clients and the picker reuse connections
  server->Routes();
  const auto& [host, port] = *host_port;
  server->port_ = port == 0 ? http.bind_to_any_port(host)
                            : (http.bind_to_port(host, port) ? port : -1);
  if (server->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("--http-listen: cannot listen on ",
                                               server->options_.listen,
                                               " (in use or bad address)"));
  }
  httplib::Server* raw = server->http_.get();
  server->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  return server;
}

OpenAiHttpServer::~OpenAiHttpServer() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

bool OpenAiHttpServer::Authorized(const httplib::Request& req, httplib::Response& res) {
  const std::string header = req.get_header_value("Authorization");
  absl::Status s = api_auth_.CheckHeader(req.has_header("Authorization") ? &header : nullptr);
  if (s.ok()) return true;
  SendError(res, HttpError{401, "Unauthorized: send the API key as 'Authorization: Bearer <key>'",
                           "AuthenticationError", ""});
  return false;
}

void OpenAiHttpServer::Routes() {
  httplib::Server& http = *http_;
  auto health = [this](const httplib::Request&, httplib::Response& res) {
    auto ready = state_->Ready();
    if (ready.ok()) {
      res.status = 200;
      return;
    }
    res.status = 503;
    res.set_header("retry-after", "1");
    res.set_content(std::string(ready.status().message()), "text/plain; charset=utf-8");
  };
  http.Get("/health", health);
  http.Get("/ping", health);
  http.Post("/ping", health);
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    // The LoRA syncer reads the loaded set here, without a key, from inside the pod.
    const bool syncer = options_.allow_loopback_lora_updates && IsLoopback(req.remote_addr);
    if (syncer || Authorized(req, res)) Models(req, res, nullptr);
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (Authorized(req, res)) Models(req, res, &id);
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    if (Authorized(req, res)) Generate(ApiKind::kCompletion, req, res);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    if (Authorized(req, res)) Generate(ApiKind::kChat, req, res);
  });
  http.Post("/v1/load_lora_adapter", [this](const httplib::Request& req, httplib::Response& res) {
    LoraUpdate(/*load=*/true, req, res);
  });
  http.Post("/v1/unload_lora_adapter",
            [this](const httplib::Request& req, httplib::Response& res) {
              LoraUpdate(/*load=*/false, req, res);
            });
  // httplib calls this for every status >= 400 it answers itself (unknown route: 404; body over
  // the limit: 413; bad request line: 400), and after a handler that set no body.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = res.status == 404   ? absl::StrCat("no route ", req.method, " ", req.path)
                          : res.status == 413 ? "the request body is too large"
                                              : "bad request";
    HttpError error{res.status, message, ErrorType(res.status), ""};
    res.set_content(ErrorJson(error), "application/json");
  });
  http.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("http {} {}: {}", req.method, req.path, what);
        SendError(res, HttpError{500, "internal error: " + what, "InternalServerError", ""});
      });
}

void OpenAiHttpServer::Models(const httplib::Request&, httplib::Response& res,
                              const std::string* id) {
  auto core = state_->Ready();
  if (!core.ok()) return SendError(res, FromStatus(core.status()));
  auto permission = [this](const std::string& suffix) {
    return json::array({{{"id", "modelperm-" + suffix},
                         {"object", "model_permission"},
                         {"created", created_unix_},
                         {"allow_create_engine", false},
                         {"allow_sampling", true},
                         {"allow_logprobs", true},
                         {"allow_search_indices", false},
                         {"allow_view", true},
                         {"allow_fine_tuning", false},
                         {"organization", "*"},
                         {"group", nullptr},
                         {"is_blocking", false}}});
  };
  json cards = json::array();
  cards.push_back({{"id", served_name_},
                   {"object", "model"},
                   {"created", created_unix_},
                   {"owned_by", "loraserve"},
                   {"root", model_dir_},
                   {"parent", nullptr},
                   {"max_model_len", (*core)->engine->model_config().max_position_embeddings},
                   {"permission", permission("base")}});
  for (const ManagedAdapter& adapter : (*core)->adapters->List()) {
    cards.push_back({{"id", adapter.info.id},
                     {"object", "model"},
                     {"created", created_unix_},
                     {"owned_by", "loraserve"},
                     {"root", adapter.source.empty() ? adapter.info.id : adapter.source},
                     {"parent", served_name_},
                     {"max_model_len", nullptr},
                     {"permission", permission(adapter.info.id)}});
  }
  if (id != nullptr) {
    for (const json& card : cards) {
      if (card["id"] == *id) return res.set_content(DumpJson(card), "application/json");
    }
    return SendError(res, NotFound(absl::StrCat("The model `", *id, "` does not exist."), "model"));
  }
  res.set_content(DumpJson({{"object", "list"}, {"data", std::move(cards)}}), "application/json");
}

void OpenAiHttpServer::LoraUpdate(bool load, const httplib::Request& req,
                                  httplib::Response& res) {
  const bool loopback_ok = options_.allow_loopback_lora_updates && IsLoopback(req.remote_addr);
  if (!loopback_ok) {
    const std::string header = req.get_header_value("Authorization");
    absl::Status s = admin_auth_.CheckHeader(req.has_header("Authorization") ? &header : nullptr);
    if (!s.ok()) return SendError(res, FromStatus(s));
  }
  auto core = state_->Ready();
  if (!core.ok()) return SendError(res, FromStatus(core.status()));
  AdapterManager& adapters = *(*core)->adapters;
  const HttpReply reply = load ? lora_.Load(adapters, req.body) : lora_.Unload(adapters, req.body);
  spdlog::info("http {} {}: {}", req.path, req.remote_addr, reply.status);
  Send(res, reply);
}

void OpenAiHttpServer::Generate(ApiKind kind, const httplib::Request& req,
                                httplib::Response& res) {
  const bool chat = kind == ApiKind::kChat;
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return SendError(res, BadRequest("the body is not valid JSON", "body"));
  }
  auto parsed = ParseOpenAiRequest(kind, body, RandomSeed());
  if (!parsed.ok()) return SendError(res, FromStatus(parsed.status()));
  auto core = state_->Ready();
  if (!core.ok()) return SendError(res, FromStatus(core.status()));
  auto adapters = AdaptersFor(*parsed, served_name_, *(*core)->adapters, lora_);
  if (!adapters.ok()) return SendError(res, FromStatus(adapters.status()));

  auto request = std::make_shared<OpenAiRequest>(*std::move(parsed));
  std::vector<absl::StatusOr<GenerationInput>> inputs;
  for (ChoiceInput& choice : request->choices) {
    choice.input.adapters = *adapters;
    inputs.push_back(choice.input);
  }
  const int count = static_cast<int>(request->choices.size());
  auto exchange = GenerationExchange::Create(state_, count);
  exchange->Start(std::move(inputs));

  // A choice refused at submission (bad field, queue full, ...) fails the whole request with
  // its status, before any byte is sent.
  for (int i = 0; i < count; ++i) {
    auto outcome = exchange->outcome(i);
    if (outcome.has_value() && !outcome->status.ok() && outcome->token_ids.empty()) {
      exchange->CancelAll();
      return SendError(res, FromStatus(outcome->status));
    }
  }

  const Tokenizer* tokenizer = (*core)->tokenizer;
  TokenTextFn token_text = [tokenizer](int32_t id) {
    return tokenizer != nullptr ? tokenizer->Decode(std::span<const int32_t>(&id, 1), false)
                                : std::string();
  };
  auto header = std::make_shared<ResponseHeader>();
  header->id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", RandomHex(16));
  header->created = UnixNow();
  header->model = request->model;
  res.set_header("x-request-id", header->id);

  if (!request->stream) {
    auto answer = [request, exchange, header, token_text, chat]() -> HttpReply {
      std::vector<FinishedChoice> choices;
      std::vector<int> prompt_tokens(request->num_prompts, 0);
      int completion_tokens = 0;
      for (const ChoiceInput& choice : request->choices) {
        const GenerationOutcome outcome = *exchange->outcome(choice.index);
        if (!outcome.status.ok()) return ErrorReply(FromStatus(outcome.status));
        FinishedChoice c;
        c.index = choice.index;
        c.text = outcome.text;
        if (request->echo) c.text = request->prompt_texts[choice.prompt_index] + c.text;
        c.finish_reason = outcome.finish_reason;
        if (request->logprobs) {
          size_t offset = 0;
          c.logprobs = chat ? ChatLogprobsJson(outcome.logprobs, token_text)
                            : CompletionLogprobsJson(outcome.logprobs, token_text, &offset);
        }
        prompt_tokens[choice.prompt_index] = outcome.usage.prompt_tokens;
        completion_tokens += outcome.usage.completion_tokens;
        choices.push_back(std::move(c));
      }
      int prompt_total = 0;
      for (int p : prompt_tokens) prompt_total += p;
      const json usage = UsageJson(prompt_total, completion_tokens);
      HttpReply reply;
      reply.body = DumpJson(chat ? ChatCompletionJson(*header, choices, usage)
                                 : CompletionJson(*header, choices, usage));
      return reply;
    };
    if (exchange->WaitFinished(kPlainAnswerWait)) return Send(res, answer());
    // Long generation: keep the status line honest (200: it was accepted) and watch the
    // connection with whitespace until the answer is ready.
    res.set_chunked_content_provider(
        "application/json",
        [exchange, answer](size_t, httplib::DataSink& sink) {
          if (!exchange->WaitFinished(kHeartbeat)) return sink.write(" ", 1);
          const HttpReply reply = answer();
          if (!sink.write(reply.body.data(), reply.body.size())) return false;
          sink.done();
          return true;
        },
        [exchange](bool success) {
          if (!success) exchange->CancelAll();
        });
    return;
  }

  // Streaming: server-sent events exactly as OpenAI frames them.
  auto progress = std::make_shared<StreamProgress>();
  progress->text_offsets.assign(count, 0);
  progress->prompt_tokens.assign(request->num_prompts, 0);
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [request, exchange, header, token_text, progress, chat](size_t, httplib::DataSink& sink) {
        const bool usage_field = request->include_usage;
        auto write = [&sink](const std::string& frame) {
          return sink.write(frame.data(), frame.size());
        };
        if (!progress->opened) {
          progress->opened = true;
          for (const ChoiceInput& choice : request->choices) {
            std::string frame;
            if (chat) {
              frame = SseFrame(ChatChunkJson(*header, choice.index,
                                             {{"role", "assistant"}, {"content", ""}}, nullptr,
                                             nullptr, usage_field));
            } else if (request->echo) {
              frame = SseFrame(CompletionChunkJson(*header, choice.index,
                                                   request->prompt_texts[choice.prompt_index],
                                                   nullptr, nullptr, usage_field));
            }
            if (!frame.empty() && !write(frame)) return false;
          }
        }
        std::deque<GenerationExchange::Event> events;
        if (!exchange->WaitEvents(&events, kHeartbeat)) {
          // An SSE comment: clients skip it; a failed write means the client is gone.
          return write(": keep-alive\n\n");
        }
        for (GenerationExchange::Event& event : events) {
          const ChoiceInput& choice = request->choices[event.choice];
          if (event.token.has_value()) {
            const TokenEvent& token = *event.token;
            json logprobs = nullptr;
            if (request->logprobs && token.logprobs.has_value()) {
              std::vector<TokenLogprobs> one = {*token.logprobs};
              logprobs = chat ? ChatLogprobsJson(one, token_text)
                              : CompletionLogprobsJson(one, token_text,
                                                       &progress->text_offsets[event.choice]);
            }
            if (token.text.empty() && logprobs.is_null()) continue;
            const json chunk =
                chat ? ChatChunkJson(*header, choice.index, {{"content", token.text}},
                                     std::move(logprobs), nullptr, usage_field)
                     : CompletionChunkJson(*header, choice.index, token.text,
                                           std::move(logprobs), nullptr, usage_field);
            if (!write(SseFrame(chunk))) return false;
            continue;
          }
          const GenerationOutcome& outcome = *event.finish;
          ++progress->finished;
          if (!outcome.status.ok()) {
            // The openai client raises APIError on a chunk with an `error` key.
            progress->failed = true;
            const HttpError error = FromStatus(outcome.status);
            if (!write("data: " + ErrorJson(error) + "\n\n")) return false;
            continue;
          }
          progress->prompt_tokens[choice.prompt_index] = outcome.usage.prompt_tokens;
          progress->completion_tokens += outcome.usage.completion_tokens;
          const char* reason = FinishReasonString(outcome.finish_reason);
          const json chunk =
              chat ? ChatChunkJson(*header, choice.index, json::object(), nullptr, reason,
                                   usage_field)
                   : CompletionChunkJson(*header, choice.index, "", nullptr, reason,
                                         usage_field);
          if (!write(SseFrame(chunk))) return false;
        }
        if (progress->finished < exchange->size()) return true;
        if (request->include_usage && !progress->failed) {
          int prompt_total = 0;
          for (int p : progress->prompt_tokens) prompt_total += p;
          if (!write(SseFrame(UsageChunkJson(
                  *header, chat, UsageJson(prompt_total, progress->completion_tokens))))) {
            return false;
          }
        }
        if (!write("data: [DONE]\n\n")) return false;
        sink.done();
        return true;
      },
      [exchange](bool success) {
        if (!success) exchange->CancelAll();
      });
}

}  // namespace loraserve::server::http
