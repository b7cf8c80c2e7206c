// Encode throughput (MB/s, one thread) of the llama3 tokenizer on ~1 MB of mixed documents from
// tools/tokenizer_corpus.py --bench-text. tests/python/bench_tokenizer_reference.py measures Hugging
// Face tokenizers on the same documents in the same run. Run from the repository root, or set
// LORASERVE_BENCH_TEXT (JSON lines) and LORASERVE_TOKENIZERS.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/tokenizer/tokenizer.h"

namespace loraserve {
namespace {

std::string ReadAll(std::FILE* file) {
  std::string out;
  char buffer[1 << 16];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), file)) > 0;) out.append(buffer, n);
  return out;
}

// Empty on failure; `error` says what to do.
std::vector<std::string> LoadDocuments(std::string* error) {
  std::string jsonl;
  if (const char* path = std::getenv("LORASERVE_BENCH_TEXT")) {
    std::FILE* file = std::fopen(path, "rb");
    if (file == nullptr) {
      *error = std::string("cannot open LORASERVE_BENCH_TEXT=") + path;
      return {};
    }
    jsonl = ReadAll(file);
    std::fclose(file);
  } else {
    std::FILE* pipe = popen("python3 tools/tokenizer_corpus.py --bench-text", "r");
    if (pipe != nullptr) {
      jsonl = ReadAll(pipe);
      pclose(pipe);
    }
  }
  std::vector<std::string> documents;
  size_t start = 0;
  while (start < jsonl.size()) {
    size_t end = jsonl.find('\n', start);
    if (end == std::string::npos) end = jsonl.size();
    const nlohmann::json doc = nlohmann::json::parse(jsonl.substr(start, end - start), nullptr, false);
    if (doc.is_string()) documents.push_back(doc.get<std::string>());
    start = end + 1;
  }
  if (documents.empty()) {
    *error = "no benchmark text: run from the repository root (needs python3 and "
             "tools/tokenizer_corpus.py) or set LORASERVE_BENCH_TEXT to a JSON-lines file";
  }
  return documents;
}

std::unique_ptr<Tokenizer> LoadLlama3(std::string* error) {
  const char* dir = std::getenv("LORASERVE_TOKENIZERS");
  const std::string path = std::string(dir ? dir : "../shared/tokenizers") + "/llama3";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(path);
  if (!tokenizer.ok()) {
    *error = std::string(tokenizer.status().message()) + " (set LORASERVE_TOKENIZERS)";
    return nullptr;
  }
  return *std::move(tokenizer);
}

// Steady state: the per-word BPE cache is warm after the first iteration, as in a server.
void BM_TokenizerEncodeLlama3(benchmark::State& state) {
  std::string error;
  static const std::vector<std::string> documents = LoadDocuments(&error);
  std::unique_ptr<Tokenizer> tokenizer = documents.empty() ? nullptr : LoadLlama3(&error);
  if (tokenizer == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  int64_t bytes = 0, tokens = 0;
  for (auto _ : state) {
    for (const std::string& doc : documents) {
      const std::vector<int32_t> ids = tokenizer->Encode(doc, false);
      tokens += static_cast<int64_t>(ids.size());
      bytes += static_cast<int64_t>(doc.size());
    }
  }
  state.SetBytesProcessed(bytes);
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens),
                                                      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TokenizerEncodeLlama3)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// Cold cache: a fresh tokenizer per iteration (load time excluded), every word runs BPE.
void BM_TokenizerEncodeLlama3ColdCache(benchmark::State& state) {
  std::string error;
  static const std::vector<std::string> documents = LoadDocuments(&error);
  if (documents.empty()) {
    state.SkipWithError(error.c_str());
    return;
  }
  int64_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<Tokenizer> tokenizer = LoadLlama3(&error);
    state.ResumeTiming();
    if (tokenizer == nullptr) {
      state.SkipWithError(error.c_str());
      return;
    }
    for (const std::string& doc : documents) {
      benchmark::DoNotOptimize(tokenizer->Encode(doc, false));
      bytes += static_cast<int64_t>(doc.size());
    }
    state.PauseTiming();
    tokenizer.reset();
    state.ResumeTiming();
  }
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_TokenizerEncodeLlama3ColdCache)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace loraserve
BENCHMARK_MAIN();
