// The model's side of whole-step graphs, on the CPU: a backend that asks for graphs (a wrapper
// around the CPU backend that pads to powers of two and records every op call) gets the same
// logits for the real rows as eager steps, and two steps of one bucket with different adapter
// mixes call exactly the same ops with the same shapes, which is what lets a captured CUDA graph
// replay any step that fits its bucket.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/backend/cpu_backend.h"
#include "runtime/step_shape.h"
#include "runtime/engine.h"
#include "tests/runtime/engine_test_util.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

class RecordingBackend final : public Backend {
 public:
  std::vector<std::string> calls;
  std::vector<std::vector<std::string>> graph_steps;  // each graph step's calls, in order
  int begins = 0, ends = 0;
  bool graphs = true;

  std::string_view name() const override { return "recording-cpu"; }
  int GraphRows(const StepShape& shape) const override {
    if (!graphs || !shape.decode_only || shape.has_dora) return 0;
    int rows = 1;
    while (rows < shape.rows) rows *= 2;
    return rows;
  }
  absl::Status BeginGraphStep(const StepShape& padded) override {
    ++begins;
    calls.clear();
    calls.push_back(absl::StrCat("begin ", padded.rows));
    return absl::OkStatus();
  }
  absl::Status EndGraphStep(bool ok) override {
    ++ends;
    graph_steps.push_back(calls);
    return ok ? absl::OkStatus() : absl::InternalError("failed step");
  }

  absl::StatusOr<WeightHandle> UploadWeight(std::span<const float> values,
                                            std::vector<int64_t> shape, DType source) override {
    return cpu_.UploadWeight(values, std::move(shape), source);
  }
  absl::StatusOr<WeightInfo> Info(WeightHandle w) const override { return cpu_.Info(w); }
  absl::StatusOr<std::vector<float>> ReadWeight(WeightHandle w) const override {
    return cpu_.ReadWeight(w);
  }
  absl::StatusOr<std::vector<float>> ReadPristineWeight(WeightHandle w) const override {
    return cpu_.ReadPristineWeight(w);
  }
  absl::Status MergeLora(WeightHandle w, const LoraModuleWeights& m,
                         std::span<const float> d) override {
    return cpu_.MergeLora(w, m, d);
  }
  absl::Status RestoreWeight(WeightHandle w) override { return cpu_.RestoreWeight(w); }
  absl::StatusOr<std::unique_ptr<PoolStorage>> CreatePool(int64_t u, int32_t n) override {
    return cpu_.CreatePool(u, n);
  }
  absl::StatusOr<Buffer> Allocate(int64_t rows, int64_t cols) override {
    Record("Allocate", rows, cols);
    return cpu_.Allocate(rows, cols);
  }
  absl::StatusOr<Tensor> ViewHost(float* host, int64_t rows, int64_t cols) override {
    Record("ViewHost", rows, cols);
    return cpu_.ViewHost(host, rows, cols);
  }
  absl::Status CopyToHost(const Tensor& x, std::span<float> out) override {
    Record("CopyToHost", x.rows, x.cols);
    // As a graph backend may: the caller's buffer holds only the real rows.
    std::vector<float> all(static_cast<size_t>(x.elements()));
    if (auto s = cpu_.CopyToHost(x, all); !s.ok()) return s;
    std::copy(all.begin(), all.begin() + std::min(all.size(), out.size()), out.begin());
    return absl::OkStatus();
  }
  absl::Status Embed(WeightHandle t, std::span<const int32_t> ids, const Tensor& out) override {
    Record("Embed", out.rows, out.cols);
    return cpu_.Embed(t, ids, out);
  }
  absl::Status GatherRows(const Tensor& x, std::span<const int32_t> rows,
                          const Tensor& out) override {
    Record("GatherRows", out.rows, out.cols);
    return cpu_.GatherRows(x, rows, out);
  }
  absl::Status Linear(const Tensor& x, WeightHandle w, const Tensor& y) override {
    Record("Linear", x.rows, y.cols);
    return cpu_.Linear(x, w, y);
  }
  absl::Status LinearFused(const Tensor& x, std::span<const LinearTarget> targets) override {
    Record("LinearFused", x.rows, static_cast<int64_t>(targets.size()));
    return cpu_.LinearFused(x, targets);
  }
  absl::Status LoraApply(const PoolStorage& pool, const Tensor& x, const Tensor& y,
                         const LoraModulePlan& plan) override {
    Record("LoraApply", x.rows, y.cols);
    return cpu_.LoraApply(pool, x, y, plan);
  }
  absl::Status LoraApplyFused(const PoolStorage& pool, const Tensor& x,
                              std::span<const LoraTargetPlan> targets) override {
    Record("LoraApplyFused", x.rows, static_cast<int64_t>(targets.size()));
    return cpu_.LoraApplyFused(pool, x, targets);
  }
  absl::Status AddBias(const Tensor& y, WeightHandle b) override { return cpu_.AddBias(y, b); }
  absl::Status RmsNorm(const Tensor& x, WeightHandle w, float eps, const Tensor& out) override {
    Record("RmsNorm", x.rows, x.cols);
    return cpu_.RmsNorm(x, w, eps, out);
  }
  absl::Status Rope(const Tensor& x, int heads, int head_dim, std::span<const int32_t> positions,
                    WeightHandle f) override {
    Record("Rope", x.rows, x.cols);
    return cpu_.Rope(x, heads, head_dim, positions, f);
  }
  absl::Status StoreKv(PoolStorage& pool, const kernels::KvPageLayout& layout, int layer,
                       std::span<const kernels::AttentionSeq> seqs,
                       std::span<const int32_t> positions, const Tensor& k,
                       const Tensor& v) override {
    // The sequence count varies within a bucket; a graph backend sizes its tables by rows.
    Record("StoreKv", k.rows, k.cols);
    return cpu_.StoreKv(pool, layout, layer, seqs, positions, k, v);
  }
  absl::Status PagedAttention(const PoolStorage& pool, const kernels::KvPageLayout& layout,
                              int layer, std::span<const kernels::AttentionSeq> seqs,
                              std::span<const int32_t> positions, const Tensor& q, int heads,
                              int kv_heads, int head_dim, const Tensor& out) override {
    Record("PagedAttention", q.rows, q.cols);
    return cpu_.PagedAttention(pool, layout, layer, seqs, positions, q, heads, kv_heads, head_dim,
                               out);
  }
  absl::Status SiluMul(const Tensor& g, const Tensor& u, const Tensor& out) override {
    Record("SiluMul", g.rows, g.cols);
    return cpu_.SiluMul(g, u, out);
  }
  absl::Status Add(const Tensor& x, const Tensor& y) override {
    Record("Add", x.rows, x.cols);
    return cpu_.Add(x, y);
  }
  absl::Status ArgmaxRows(const Tensor& logits, std::span<int32_t> out) override {
    return cpu_.ArgmaxRows(logits, out);
  }

 private:
  void Record(const char* op, int64_t a, int64_t b) { calls.push_back(absl::StrCat(op, " ", a, " ", b)); }
  CpuBackend cpu_;
};

class GraphStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::GeneratedModelDir("tiny_llama", "--seed 3 --layers 2");
    auto recording = std::make_unique<RecordingBackend>();
    recording_ = recording.get();
    auto model = LlamaModel::Load(dir, std::move(recording));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    auto eager = LlamaModel::Load(dir);
    ASSERT_TRUE(eager.ok());
    eager_ = std::move(*eager);
    layout_ = model_->KvLayout(16);
  }

  // Three decode rows at positions 0..: prefix-free, so the KV each row reads is its own.
  BatchPlan DecodePlan(int rows) const {
    BatchPlan plan;
    for (int r = 0; r < rows; ++r) {
      plan.token_ids.push_back(5 + 11 * r);
      plan.positions.push_back(0);
      SequencePlan seq;
      seq.token_begin = r;
      seq.token_end = r + 1;
      seq.block_table = {r};
      plan.seqs.push_back(seq);
      plan.logit_rows.push_back(r);
    }
    return plan;
  }

  std::vector<float> Run(LlamaModel& model, const BatchPlan& plan) {
    auto kv = model.backend().CreatePool(layout_.page_floats(), 8);
    auto adapters = model.backend().CreatePool(64, 1);
    EXPECT_TRUE(kv.ok() && adapters.ok());
    std::vector<float> logits(plan.logit_rows.size() * model.config().vocab_size);
    const absl::Status s = model.Forward(plan, **kv, **adapters, layout_, logits.data());
    EXPECT_TRUE(s.ok()) << s;
    return logits;
  }

  RecordingBackend* recording_ = nullptr;
  std::unique_ptr<LlamaModel> model_, eager_;
  kernels::KvPageLayout layout_;
};

TEST_F(GraphStepTest, PaddedGraphStepsGiveTheEagerLogitsOfTheRealRows) {
  const BatchPlan plan = DecodePlan(3);
  const std::vector<float> graph = Run(*model_, plan);
  EXPECT_EQ(recording_->begins, 1);
  EXPECT_EQ(recording_->ends, 1);
  EXPECT_EQ(recording_->calls.front(), "begin 4");  // 3 rows pad to the 4-row bucket
  const std::vector<float> eager = Run(*eager_, plan);
  ASSERT_EQ(graph.size(), eager.size());
  for (size_t i = 0; i < graph.size(); ++i) ASSERT_FLOAT_EQ(graph[i], eager[i]) << i;
}

TEST_F(GraphStepTest, OneBucketCallsTheSameOpsWhateverTheAdaptersAndTokensMatchEager) {
  const ModelConfig c = model_->config();
  std::vector<std::shared_ptr<LoraAdapter>> adapters;
  for (int i = 0; i < 3; ++i) {
    adapters.push_back(testing::RandomAdapter(c, "a" + std::to_string(i), 4 + 4 * i, 40 + i));
  }
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    std::vector<AdapterRef> refs;
    if (i % 3 == 1) refs = {{"a" + std::to_string(i % 3), 1.0f}};
    if (i % 3 == 2) refs = {{"a0", 0.5f}, {"a2", -0.75f}};
    requests.push_back(testing::Greedy({3 + i, 9, 27 + i}, 5 + i, refs));
  }
  std::vector<std::vector<std::string>> graph_steps;
  auto run = [&](std::unique_ptr<LlamaModel> model) {
    auto* recording = dynamic_cast<RecordingBackend*>(&model->backend());
    auto engine = Engine::Create(std::move(model), EngineOptions{});
    EXPECT_TRUE(engine.ok()) << engine.status();
    for (const auto& a : adapters) EXPECT_TRUE((*engine)->RegisterAdapter(a).ok());
    std::vector<std::future<testing::Outcome>> futures;
    for (const auto& r : requests) futures.push_back(testing::SubmitAsync(**engine, r));
    std::vector<std::vector<int32_t>> tokens;
    for (auto& f : futures) tokens.push_back(f.get().streamed);
    // The engine owns the backend: read what it recorded before the engine goes.
    if (recording != nullptr) graph_steps = recording->graph_steps;
    return tokens;
  };
  const auto graph_tokens = run(std::move(model_));
  const auto eager_tokens = run(std::move(eager_));
  EXPECT_EQ(graph_tokens, eager_tokens);
  // Decode steps ran as graph steps, with and without adapters; within a bucket every step made
  // the very same calls, so one captured graph would have replayed them all.
  ASSERT_FALSE(graph_steps.empty());
  std::map<std::string, std::vector<std::string>> first_of_bucket;
  int with_lora = 0;
  for (const auto& step : graph_steps) {
    auto [it, fresh] = first_of_bucket.emplace(step.front(), step);
    if (!fresh) EXPECT_EQ(step, it->second) << step.front();
    for (const auto& call : step) with_lora += call.rfind("LoraApply", 0) == 0;
  }
  EXPECT_GT(with_lora, 0);
}

TEST_F(GraphStepTest, PrefillAndEagerBackendsDoNotPad) {
  BatchPlan prefill;
  prefill.token_ids = {1, 2, 3};
  prefill.positions = {0, 1, 2};
  SequencePlan seq;
  seq.token_begin = 0;
  seq.token_end = 3;
  seq.block_table = {0};
  prefill.seqs.push_back(seq);
  prefill.logit_rows = {2};
  EXPECT_FALSE(ShapeOf(prefill).decode_only);
  Run(*model_, prefill);
  EXPECT_EQ(recording_->begins, 0);
  recording_->graphs = false;
  Run(*model_, DecodePlan(3));
  EXPECT_EQ(recording_->begins, 0);
}

TEST(StepShapeTest, ShapeOfCountsRowsBlocksAndRankRows) {
  BatchPlan plan;
  plan.token_ids = {1, 2, 3};
  plan.positions = {0, 40, 7};
  for (int r = 0; r < 3; ++r) {
    SequencePlan seq;
    seq.token_begin = r;
    seq.token_end = r + 1;
    seq.block_table.assign(r == 1 ? 3 : 1, r);
    plan.seqs.push_back(seq);
  }
  static const int64_t kOffsets[16] = {};
  plan.lora.num_layers = 1;
  plan.lora.num_modules = 2;
  plan.lora.refs = {{4, 1.0f, kOffsets, kOffsets}, {8, 0.5f, kOffsets, kOffsets},
                    {16, 1.0f, kOffsets, kOffsets}};
  // Module 0: a set of ranks 4 + 8 on row 0 and rank 16 on row 1; module 1: rank 4 with DoRA.
  static const float kScale[4] = {1, 1, 1, 1};
  plan.lora.segments = {{0, 1, 0, 2, nullptr}, {1, 2, 2, 3, nullptr}, {2, 3, 0, 1, kScale}};
  plan.lora.module_begin = {0, 2, 3};
  const StepShape shape = ShapeOf(plan);
  EXPECT_EQ(shape.rows, 3);
  EXPECT_TRUE(shape.decode_only);
  EXPECT_EQ(shape.max_blocks, 3);
  EXPECT_EQ(shape.lora_rank_rows, 28);
  EXPECT_EQ(shape.lora_segment_ranks, 16);
  EXPECT_TRUE(shape.has_dora);
}

TEST(StepShapeTest, PadPlanAppendsSequencelessRowsAndLogitRows) {
  BatchPlan plan;
  plan.token_ids = {7, 8};
  plan.positions = {4, 9};
  plan.logit_rows = {0, 1};
  const BatchPlan padded = PadPlan(plan, 4);
  EXPECT_EQ(padded.token_ids, (std::vector<int32_t>{7, 8, 0, 0}));
  EXPECT_EQ(padded.positions, (std::vector<int32_t>{4, 9, 0, 0}));
  EXPECT_EQ(padded.logit_rows, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_TRUE(padded.seqs.empty());
}

}  // namespace
}  // namespace loraserve
