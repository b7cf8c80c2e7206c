// Engine decode throughput with 64 concurrent requests at rank 16 on the ~100M bench model, six
// adapter mixes run side by side in one process: (a) base only, (b) one adapter unmerged, (c)
// the same adapter merged into the base weights, (d) 64 distinct adapters, (e) 64 distinct
// weighted pairs, all on one engine, and (f) = (d) on a second engine that holds adapters as
// bf16 (--adapter-dtype bf16). The machine is shared, so each round runs all cases back to back
// and every case is reported as a ratio to (a) of the same round; rounds interleave.
//
// Usage: engine_bench [--rounds=N] [--new_tokens=N] [--prompt_tokens=N] [--cpu_threads=N]
//                     [--json=PATH]
// with $LORASERVE_BENCH_MODEL (model folder) and $LORASERVE_BENCH_ADAPTERS (a0 .. a63 PEFT
// adapters of that model), both written by scripts/bench.sh.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/lora_adapter.h"
#include "runtime/engine.h"
#include "runtime/llama_model.h"
#include "tests/bench/bench_backend.h"

namespace loraserve {
namespace {

constexpr int kRequests = 64;
constexpr int kAdapters = 64;

struct Flags {
  int rounds = 1;
  int new_tokens = 16;
  int prompt_tokens = 8;
  int cpu_threads = 0;  // EngineOptions::cpu_threads: 0 = follow the free cores
  std::string json;
};

enum class Case { kBase, kOneUnmerged, kOneMerged, kDistinct, kWeightedPairs, kDistinctBf16 };
constexpr Case kCases[] = {Case::kBase,     Case::kOneUnmerged,   Case::kOneMerged,
                           Case::kDistinct, Case::kWeightedPairs, Case::kDistinctBf16};

const char* CaseName(Case c) {
  switch (c) {
    case Case::kBase:
      return "a_base";
    case Case::kOneUnmerged:
      return "b_one_adapter_unmerged";
    case Case::kOneMerged:
      return "c_one_adapter_merged";
    case Case::kDistinct:
      return "d_64_distinct_adapters";
    case Case::kWeightedPairs:
      return "e_64_weighted_pairs";
    case Case::kDistinctBf16:
      return "f_64_distinct_bf16_pool";
  }
  return "?";
}

std::string AdapterId(int i) { return "a" + std::to_string(i % kAdapters); }

std::vector<AdapterRef> AdaptersFor(Case c, int request) {
  switch (c) {
    case Case::kBase:
      return {};
    case Case::kOneUnmerged:
    case Case::kOneMerged:
      return {{AdapterId(0), 1.0f}};
    case Case::kDistinct:
    case Case::kDistinctBf16:
      return {{AdapterId(request), 1.0f}};
    case Case::kWeightedPairs:
      return {{AdapterId(request), 0.7f}, {AdapterId(request + 1), 0.3f}};
  }
  return {};
}

struct CaseResult {
  double decode_tokens_per_s = 0;  // only steps where every request is decoding
  // CPU seconds of every thread of this process: on a shared, oversubscribed machine this tracks
  // the work per token far more steadily than wall time, which includes waiting for a core.
  double decode_tokens_per_cpu_s = 0;
  double e2e_tokens_per_s = 0;  // every generated token / (submit -> last finish)
  double mean_batch = 0;        // tokens per decode-only step
  int full_steps = 0;           // decode steps with all kRequests in the batch (the timed ones)
  bool merged = false;          // base weights held a merged adapter in the last step
};

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "engine_bench: " << message << "\n";
  std::exit(1);
}

struct Stamp {
  double wall;  // seconds since the case started
  double cpu;   // process CPU seconds
};

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Submits kRequests greedy requests and waits for all of them. Decode throughput counts only
// steps in which every request decodes one token, so prefill steps, adapter loads and
// merge/unmerge work stay outside it.
CaseResult RunCase(Engine& engine, Case c, const Flags& flags) {
  const MergeMode mode = c == Case::kOneMerged ? MergeMode::kAuto : MergeMode::kNever;
  if (auto s = engine.SetMergeMode(mode, ""); !s.ok()) Die(s.ToString());
  const int vocab = engine.model_config().vocab_size;

  std::mutex mu;  // guards finished and failure; token times are read only after all finish
  std::condition_variable cv;
  int finished = 0;
  std::string failure;
  std::vector<std::vector<Stamp>> token_times(kRequests);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRequests; ++i) {
    GenerationRequest request;
    for (int j = 0; j < flags.prompt_tokens; ++j) {
      request.prompt_ids.push_back((i * 131 + j * 7919 + 17) % vocab);
    }
    request.adapters = AdaptersFor(c, i);
    request.max_tokens = flags.new_tokens;
    request.ignore_eos = true;
    RequestCallbacks callbacks;
    callbacks.on_token = [&token_times, i, start](const TokenEvent& event) {
      if (event.token >= 0) {
        token_times[i].push_back({Seconds(std::chrono::steady_clock::now() - start), CpuSeconds()});
      }
    };
    callbacks.on_finish = [&, i](const RequestResult& result) {
      std::lock_guard<std::mutex> lock(mu);
      if (!result.status.ok() || static_cast<int>(result.tokens.size()) != flags.new_tokens) {
        failure = "request " + std::to_string(i) + " finished with " +
                  FinishReasonName(result.finish_reason) + " after " +
                  std::to_string(result.tokens.size()) + " tokens: " + result.status.ToString();
      }
      ++finished;
      cv.notify_all();
    };
    if (auto id = engine.Submit(std::move(request), std::move(callbacks)); !id.ok()) {
      Die(std::string(CaseName(c)) + ": " + id.status().ToString());
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished == kRequests; });
    if (!failure.empty()) Die(std::string(CaseName(c)) + ": " + failure);
  }
  const EngineStats after = engine.Stats();

  // Steps are told apart by the gaps between token emissions: one step emits its tokens within
  // the sampling loop (well under a millisecond each), and steps are a forward pass apart.
  struct Event {
    double time;
    double cpu;
    int request;
    int index;  // 0 = first token (its step included prefill)
  };
  std::vector<Event> events;
  double last = 0;
  for (int i = 0; i < kRequests; ++i) {
    for (size_t j = 0; j < token_times[i].size(); ++j) {
      events.push_back({token_times[i][j].wall, token_times[i][j].cpu, i, static_cast<int>(j)});
    }
    last = std::max(last, token_times[i].back().wall);
  }
  std::sort(events.begin(), events.end(),
            [](const Event& a, const Event& b) { return a.time < b.time; });
  const double gap = 0.2 * last / flags.new_tokens;
  CaseResult r;
  double step_begin = 0, step_begin_cpu = events.front().cpu, decode_seconds = 0, decode_cpu = 0;
  int64_t decode_tokens = 0;
  int full_steps = 0, decode_steps = 0;
  for (size_t e = 0; e < events.size();) {
    size_t end = e + 1;
    while (end < events.size() && events[end].time - events[end - 1].time < gap) ++end;
    const bool all_decode = std::all_of(events.begin() + e, events.begin() + end,
                                        [](const Event& ev) { return ev.index > 0; });
    if (all_decode) {
      ++decode_steps;
      r.mean_batch += static_cast<double>(end - e);
    }
    if (all_decode && end - e == static_cast<size_t>(kRequests)) {
      ++full_steps;
      decode_tokens += kRequests;
      decode_seconds += events[end - 1].time - step_begin;
      decode_cpu += events[end - 1].cpu - step_begin_cpu;
    }
    step_begin = events[end - 1].time;
    step_begin_cpu = events[end - 1].cpu;
    e = end;
  }
  r.decode_tokens_per_s = full_steps > 0 ? decode_tokens / decode_seconds : 0;
  r.decode_tokens_per_cpu_s = full_steps > 0 ? decode_tokens / decode_cpu : 0;
  r.e2e_tokens_per_s = static_cast<double>(kRequests) * flags.new_tokens / last;
  r.mean_batch /= std::max(decode_steps, 1);
  r.full_steps = full_steps;
  r.merged = !after.merged_adapter.empty();
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const std::string& name) -> const char* {
      return arg.rfind(name + "=", 0) == 0 ? argv[i] + name.size() + 1 : nullptr;
    };
    if (const char* v = value("--rounds")) {
      flags.rounds = std::atoi(v);
    } else if (const char* v = value("--new_tokens")) {
      flags.new_tokens = std::atoi(v);
    } else if (const char* v = value("--prompt_tokens")) {
      flags.prompt_tokens = std::atoi(v);
    } else if (const char* v = value("--cpu_threads")) {
      flags.cpu_threads = std::atoi(v);
    } else if (const char* v = value("--json")) {
      flags.json = v;
    } else {
      Die("unknown flag '" + arg +
          "'; flags: --rounds=N --new_tokens=N --prompt_tokens=N --cpu_threads=N "
          "--json=PATH");
    }
  }
  if (flags.rounds < 1 || flags.new_tokens < 3 || flags.prompt_tokens < 1) {
    Die("--rounds >= 1, --new_tokens >= 3 and --prompt_tokens >= 1 are required");
  }
  return flags;
}

std::string Env(const char* name, const char* hint) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') Die(std::string("set ") + name + " to " + hint);
  return v;
}

int Main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  const std::string model_dir =
      Env("LORASERVE_BENCH_MODEL", "the bench model folder (scripts/bench.sh writes one)");
  const std::string adapter_dir = Env("LORASERVE_BENCH_ADAPTERS", "a folder holding a0 .. a63");
  const std::string load_before = LoadAverage();

  const CpuBackendOptions backend_options = bench::BackendOptionsFromEnv();
  auto model = LlamaModel::Load(model_dir, std::make_unique<CpuBackend>(backend_options));
  if (!model.ok()) Die(model.status().ToString());
  auto model_for_bf16 = LlamaModel::Load(model_dir, std::make_unique<CpuBackend>(backend_options));
  if (!model_for_bf16.ok()) Die(model_for_bf16.status().ToString());
  const ModelConfig config = (*model)->config();
  const size_t parameters = (*model)->ParameterCount();
  EngineOptions options;
  options.max_running = kRequests;
  options.cpu_threads = flags.cpu_threads;
  options.max_batch_tokens = std::max(512, kRequests * flags.prompt_tokens);
  options.merge_mode = MergeMode::kNever;
  options.merge_window_seconds = 0;  // (c) merges as soon as its single-adapter traffic arrives
  options.max_adapters_resident = 2 * kAdapters;
  auto engine = Engine::Create(*std::move(model), options);
  if (!engine.ok()) Die(engine.status().ToString());
  options.adapter_storage = AdapterStorage::kBF16;
  auto bf16_engine = Engine::Create(*std::move(model_for_bf16), options);
  if (!bf16_engine.ok()) Die(bf16_engine.status().ToString());
  for (int i = 0; i < kAdapters; ++i) {
    const std::string dir = adapter_dir + "/" + AdapterId(i);
    auto adapter = LoadPeftAdapter(AdapterId(i), dir, config, AdapterLimits{});
    if (!adapter.ok()) Die(dir + ": " + adapter.status().ToString());
    auto shared = std::make_shared<LoraAdapter>(*std::move(adapter));
    for (Engine* e : {engine->get(), bf16_engine->get()}) {
      if (auto status = e->RegisterAdapter(shared); !status.ok()) Die(status.ToString());
    }
  }
  auto engine_for = [&](Case c) -> Engine& {
    return c == Case::kDistinctBf16 ? **bf16_engine : **engine;
  };

  // Warm-up: makes every adapter resident and touches KV pages and scratch buffers once.
  Flags warmup = flags;
  warmup.new_tokens = 3;
  for (Case c : kCases) RunCase(engine_for(c), c, warmup);

  // Each round starts at a different case, so no case always runs first (the first run of a
  // round was measured up to 30% slower while the CPU settles after the previous one's tail).
  std::vector<std::vector<CaseResult>> results(std::size(kCases),
                                               std::vector<CaseResult>(flags.rounds));
  for (int round = 0; round < flags.rounds; ++round) {
    for (size_t i = 0; i < std::size(kCases); ++i) {
      const size_t c = (i + round) % std::size(kCases);
      results[c][round] = RunCase(engine_for(kCases[c]), kCases[c], flags);
      if (results[c][round].full_steps == 0) {
        Die(std::string(CaseName(kCases[c])) +
            ": no step had every request decoding; raise --new_tokens");
      }
      std::cerr << "round " << round << " " << CaseName(kCases[c]) << ": "
                << results[c][round].decode_tokens_per_s << " tokens/s, "
                << results[c][round].decode_tokens_per_cpu_s << " tokens/CPU-s\n";
    }
  }
  const std::string load_after = LoadAverage();

  // Ratios are taken within a round, then the median over rounds.
  const size_t n = std::size(kCases);
  std::vector<double> tps(n), ratio(n), cpu_tps(n), cpu_ratio(n), e2e(n);
  for (size_t c = 0; c < n; ++c) {
    std::vector<double> t, rr, ct, cr, e;
    for (int round = 0; round < flags.rounds; ++round) {
      const CaseResult& r = results[c][round];
      const CaseResult& base = results[0][round];
      t.push_back(r.decode_tokens_per_s);
      rr.push_back(r.decode_tokens_per_s / base.decode_tokens_per_s);
      ct.push_back(r.decode_tokens_per_cpu_s);
      cr.push_back(r.decode_tokens_per_cpu_s / base.decode_tokens_per_cpu_s);
      e.push_back(r.e2e_tokens_per_s);
    }
    tps[c] = Median(t);
    ratio[c] = Median(rr);
    cpu_tps[c] = Median(ct);
    cpu_ratio[c] = Median(cr);
    e2e[c] = Median(e);
  }

  std::printf(
      "\nengine decode throughput: %zu parameters, %d requests x %d new tokens, "
      "%d-token prompts, rank 16, %d round(s)\nload average before: %s, after: %s\n\n",
      parameters, kRequests, flags.new_tokens, flags.prompt_tokens, flags.rounds,
      load_before.c_str(), load_after.c_str());
  std::printf("%-24s %12s %9s %14s %9s %10s %10s %10s %6s\n", "case", "decode tok/s", "ratio/(a)",
              "tok/CPU-s", "ratio/(a)", "e2e tok/s", "mean batch", "full steps", "merged");
  for (size_t c = 0; c < std::size(kCases); ++c) {
    const CaseResult& last = results[c].back();
    std::printf("%-24s %12.1f %9.3f %14.1f %9.3f %10.1f %10.1f %10d %6s\n", CaseName(kCases[c]),
                tps[c], ratio[c], cpu_tps[c], cpu_ratio[c], e2e[c], last.mean_batch,
                last.full_steps, last.merged ? "yes" : "no");
  }
  const double d_ratio = ratio[3], c_ratio = ratio[2];
  std::printf(
      "\ngoal (d)/(a) >= 0.80: %.3f wall (%s), %.3f CPU time\n"
      "goal (c)/(a) >= 0.97: %.3f wall (%s), %.3f CPU time\n",
      d_ratio, d_ratio >= 0.8 ? "met" : "NOT met", cpu_ratio[3], c_ratio,
      c_ratio >= 0.97 ? "met" : "NOT met", cpu_ratio[2]);

  if (!flags.json.empty()) {
    std::ofstream out(flags.json);
    out << "{\n  \"parameters\": " << parameters << ",\n  \"requests\": " << kRequests
        << ",\n  \"new_tokens\": " << flags.new_tokens
        << ",\n  \"prompt_tokens\": " << flags.prompt_tokens << ",\n  \"rounds\": " << flags.rounds
        << ",\n  \"load_average_before\": \"" << load_before << "\",\n  \"load_average_after\": \""
        << load_after << "\",\n  \"cases\": {\n";
    for (size_t c = 0; c < std::size(kCases); ++c) {
      out << "    \"" << CaseName(kCases[c]) << "\": {\"decode_tokens_per_s\": " << tps[c]
          << ", \"ratio_to_a\": " << ratio[c] << ", \"decode_tokens_per_cpu_s\": " << cpu_tps[c]
          << ", \"cpu_ratio_to_a\": " << cpu_ratio[c] << ", \"e2e_tokens_per_s\": " << e2e[c]
          << ", \"mean_batch\": " << results[c].back().mean_batch
          << ", \"full_steps\": " << results[c].back().full_steps
          << ", \"merged\": " << (results[c].back().merged ? "true" : "false")
          << ", \"per_round_tokens_per_s\": [";
      for (int round = 0; round < flags.rounds; ++round) {
        out << (round ? ", " : "") << results[c][round].decode_tokens_per_s;
      }
      out << "], \"per_round_tokens_per_cpu_s\": [";
      for (int round = 0; round < flags.rounds; ++round) {
        out << (round ? ", " : "") << results[c][round].decode_tokens_per_cpu_s;
      }
      out << "]}" << (c + 1 < std::size(kCases) ? "," : "") << "\n";
    }
    out << "  },\n  \"cpu_ratio_d_over_a\": " << cpu_ratio[3]
        << ",\n  \"cpu_ratio_c_over_a\": " << cpu_ratio[2]
        << ",\n  \"goal_d_over_a_0_80_met\": " << (d_ratio >= 0.8 ? "true" : "false")
        << ",\n  \"goal_c_over_a_0_97_met\": " << (c_ratio >= 0.97 ? "true" : "false") << "\n}\n";
    if (!out) Die("could not write " + flags.json);
  }
  return 0;
}

}  // namespace
}  // namespace loraserve

int main(int argc, char** argv) { return loraserve::Main(argc, argv); }
