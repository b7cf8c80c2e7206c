// One forward pass of a ~100M-parameter model (folder from $LORASERVE_BENCH_MODEL; see
// scripts/bench.sh): a decode step at batch 1 and 16 over 128 cached tokens per sequence, and a
// 128-token prefill. Decode streams every weight once per step, so it is reported as achieved
// GB/s against the copy bandwidth measured in this same binary; prefill is compute bound and is
// reported as tokens/s and GFLOP/s.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/batch_plan.h"
#include "runtime/llama_model.h"
#include "runtime/backend/backend.h"
#include "tests/bench/bench_backend.h"
#include "tests/bench/bandwidth.h"

namespace loraserve {
namespace {

constexpr int kBlockSize = 16;
constexpr int kContext = 128;  // tokens already cached per sequence before a decode step
constexpr int kMaxBatch = 64;  // the load tests' 64 concurrent users

// The model and a KV pool where sequence s owns pages [s * pages_per_seq, ...), each holding
// the same kContext-token prompt's KV (prefilled once, then copied).
struct Fixture {
  std::unique_ptr<LlamaModel> model;
  kernels::KvPageLayout layout;
  std::unique_ptr<PoolStorage> pool;
  int pages_per_seq = 0;
  std::vector<float> logits;

  std::vector<int32_t> BlockTable(int seq, int tokens) const {
    std::vector<int32_t> table((tokens + kBlockSize - 1) / kBlockSize);
    std::iota(table.begin(), table.end(), seq * pages_per_seq);
    return table;
  }
};

std::vector<int32_t> PromptIds(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (i * 7919 + 13) % vocab;
  return ids;
}

// A plan where each of `seqs` sequences runs `tokens` tokens starting at `first_position`,
// with logits for each sequence's last token.
BatchPlan MakePlan(const Fixture& f, int seqs, int tokens, int first_position) {
  const int vocab = f.model->config().vocab_size;
  const std::vector<int32_t> ids = PromptIds(first_position + tokens, vocab);
  BatchPlan plan;
  for (int s = 0; s < seqs; ++s) {
    SequencePlan seq;
    seq.token_begin = plan.num_tokens();
    for (int t = 0; t < tokens; ++t) {
      plan.token_ids.push_back(ids[first_position + t]);
      plan.positions.push_back(first_position + t);
    }
    seq.token_end = plan.num_tokens();
    seq.block_table = f.BlockTable(s, first_position + tokens);
    plan.logit_rows.push_back(seq.token_end - 1);
    plan.seqs.push_back(std::move(seq));
  }
  return plan;
}

void Check(const absl::Status& status, const char* what) {
  if (status.ok()) return;
  std::cerr << "decode_bench: " << what << ": " << status << "\n";
  std::exit(1);
}

Fixture& GetFixture() {
  static Fixture* fixture = [] {
    const char* dir = std::getenv("LORASERVE_BENCH_MODEL");
    if (dir == nullptr || *dir == '\0') {
      std::cerr << "decode_bench: set LORASERVE_BENCH_MODEL to a model folder "
                   "(scripts/bench.sh generates one into .cache/bench/model100m)\n";
      std::exit(1);
    }
    auto* f = new Fixture;
    auto model = LlamaModel::Load(
        dir, std::make_unique<CpuBackend>(bench::BackendOptionsFromEnv()));
    Check(model.status(), dir);
    f->model = *std::move(model);
    f->layout = f->model->KvLayout(kBlockSize);
    // Room for kContext + 1 positions per sequence (the decode token's own KV slot).
    f->pages_per_seq = (kContext + 1 + kBlockSize - 1) / kBlockSize;
    auto pool = f->model->backend().CreatePool(f->layout.page_floats(),
                                               kMaxBatch * f->pages_per_seq);
    Check(pool.status(), "creating the KV pool");
    f->pool = *std::move(pool);
    f->logits.resize(static_cast<size_t>(kMaxBatch) * f->model->config().vocab_size);
    Check(f->model->Forward(MakePlan(*f, 1, kContext, 0), *f->pool, *f->pool, f->layout,
                            f->logits.data()),
          "prefilling the context");
    const int64_t seq_floats = f->pages_per_seq * f->layout.page_floats();
    auto first = f->pool->Read(0, seq_floats);
    Check(first.status(), "reading the prefilled KV");
    for (int s = 1; s < kMaxBatch; ++s) Check(f->pool->Write(s * seq_floats, *first), "copy KV");
    return f;
  }();
  return *fixture;
}

// Bytes (as stored: fp32 or 16-bit) of the weights one forward pass reads in full: every
// parameter except the embedding table, which is only gathered by row unless it doubles as the
// lm_head.
double StreamedParams(const LlamaModel& model) {
  const ModelConfig& c = model.config();
  const double embedding = static_cast<double>(c.vocab_size) * c.hidden_size;
  return static_cast<double>(model.ParameterCount()) - (c.tie_word_embeddings ? 0.0 : embedding);
}

double StreamedWeightBytes(const LlamaModel& model) {
  const double bytes_per_param =
      static_cast<double>(model.WeightBytes()) / static_cast<double>(model.ParameterCount());
  return bytes_per_param * StreamedParams(model);
}

// Bytes of KV one step's attention reads: every cached position of every layer, K and V.
double KvBytesRead(const LlamaModel& model, int seqs, int positions) {
  const ModelConfig& c = model.config();
  return 4.0 * seqs * positions * c.num_layers * 2.0 * c.kv_dim();
}

// The median of per-iteration times: the two cores are shared, and one descheduled OpenMP thread
// stalls a whole step for a scheduler tick, which would dominate a mean.
double Median(std::vector<double> samples) {
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

double TimeForward(Fixture& f, const BatchPlan& plan) {
  const auto start = std::chrono::steady_clock::now();
  Check(f.model->Forward(plan, *f.pool, *f.pool, f.layout, f.logits.data()), "forward");
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Arg: batch. One decode token per sequence at position kContext (its KV slot is rewritten with
// the same values every iteration, so the cache stays kContext + 1 long).
void BM_DecodeStep(benchmark::State& state) {
  Fixture& f = GetFixture();
  const int batch = static_cast<int>(state.range(0));
  const BatchPlan plan = MakePlan(f, batch, 1, kContext);
  const double bandwidth = bench::MeasureCopyBandwidthGBs();
  TimeForward(f, plan);  // first touch of the logits and scratch buffers
  std::vector<double> samples;
  for (auto _ : state) {
    samples.push_back(TimeForward(f, plan));
    state.SetIterationTime(samples.back());
  }
  const double seconds = Median(samples);
  const double bytes = StreamedWeightBytes(*f.model) + KvBytesRead(*f.model, batch, kContext + 1);
  const double gbs = bytes / seconds / 1e9;
  state.counters["median_ms"] = seconds * 1e3;
  state.counters["tokens_per_s"] = batch / seconds;
  state.counters["MB_per_step"] = bytes / 1e6;
  state.counters["GBps"] = gbs;
  state.counters["copy_GBps"] = bandwidth;
  state.counters["bw_fraction"] = gbs / bandwidth;
  state.counters["GFLOPs"] = 2.0 * StreamedParams(*f.model) * batch / seconds / 1e9;
}
BENCHMARK(BM_DecodeStep)
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(16)
    ->Arg(kMaxBatch)
    ->Iterations(20)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// One sequence's kContext-token prompt in one step, logits for its last token only.
void BM_Prefill(benchmark::State& state) {
  Fixture& f = GetFixture();
  const BatchPlan plan = MakePlan(f, 1, kContext, 0);
  const double bandwidth = bench::MeasureCopyBandwidthGBs();
  std::vector<double> samples;
  for (auto _ : state) {
    samples.push_back(TimeForward(f, plan));
    state.SetIterationTime(samples.back());
  }
  const double seconds = Median(samples);
  const double bytes = StreamedWeightBytes(*f.model) + KvBytesRead(*f.model, 1, kContext);
  const double gbs = bytes / seconds / 1e9;
  state.counters["median_ms"] = seconds * 1e3;
  state.counters["tokens_per_s"] = kContext / seconds;
  state.counters["GBps"] = gbs;
  state.counters["copy_GBps"] = bandwidth;
  state.counters["bw_fraction"] = gbs / bandwidth;
  // Dense GEMMs only; attention adds ~kContext/2 * 4 * hidden FLOPs per token per layer.
  state.counters["GFLOPs"] = 2.0 * StreamedParams(*f.model) * kContext / seconds / 1e9;
}
BENCHMARK(BM_Prefill)->Iterations(5)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace loraserve

BENCHMARK_MAIN();
