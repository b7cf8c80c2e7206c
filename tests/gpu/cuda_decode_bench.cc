// End-to-end decode throughput through the Engine on whichever backend --device picks (the CUDA
// backend on a GPU machine, the CPU backend here), with 0, 1, 64 and 1024 distinct rank-16
// adapters on q,k,v,o,gate,up,down, side by side in one process on one engine. Rounds interleave
// the cases and each case is reported as a ratio to base of the same round, so drift between
// rounds cancels. tests/gpu/decode_bench.sh runs it next to the PEFT peer on the same GPU.
//
// Every case submits the same --requests greedy, ignore_eos requests at once. The request count
// stays fixed: with A adapters, request i of the k-th run of a case takes adapter
// (k * requests + i) mod A, so the 1024-adapter case cycles through all 1024 resident adapters
// over its runs while each batch holds min(requests, A) distinct ones. The timed window runs
// from the moment every request has its first token (all prefill done) to the last token.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "adapters/lora_adapter.h"
#include "runtime/adapter_pool.h"
#include "runtime/backend/device.h"
#include "runtime/engine.h"
#include "runtime/llama_model.h"
#include "tests/gpu/decode_window.h"

namespace loraserve {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string model;
  std::string device = "auto";
  int requests = 64;
  int rounds = 3;
  int prompt_tokens = 32;
  int new_tokens = 64;
  int rank = 16;
  std::vector<int> cases = {0, 1, 64, 1024};  // adapter counts; 0 = base
  std::string adapter_dtype = "bf16";
  std::string weight_dtype = "auto";
  int cpu_threads = 0;
  int64_t pool_mb = 0;  // 0 = sized for the largest case
  double max_seconds = 120;
  std::string json;
};

constexpr Module kTargets[] = {Module::kQ,    Module::kK,  Module::kV,   Module::kO,
                               Module::kGate, Module::kUp, Module::kDown};

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "cuda_decode_bench: " << message << "\n";
  std::exit(1);
}

// "a" + std::to_string(i) trips GCC 12's -Wrestrict false positive; appending does not.
std::string AdapterId(int64_t index) {
  std::string id = "a";
  id += std::to_string(index);
  return id;
}

std::string CaseName(int adapters) {
  if (adapters == 0) return "base";
  return std::to_string(adapters) + (adapters == 1 ? "_adapter" : "_adapters");
}

constexpr char kUsage[] =
    "usage: cuda_decode_bench --model DIR [--device auto|cpu|cuda] [--requests N] [--rounds N]\n"
    "  [--prompt-tokens N] [--new-tokens N] [--cases base,1,64,1024] [--rank N]\n"
    "  [--adapter-dtype auto|fp32|bf16] [--weight-dtype auto|fp32|bf16|fp16] [--cpu-threads N]\n"
    "  [--pool-mb N (0 = sized for the largest case)] [--max-seconds S (per run of a case)]\n"
    "  [--json PATH]";

int ParseInt(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') Die(flag + " takes an integer, got '" + v + "'");
  return static_cast<int>(n);
}

std::vector<int> ParseCases(const std::string& list) {
  std::vector<int> cases;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item == "base" || item == "0") {
      cases.push_back(0);
    } else {
      const int n = ParseInt("--cases", item);
      if (n < 1) Die("--cases: '" + item + "' is neither base nor a positive adapter count");
      cases.push_back(n);
    }
  }
  if (cases.empty()) Die("--cases is empty");
  if (std::find(cases.begin(), cases.end(), 0) == cases.end()) {
    cases.insert(cases.begin(), 0);  // ratios are to base
  }
  return cases;
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage << "\n";
      std::exit(0);
    }
    std::string value;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      Die(arg + " needs a value\n" + kUsage);
    }
    if (arg == "--model") {
      flags.model = value;
    } else if (arg == "--device") {
      flags.device = value;
    } else if (arg == "--requests") {
      flags.requests = ParseInt(arg, value);
    } else if (arg == "--rounds") {
      flags.rounds = ParseInt(arg, value);
    } else if (arg == "--prompt-tokens") {
      flags.prompt_tokens = ParseInt(arg, value);
    } else if (arg == "--new-tokens") {
      flags.new_tokens = ParseInt(arg, value);
    } else if (arg == "--rank") {
      flags.rank = ParseInt(arg, value);
    } else if (arg == "--cases") {
      flags.cases = ParseCases(value);
    } else if (arg == "--adapter-dtype") {
      flags.adapter_dtype = value;
    } else if (arg == "--weight-dtype") {
      flags.weight_dtype = value;
    } else if (arg == "--cpu-threads") {
      flags.cpu_threads = ParseInt(arg, value);
    } else if (arg == "--pool-mb") {
      flags.pool_mb = ParseInt(arg, value);
    } else if (arg == "--max-seconds") {
      flags.max_seconds = std::atof(value.c_str());
    } else if (arg == "--json") {
      flags.json = value;
    } else {
      Die("unknown flag '" + arg + "'\n" + kUsage);
    }
  }
  if (flags.model.empty()) Die(std::string("--model is required\n") + kUsage);
  if (flags.requests < 1 || flags.rounds < 1 || flags.prompt_tokens < 1 || flags.rank < 1 ||
      flags.new_tokens < 3 || flags.max_seconds <= 0 || flags.pool_mb < 0) {
    Die("--requests, --rounds, --prompt-tokens, --rank and --max-seconds must be positive, "
        "--new-tokens >= 3 (the window needs decode steps after the first token)");
  }
  return flags;
}

// splitmix64: a cheap, seedable stream, so 1024 adapters of a 7B-shaped model (~5 billion
// values) fill in seconds rather than the minutes std::normal_distribution would take.
struct SplitMix {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float Uniform(float bound) {  // in [-bound, bound)
    return bound * (static_cast<float>(Next() >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
};

// Like tests/runtime/test_model_fixture.h's RandomAdapter, on every linear module: A uniform in
// +-1/sqrt(in) (PEFT's kaiming-uniform scale), B uniform in +-0.01 and nonzero, alpha = 2 * rank.
std::shared_ptr<LoraAdapter> MakeAdapter(const ModelConfig& config, int index, int rank) {
  SplitMix rng{0x10a0u + static_cast<uint64_t>(index) * 0x100000001b3ull};
  auto adapter = std::make_shared<LoraAdapter>();
  adapter->id = AdapterId(index);
  adapter->num_layers = config.num_layers;
  adapter->max_rank = rank;
  adapter->config.r = rank;
  adapter->config.lora_alpha = 2.0 * rank;
  adapter->modules.resize(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    for (Module m : kTargets) {
      const ModuleDims dims = config.Dims(m);
      LoraModuleWeights w;
      w.rank = rank;
      w.scaling = 2.0f;
      w.a.resize(static_cast<size_t>(rank) * dims.in);
      w.b.resize(static_cast<size_t>(dims.out) * rank);
      const float a_bound = 1.0f / std::sqrt(static_cast<float>(dims.in));
      for (float& v : w.a) v = rng.Uniform(a_bound);
      for (float& v : w.b) v = rng.Uniform(0.01f);
      adapter->weight_bytes += (w.a.size() + w.b.size()) * sizeof(float);
      adapter->modules[l][static_cast<int>(m)] = std::move(w);
    }
  }
  return adapter;
}

std::vector<std::shared_ptr<LoraAdapter>> MakeAdapters(const ModelConfig& config, int count,
                                                       int rank) {
  std::vector<std::shared_ptr<LoraAdapter>> adapters(count);
  const int threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = t; i < count; i += threads) adapters[i] = MakeAdapter(config, i, rank);
    });
  }
  for (std::thread& w : workers) w.join();
  return adapters;
}

struct RunResult {
  DecodeWindow window;
  double e2e_tokens_per_s = 0;  // every generated token / (submit -> last token)
  int64_t tokens = 0;
  std::vector<std::vector<int32_t>> outputs;  // each request's generated tokens
  int64_t adapter_loads = 0;  // host -> pool copies during the run: 0 when all were resident
  bool truncated = false;     // hit --max-seconds and was cancelled
};

// The engine's counters after the step that finished the last request has published them.
EngineStats SettledStats(Engine& engine) {
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  EngineStats stats = engine.Stats();
  while ((stats.running > 0 || stats.waiting > 0) && Clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stats = engine.Stats();
  }
  return stats;
}

// One run of a case: `requests` requests at once, adapters chosen round-robin from `first`.
RunResult RunOnce(Engine& engine, int adapters, int64_t first, int new_tokens, const Flags& flags) {
  const int n = flags.requests;
  const int vocab = engine.model_config().vocab_size;
  const EngineStats before = SettledStats(engine);

  std::mutex mu;  // guards finished, failure and outputs; token times are read after all finish
  std::condition_variable cv;
  int finished = 0;
  std::string failure;
  std::vector<std::vector<double>> token_times(n);
  std::vector<std::vector<int32_t>> outputs(n);
  std::vector<uint64_t> ids;
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    GenerationRequest request;
    for (int j = 0; j < flags.prompt_tokens; ++j) {
      request.prompt_ids.push_back((i * 131 + j * 7919 + 17) % vocab);
    }
    if (adapters > 0) request.adapters = {{AdapterId((first + i) % adapters), 1.0f}};
    request.max_tokens = new_tokens;
    request.ignore_eos = true;
    RequestCallbacks callbacks;
    callbacks.on_token = [&token_times, i, start](const TokenEvent& event) {
      if (event.token >= 0) {
        token_times[i].push_back(std::chrono::duration<double>(Clock::now() - start).count());
      }
    };
    callbacks.on_finish = [&, i](const RequestResult& result) {
      std::lock_guard<std::mutex> lock(mu);
      outputs[i] = result.tokens;
      if (result.finish_reason != FinishReason::kCancelled &&
          (!result.status.ok() || static_cast<int>(result.tokens.size()) != new_tokens)) {
        failure = "request " + std::to_string(i) + " finished with " +
                  FinishReasonName(result.finish_reason) + " after " +
                  std::to_string(result.tokens.size()) + " tokens: " + result.status.ToString();
      }
      ++finished;
      cv.notify_all();
    };
    auto id = engine.Submit(std::move(request), std::move(callbacks));
    if (!id.ok()) Die(CaseName(adapters) + ": " + id.status().ToString());
    ids.push_back(*id);
  }
  RunResult r;
  {
    std::unique_lock<std::mutex> lock(mu);
    const auto deadline = start + std::chrono::duration<double>(flags.max_seconds);
    if (!cv.wait_until(lock, deadline, [&] { return finished == n; })) {
      r.truncated = true;
      lock.unlock();
      for (uint64_t id : ids) engine.Cancel(id);
      lock.lock();
      cv.wait(lock, [&] { return finished == n; });
    }
    if (!failure.empty()) Die(CaseName(adapters) + ": " + failure);
  }
  const EngineStats after = SettledStats(engine);
  r.window = MeasureDecodeWindow(token_times);
  r.outputs = std::move(outputs);
  double last = 0;
  for (const auto& times : token_times) {
    r.tokens += static_cast<int64_t>(times.size());
    if (!times.empty()) last = std::max(last, times.back());
  }
  r.e2e_tokens_per_s = last > 0 ? r.tokens / last : 0;
  r.adapter_loads = after.adapter_loads - before.adapter_loads;
  return r;
}

// A JSON string literal's body (the backend description and model path are free text).
std::string JsonEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

constexpr char kTargetNames[] = "q,k,v,o,gate,up,down";  // kTargets, for the report

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);

  BackendChoice choice;
  auto device = ParseDeviceKind(flags.device);
  if (!device.ok()) Die("--device: " + std::string(device.status().message()));
  choice.device = *device;
  auto weight_dtype = ParseWeightDtype(flags.weight_dtype);
  if (!weight_dtype.ok()) Die("--weight-dtype: " + std::string(weight_dtype.status().message()));
  choice.cpu.weight_dtype = *weight_dtype;
  auto storage = ParseAdapterStorage(flags.adapter_dtype);
  if (!storage.ok()) Die("--adapter-dtype: " + std::string(storage.status().message()));
  auto created = CreateBackend(choice);
  if (!created.ok()) Die(created.status().ToString());
  const std::string backend = created->description;
  std::cerr << "cuda_decode_bench: backend " << backend << "\n";

  auto model = LlamaModel::Load(flags.model, std::move(created->backend));
  if (!model.ok()) Die(flags.model + ": " + model.status().ToString());
  const ModelConfig config = (*model)->config();
  const size_t parameters = (*model)->ParameterCount();
  const int max_adapters = *std::max_element(flags.cases.begin(), flags.cases.end());

  const auto build_start = Clock::now();
  const std::vector<std::shared_ptr<LoraAdapter>> adapters =
      MakeAdapters(config, max_adapters, flags.rank);
  std::cerr << "cuda_decode_bench: built " << max_adapters << " rank-" << flags.rank
            << " adapters in " << std::chrono::duration<double>(Clock::now() - build_start).count()
            << " s\n";

  // The pool must hold every adapter of the largest case at once, or that case would measure
  // host -> pool copies instead of decode; it is sized for exactly that unless --pool-mb says.
  EngineOptions options;
  options.max_running = flags.requests;
  options.max_waiting = std::max(1024, flags.requests);
  options.max_batch_tokens = std::max(512, flags.requests * (flags.prompt_tokens + 1));
  options.max_adapters_resident = std::max(128, max_adapters);
  options.merge_mode = MergeMode::kNever;  // the 1-adapter case measures the unmerged path
  options.merge_window_seconds = 0;
  options.adapter_storage = *storage;
  options.host_cache_bytes = 0;  // adapters built in memory cannot be re-read anyway
  options.cpu_threads = flags.cpu_threads;
  const kernels::KvPageLayout layout = (*model)->KvLayout(options.kv_block_size);
  const int64_t page_bytes = layout.page_floats() * static_cast<int64_t>(sizeof(float));
  const int64_t adapter_pages =
      adapters.empty()
          ? 0
          : AdapterPool::PagesNeeded(*adapters[0], config, layout.page_floats(), *storage);
  const int64_t kv_pages = int64_t{flags.requests} *
                           ((flags.prompt_tokens + flags.new_tokens + options.kv_block_size - 1) /
                            options.kv_block_size);
  const int64_t needed_pages = adapter_pages * max_adapters + kv_pages;
  if (flags.pool_mb > 0) {
    options.pool_bytes = flags.pool_mb << 20;
  } else {
    options.pool_pages = needed_pages + needed_pages / 20 + 8;
  }
  const int64_t pool_pages = options.pool_pages > 0
                                 ? options.pool_pages
                                 : std::max<int64_t>(8, options.pool_bytes / page_bytes);
  std::fprintf(stderr,
               "cuda_decode_bench: pool %lld pages of %.2f MiB = %.2f GiB (%lld pages per adapter, "
               "%lld KV pages; %lld needed for %d resident adapters)\n",
               static_cast<long long>(pool_pages), page_bytes / 1048576.0,
               pool_pages * page_bytes / 1073741824.0, static_cast<long long>(adapter_pages),
               static_cast<long long>(kv_pages), static_cast<long long>(needed_pages),
               max_adapters);
  auto engine_or = Engine::Create(*std::move(model), options);
  if (!engine_or.ok()) {
    Die("engine: " + engine_or.status().ToString() +
        " (the pool could not be allocated: lower --cases or --requests, or set --pool-mb)");
  }
  Engine& engine = **engine_or;
  for (const auto& adapter : adapters) {
    if (auto s = engine.RegisterAdapter(adapter); !s.ok()) Die(s.ToString());
  }

  // Warm-up: touches every adapter of every case once (makes them resident) and the KV pages
  // and scratch buffers; run k of a case starts its round-robin at k * requests.
  const size_t num_cases = flags.cases.size();
  std::vector<int64_t> runs(num_cases, 0);
  const auto warm_start = Clock::now();
  for (size_t c = 0; c < num_cases; ++c) {
    const int a = flags.cases[c];
    const int64_t warm_runs = std::max<int64_t>(1, (a + flags.requests - 1) / flags.requests);
    for (int64_t k = 0; k < warm_runs; ++k) {
      const RunResult w = RunOnce(engine, a, runs[c]++ * flags.requests, 3, flags);
      if (w.truncated) {
        Die("warm-up of " + CaseName(a) + " ran past --max-seconds " +
            std::to_string(flags.max_seconds));
      }
    }
  }
  const EngineStats warm = SettledStats(engine);
  std::cerr << "cuda_decode_bench: warm-up "
            << std::chrono::duration<double>(Clock::now() - warm_start).count() << " s, "
            << warm.adapters_resident << " adapters resident, " << warm.adapter_evictions
            << " evictions\n";
  const bool all_resident = warm.adapters_resident >= max_adapters && warm.adapter_evictions == 0;
  if (!all_resident) {
    std::cerr << "cuda_decode_bench: WARNING: only " << warm.adapters_resident << " of "
              << max_adapters << " adapters stayed resident (" << warm.adapter_evictions
              << " evictions): the largest case copies adapters host -> pool inside its timed "
                 "window (raise --pool-mb or lower --cases)\n";
  }

  // Each round starts at a different case, so no case always runs first.
  std::vector<std::vector<RunResult>> results(num_cases, std::vector<RunResult>(flags.rounds));
  for (int round = 0; round < flags.rounds; ++round) {
    for (size_t i = 0; i < num_cases; ++i) {
      const size_t c = (i + round) % num_cases;
      const int a = flags.cases[c];
      RunResult& r = results[c][round];
      r = RunOnce(engine, a, runs[c]++ * flags.requests, flags.new_tokens, flags);
      std::fprintf(stderr, "round %d %-14s %10.1f tok/s decode (%lld tokens in %.3f s)%s%s\n",
                   round, CaseName(a).c_str(), r.window.tokens_per_s,
                   static_cast<long long>(r.window.tokens), r.window.seconds,
                   r.adapter_loads > 0 ? ", adapter loads in the run" : "",
                   r.truncated ? ", TRUNCATED at --max-seconds" : "");
    }
  }

  std::vector<double> tps(num_cases), ratio(num_cases), e2e(num_cases);
  std::vector<int64_t> loads(num_cases, 0);
  std::vector<bool> truncated(num_cases, false);
  std::vector<int> differing(num_cases, 0);  // rows of the last round unlike base's
  const size_t base = std::find(flags.cases.begin(), flags.cases.end(), 0) - flags.cases.begin();
  for (size_t c = 0; c < num_cases; ++c) {
    std::vector<double> t, rr, e;
    for (int round = 0; round < flags.rounds; ++round) {
      const RunResult& r = results[c][round];
      const double b = results[base][round].window.tokens_per_s;
      t.push_back(r.window.tokens_per_s);
      rr.push_back(b > 0 ? r.window.tokens_per_s / b : 0);
      e.push_back(r.e2e_tokens_per_s);
      loads[c] += r.adapter_loads;
      truncated[c] = truncated[c] || r.truncated;
    }
    tps[c] = Median(t);
    ratio[c] = Median(rr);
    e2e[c] = Median(e);
    // Prompts depend only on the request index, so a row that matches base's greedy tokens
    // exactly in every case would mean the adapters never ran.
    const auto& outs = results[c].back().outputs;
    const auto& base_outs = results[base].back().outputs;
    for (size_t i = 0; i < outs.size() && i < base_outs.size(); ++i) {
      if (outs[i] != base_outs[i]) ++differing[c];
    }
  }

  std::printf(
      "\ncuda_decode_bench: %s\nmodel %s: %zu parameters, %d layers, hidden %d, intermediate %d, "
      "%d heads / %d kv heads, vocab %d\n%d requests x (%d prompt + %d new tokens), greedy, "
      "ignore_eos; rank-%d adapters on %s stored %s; %d round(s), medians\n"
      "adapters chosen round-robin: request i of run k takes adapter (k*%d + i) mod A\n\n",
      backend.c_str(), flags.model.c_str(), parameters, config.num_layers, config.hidden_size,
      config.intermediate_size, config.num_heads, config.num_kv_heads, config.vocab_size,
      flags.requests, flags.prompt_tokens, flags.new_tokens, flags.rank, kTargetNames,
      AdapterStorageName(*storage), flags.rounds, flags.requests);
  std::printf("%-14s %8s %14s %10s %12s %10s %12s\n", "case", "adapters", "decode tok/s",
              "ratio/base", "e2e tok/s", "pool loads", "rows != base");
  for (size_t c = 0; c < num_cases; ++c) {
    std::printf("%-14s %8d %14.1f %10.3f %12.1f %10lld %12d%s\n", CaseName(flags.cases[c]).c_str(),
                flags.cases[c], tps[c], ratio[c], e2e[c], static_cast<long long>(loads[c]),
                differing[c], truncated[c] ? "  TRUNCATED" : "");
  }
  if (!all_resident) std::printf("\nWARNING: not every adapter stayed resident (see stderr)\n");

  if (!flags.json.empty()) {
    std::ofstream out(flags.json);
    out << "{\n  \"backend\": \"" << JsonEscape(backend) << "\",\n  \"model\": \""
        << JsonEscape(flags.model) << "\",\n  \"parameters\": " << parameters
        << ",\n  \"layers\": " << config.num_layers << ",\n  \"hidden\": " << config.hidden_size
        << ",\n  \"requests\": " << flags.requests
        << ",\n  \"prompt_tokens\": " << flags.prompt_tokens
        << ",\n  \"new_tokens\": " << flags.new_tokens << ",\n  \"rank\": " << flags.rank
        << ",\n  \"adapter_dtype\": \"" << AdapterStorageName(*storage)
        << "\",\n  \"rounds\": " << flags.rounds
        << ",\n  \"all_adapters_resident\": " << (all_resident ? "true" : "false")
        << ",\n  \"cases\": {\n";
    for (size_t c = 0; c < num_cases; ++c) {
      out << "    \"" << CaseName(flags.cases[c]) << "\": {\"adapters\": " << flags.cases[c]
          << ", \"decode_tokens_per_s\": " << tps[c] << ", \"ratio_to_base\": " << ratio[c]
          << ", \"e2e_tokens_per_s\": " << e2e[c] << ", \"adapter_loads\": " << loads[c]
          << ", \"rows_differing_from_base\": " << differing[c]
          << ", \"truncated\": " << (truncated[c] ? "true" : "false")
          << ", \"per_round_tokens_per_s\": [";
      for (int round = 0; round < flags.rounds; ++round) {
        out << (round ? ", " : "") << results[c][round].window.tokens_per_s;
      }
      out << "]}" << (c + 1 < num_cases ? "," : "") << "\n";
    }
    out << "  }\n}\n";
    if (!out) Die("could not write " + flags.json);
  }
  return 0;
}

}  // namespace
}  // namespace loraserve

int main(int argc, char** argv) { return loraserve::Main(argc, argv); }
