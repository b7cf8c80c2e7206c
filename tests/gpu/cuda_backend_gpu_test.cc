// The CUDA backend against the CPU backend on a GPU machine (tests/gpu/run.sh): the op set's
// contracts (pool bytes at the host's offsets, merge then restore bit-exact, clear errors), a
// forward pass's logits on a generated model, and end-to-end greedy tokens through the Engine
// with mixed adapters, weighted sets (a negative weight too) and base-only rows in one batch.
//
// The model: LORASERVE_GPU_MODEL_DIR, a tools/gen_model.py folder (run.sh generates it with the
// machine's python3, which has torch and transformers). Not in ctest: CI has no GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend/cpu_backend.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/engine.h"
#include "runtime/llama_model.h"
#include "tests/runtime/test_model_fixture.h"

namespace loraserve {
namespace {

std::string ModelDir() {
  const char* dir = std::getenv("LORASERVE_GPU_MODEL_DIR");
  return dir == nullptr ? std::string() : std::string(dir);
}

std::unique_ptr<Backend> Cuda(WeightDtype dtype, bool graphs = true) {
  std::string description;
  auto backend =
      CreateCudaBackend({.device = 0, .weight_dtype = dtype, .graphs = graphs}, &description);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(*backend) : nullptr;
}

std::unique_ptr<LlamaModel> Load(std::unique_ptr<Backend> backend) {
  auto model = LlamaModel::Load(ModelDir(), std::move(backend));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// tests/runtime/test_model_fixture.h's adapter on every linear module, with DoRA magnitudes
// when asked.
std::shared_ptr<LoraAdapter> RandomAdapter(const ModelConfig& config, const std::string& id,
                                           int rank, uint32_t seed, bool dora = false) {
  auto adapter = testing::RandomAdapter(config, id, rank, seed,
                                        {Module::kQ, Module::kK, Module::kV, Module::kO,
                                         Module::kGate, Module::kUp, Module::kDown});
  if (!dora) return adapter;
  adapter->use_dora = true;
  adapter->config.use_dora = true;
  std::mt19937 rng(seed + 1);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (auto& layer : adapter->modules) {
    for (auto& module : layer) {
      if (!module) continue;
      module->dora_magnitude.resize(module->b.size() / static_cast<size_t>(module->rank));
      for (float& v : module->dora_magnitude) v = 1.0f + normal(rng);
    }
  }
  return adapter;
}

TEST(CudaBackendGpuTest, SmallPoolBytesRoundTripAtHostOffsets) {
  auto backend = Cuda(WeightDtype::kAuto);
  ASSERT_NE(backend, nullptr);
  auto pool = backend->CreatePool(/*page_units=*/1024, /*num_pages=*/5);
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<uint32_t> units(3000);
  for (size_t i = 0; i < units.size(); ++i) units[i] = static_cast<uint32_t>(i * 2654435761u);
  ASSERT_TRUE((*pool)->Write(1500, units).ok());
  auto back = (*pool)->Read(1500, static_cast<int64_t>(units.size()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, units);
  EXPECT_EQ((*pool)->Write(4000, units).code(), absl::StatusCode::kOutOfRange);
}

TEST(CudaBackendGpuTest, MergeThenRestoreIsBitExact) {
  for (WeightDtype dtype : {WeightDtype::kF32, WeightDtype::kBF16}) {
    auto backend = Cuda(dtype);
    ASSERT_NE(backend, nullptr);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int out = 96, in = 80, rank = 8;
    std::vector<float> w(static_cast<size_t>(out) * in);
    for (float& v : w) v = normal(rng);
    auto handle = backend->UploadWeight(w, {out, in}, DType::kF32);
    ASSERT_TRUE(handle.ok());
    auto before = backend->ReadWeight(*handle);
    ASSERT_TRUE(before.ok());
    LoraModuleWeights module;
    module.rank = rank;
    module.scaling = 0.5f;
    module.a.resize(static_cast<size_t>(rank) * in);
    module.b.resize(static_cast<size_t>(out) * rank);
    for (float& v : module.a) v = normal(rng);
    for (float& v : module.b) v = normal(rng);
    std::vector<float> dora(out);
    for (float& v : dora) v = 1.0f + 0.1f * normal(rng);
    ASSERT_TRUE(backend->MergeLora(*handle, module, dora).ok());
    auto merged = backend->ReadWeight(*handle);
    ASSERT_TRUE(merged.ok());
    // The merged weights against W + s B A, scaled per row, computed here in double.
    for (int o = 0; o < out; o += 7) {
      for (int i = 0; i < in; i += 5) {
        double expect = (*before)[static_cast<size_t>(o) * in + i];
        for (int r = 0; r < rank; ++r) {
          expect += module.scaling * module.b[static_cast<size_t>(o) * rank + r] *
                    module.a[static_cast<size_t>(r) * in + i];
        }
        expect *= dora[o];
        EXPECT_NEAR((*merged)[static_cast<size_t>(o) * in + i], expect, 1e-4 * (1 + std::abs(expect)));
      }
    }
    EXPECT_TRUE(backend->Info(*handle)->merged);
    ASSERT_TRUE(backend->MergeLora(*handle, module, {}).ok());  // a second merge starts over
    ASSERT_TRUE(backend->RestoreWeight(*handle).ok());
    auto restored = backend->ReadWeight(*handle);
    ASSERT_TRUE(restored.ok());
    EXPECT_EQ(std::memcmp(restored->data(), before->data(), before->size() * sizeof(float)), 0);
    EXPECT_FALSE(backend->Info(*handle)->merged);
  }
}

TEST(CudaBackendGpuTest, SmallBadViewsAreInvalidArgumentNamingTheOp) {
  auto backend = Cuda(WeightDtype::kAuto);
  ASSERT_NE(backend, nullptr);
  std::vector<float> w(12, 0.5f);
  auto handle = backend->UploadWeight(w, {3, 4}, DType::kF32);
  ASSERT_TRUE(handle.ok());
  auto x = backend->Allocate(2, 5);
  auto y = backend->Allocate(2, 3);
  ASSERT_TRUE(x.ok() && y.ok());
  const absl::Status s = backend->Linear(x->tensor(), *handle, y->tensor());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Linear"), std::string::npos) << s;
  EXPECT_EQ(backend->Embed(WeightHandle{99}, std::vector<int32_t>{0}, y->tensor()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CudaBackendGpuTest, ForwardLogitsMatchTheCpuBackend) {
  ASSERT_FALSE(ModelDir().empty()) << "set LORASERVE_GPU_MODEL_DIR";
  auto cpu = Load(std::make_unique<CpuBackend>(CpuBackendOptions{.weight_dtype = WeightDtype::kF32}));
  auto gpu = Load(Cuda(WeightDtype::kF32));
  ASSERT_TRUE(cpu && gpu);
  const ModelConfig& c = cpu->config();
  const kernels::KvPageLayout layout = cpu->KvLayout(16);
  const std::vector<int32_t> prompt = {1, 17, 42, 99, 3, 250, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                       17, 18, 19};
  BatchPlan plan;
  plan.token_ids = prompt;
  for (int i = 0; i < static_cast<int>(prompt.size()); ++i) plan.positions.push_back(i);
  SequencePlan seq;
  seq.token_begin = 0;
  seq.token_end = static_cast<int>(prompt.size());
  seq.block_table = {0, 1};
  plan.seqs.push_back(seq);
  plan.logit_rows = {static_cast<int32_t>(prompt.size()) - 1, 3};
  std::vector<float> logits[2];
  LlamaModel* models[2] = {cpu.get(), gpu.get()};
  for (int b = 0; b < 2; ++b) {
    auto kv = models[b]->backend().CreatePool(layout.page_floats(), 4);
    auto adapters = models[b]->backend().CreatePool(1024, 1);
    ASSERT_TRUE(kv.ok() && adapters.ok());
    logits[b].resize(plan.logit_rows.size() * static_cast<size_t>(c.vocab_size));
    ASSERT_TRUE(models[b]->Forward(plan, **kv, **adapters, layout, logits[b].data()).ok());
  }
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < logits[0].size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{logits[0][i]} - logits[1][i]));
    max_abs = std::max(max_abs, std::abs(double{logits[0][i]}));
  }
  EXPECT_LT(max_diff, 1e-3 * (1 + max_abs)) << "max |cpu - cuda| " << max_diff;
}

struct GeneratedTokens {
  std::vector<std::vector<int32_t>> tokens;
};

GeneratedTokens Generate(std::unique_ptr<LlamaModel> model, const std::vector<GenerationRequest>& requests,
             const std::vector<std::shared_ptr<LoraAdapter>>& adapters) {
  EngineOptions options;
  auto engine = Engine::Create(std::move(model), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  GeneratedTokens run;
  if (!engine.ok()) return run;
  for (const auto& adapter : adapters) EXPECT_TRUE((*engine)->RegisterAdapter(adapter).ok());
  std::vector<std::future<std::vector<int32_t>>> futures;
  for (const GenerationRequest& request : requests) {
    auto promise = std::make_shared<std::promise<std::vector<int32_t>>>();
    auto tokens = std::make_shared<std::vector<int32_t>>();
    futures.push_back(promise->get_future());
    RequestCallbacks callbacks;
    callbacks.on_token = [tokens](const TokenEvent& e) {
      if (e.token >= 0) tokens->push_back(e.token);
    };
    callbacks.on_finish = [tokens, promise](const RequestResult&) { promise->set_value(*tokens); };
    auto id = (*engine)->Submit(request, std::move(callbacks));
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) promise->set_value({});
  }
  for (auto& f : futures) run.tokens.push_back(f.get());
  return run;
}

TEST(CudaBackendGpuTest, GreedyTokensEqualTheCpuBackendThroughTheEngine) {
  ASSERT_FALSE(ModelDir().empty()) << "set LORASERVE_GPU_MODEL_DIR";
  auto probe = Load(std::make_unique<CpuBackend>());
  ASSERT_NE(probe, nullptr);
  const ModelConfig config = probe->config();
  std::vector<std::shared_ptr<LoraAdapter>> adapters;
  const int ranks[] = {1, 8, 16, 64};
  for (int i = 0; i < 4; ++i) {
    adapters.push_back(RandomAdapter(config, "a" + std::to_string(i), ranks[i], 100 + i));
  }
  adapters.push_back(RandomAdapter(config, "dora", 8, 200, /*dora=*/true));
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 24; ++i) {
    GenerationRequest r;
    for (int t = 0; t < 3 + (i * 7) % 40; ++t) {
      r.prompt_ids.push_back((i * 31 + t * 17) % (config.vocab_size - 1) + 1);
    }
    r.max_tokens = 8 + i % 5;
    r.ignore_eos = true;
    switch (i % 5) {
      case 0: break;  // base-only rows in the same batch
      case 1: r.adapters = {{"a" + std::to_string(i % 4), 1.0f}}; break;
      case 2: r.adapters = {{"a1", 0.5f}, {"a3", -0.75f}}; break;
      case 3: r.adapters = {{"dora", 1.0f}}; break;
      case 4: r.adapters = {{"a2", 1.0f}, {"a0", 0.25f}}; break;
    }
    requests.push_back(r);
  }
  const GeneratedTokens cpu = Generate(
      Load(std::make_unique<CpuBackend>(CpuBackendOptions{.weight_dtype = WeightDtype::kF32})),
      requests, adapters);
  // Graphs on (decode steps replay one capture per bucket while the adapter mix changes from
  // step to step) and off (every step eager): both must give the CPU's tokens.
  const GeneratedTokens graphs = Generate(Load(Cuda(WeightDtype::kF32)), requests, adapters);
  const GeneratedTokens eager =
      Generate(Load(Cuda(WeightDtype::kF32, /*graphs=*/false)), requests, adapters);
  ASSERT_EQ(cpu.tokens.size(), graphs.tokens.size());
  ASSERT_EQ(cpu.tokens.size(), eager.tokens.size());
  for (size_t i = 0; i < cpu.tokens.size(); ++i) {
    EXPECT_EQ(cpu.tokens[i], graphs.tokens[i]) << "request " << i << " (graphs)";
    EXPECT_EQ(cpu.tokens[i], eager.tokens[i]) << "request " << i << " (eager)";
    EXPECT_EQ(cpu.tokens[i].size(), static_cast<size_t>(requests[i].max_tokens));
  }
}

}  // namespace
}  // namespace loraserve
