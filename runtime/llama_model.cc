// Every linear module runs as GEMM -> LoRA segment kernel -> bias, in that order, so DoRA's
// per-output scale multiplies W x + s B A x but not the bias, exactly as PEFT does. The model
// only sequences backend ops; it never touches weight or activation memory itself.
#include "runtime/llama_model.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "formats/safetensors.h"
#include "runtime/backend/cpu_backend.h"
#include "runtime/rope_frequencies.h"

namespace loraserve {
namespace {

absl::Status Upload(Backend& backend, const SafetensorsFolder& weights, const std::string& name,
                    std::vector<int64_t> shape, WeightHandle* out) {
  auto tensor = weights.ReadFloat(name, shape);
  if (!tensor.ok()) return tensor.status();
  const TensorView* view = weights.Find(name);
  auto handle = backend.UploadWeight(*tensor, std::move(shape), view->dtype);
  if (!handle.ok()) {
    return absl::Status(handle.status().code(),
                        absl::StrCat(name, ": ", handle.status().message()));
  }
  *out = *handle;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir,
                                                            std::unique_ptr<Backend> backend) {
  namespace fs = std::filesystem;
  auto config = ModelConfig::FromFile((fs::path(dir) / "config.json").string());
  if (!config.ok()) return config.status();
  auto weights = SafetensorsFolder::Open(dir);
  if (!weights.ok()) return weights.status();
  std::unique_ptr<LlamaModel> model(new LlamaModel());
  model->dir_ = dir;
  model->config_ = *config;
  model->backend_ = backend ? std::move(backend) : std::make_unique<CpuBackend>();
  Backend& b = *model->backend_;
  const ModelConfig& c = model->config_;
  const int64_t hidden = c.hidden_size;
  // Every weight is named first, so the backend can reserve storage for all of them at once
  // (one device allocation on a GPU) before the first upload.
  struct Pending {
    std::string name;
    std::vector<int64_t> shape;
    WeightHandle* handle;
  };
  std::vector<Pending> pending;
  pending.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}, &model->embed_tokens_});
  pending.push_back({"model.norm.weight", {hidden}, &model->final_norm_});
  if (!c.tie_word_embeddings) {
    pending.push_back({"lm_head.weight", {c.vocab_size, hidden}, &model->lm_head_});
  }
  model->layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& layer = model->layers_[l];
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    for (int m = 0; m < kNumModules; ++m) {
      const Module module = static_cast<Module>(m);
      const ModuleDims dims = c.Dims(module);
      const std::string name = absl::StrCat(prefix, ModuleParent(module), ".", kModuleNames[m]);
      pending.push_back({name + ".weight", {dims.out, dims.in}, &layer.weight[m]});
      if (c.HasBias(module)) pending.push_back({name + ".bias", {dims.out}, &layer.bias[m]});
    }
    pending.push_back({prefix + "input_layernorm.weight", {hidden}, &layer.input_norm});
    pending.push_back(
        {prefix + "post_attention_layernorm.weight", {hidden}, &layer.post_attention_norm});
  }
  const std::vector<float> inv_freq = RopeInverseFrequencies(c);
  std::vector<WeightSpec> specs;
  for (const Pending& p : pending) {
    const TensorView* view = weights->Find(p.name);
    specs.push_back({p.shape, view != nullptr ? view->dtype : DType::kF32});
  }
  specs.push_back({{static_cast<int64_t>(inv_freq.size())}, DType::kF32});
  if (auto s = b.ReserveWeights(specs); !s.ok()) return s;
  for (const Pending& p : pending) {
    if (auto s = Upload(b, *weights, p.name, p.shape, p.handle); !s.ok()) return s;
  }
  auto rope = b.UploadWeight(inv_freq, {static_cast<int64_t>(inv_freq.size())}, DType::kF32);
  if (!rope.ok()) return rope.status();
  model->inv_freq_ = *rope;
  return model;
}

kernels::KvPageLayout LlamaModel::KvLayout(int block_size) const {
  return {block_size, config_.num_layers, config_.kv_dim()};
}

std::vector<float> LlamaModel::Weight(int layer, Module module) const {
  auto values = backend_->ReadWeight(WeightOf(layer, module));
  return values.ok() ? std::move(*values) : std::vector<float>{};
}

std::vector<float> LlamaModel::PristineWeight(int layer, Module module) const {
  auto values = backend_->ReadPristineWeight(WeightOf(layer, module));
  return values.ok() ? std::move(*values) : std::vector<float>{};
}

size_t LlamaModel::ParameterCount() const { return SumOverWeights(/*bytes=*/false); }

size_t LlamaModel::WeightBytes() const { return SumOverWeights(/*bytes=*/true); }

size_t LlamaModel::SumOverWeights(bool bytes) const {
  size_t n = 0;
  auto add = [&](WeightHandle w) {
    if (!w.valid()) return;
    auto info = backend_->Info(w);
    if (!info.ok()) return;
    size_t elements = 1;
    for (int64_t d : info->shape) elements *= static_cast<size_t>(d);
    n += bytes ? elements * DTypeSize(info->stored_dtype) : elements;
  };
  add(embed_tokens_);
  add(lm_head_);
  add(final_norm_);
  for (const LayerWeights& layer : layers_) {
    for (int m = 0; m < kNumModules; ++m) {
      add(layer.weight[m]);
      add(layer.bias[m]);
    }
    add(layer.input_norm);
    add(layer.post_attention_norm);
  }
  return n;
}

absl::Status LlamaModel::ValidatePlan(const BatchPlan& plan,
                                      const kernels::KvPageLayout& layout) const {
  if (plan.positions.size() != plan.token_ids.size()) {
    return absl::InvalidArgumentError("plan: positions and token_ids differ in length");
  }
  for (int32_t id : plan.token_ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", config_.vocab_size, ")"));
    }
  }
  for (const SequencePlan& seq : plan.seqs) {
    if (seq.token_begin < 0 || seq.token_end > plan.num_tokens() || seq.token_begin > seq.token_end) {
      return absl::InvalidArgumentError("plan: sequence rows out of range");
    }
    for (int r = seq.token_begin; r < seq.token_end; ++r) {
      const int32_t pos = plan.positions[r];
      if (pos < 0 || pos / layout.block_size >= static_cast<int>(seq.block_table.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("plan: position ", pos, " is not covered by the block table"));
      }
    }
  }
  if (!plan.lora.module_begin.empty() &&
      plan.lora.module_begin.size() !=
          static_cast<size_t>(config_.num_layers) * kNumModules + 1) {
    return absl::InvalidArgumentError("plan: the LoRA plan was built for another model");
  }
  if (plan.logit_rows.size() > plan.token_ids.size()) {
    return absl::InvalidArgumentError("plan: more logit rows than rows");
  }
  for (int32_t r : plan.logit_rows) {
    if (r < 0 || r >= plan.num_tokens()) return absl::InvalidArgumentError("plan: bad logit row");
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::ApplyLinear(const BatchPlan& plan, const PoolStorage& adapter_pool,
                                     int layer, Module module, const Tensor& x,
                                     const Tensor& y) const {
  if (auto s = backend_->Linear(x, layers_[layer].weight[static_cast<int>(module)], y); !s.ok()) {
    return s;
  }
  return ApplyLoraAndBias(plan, adapter_pool, layer, module, x, y);
}

absl::Status LlamaModel::ApplyFusedLinear(const BatchPlan& plan, const PoolStorage& adapter_pool,
                                          int layer, std::span<const Module> modules,
                                          const Tensor& x, std::span<const Tensor> ys) const {
  LinearTarget targets[3];
  for (size_t i = 0; i < modules.size(); ++i) {
    targets[i] = {layers_[layer].weight[static_cast<int>(modules[i])], ys[i]};
  }
  if (auto s = backend_->LinearFused(x, {targets, modules.size()}); !s.ok()) return s;
  LoraTargetPlan lora[3];
  size_t num_lora = 0;
  for (size_t i = 0; i < modules.size(); ++i) {
    const auto segments = plan.lora.Segments(layer, static_cast<int>(modules[i]));
    if (!segments.empty()) lora[num_lora++] = {ys[i], {segments, plan.lora.refs}};
  }
  if (num_lora > 0) {
    if (auto s = backend_->LoraApplyFused(adapter_pool, x, {lora, num_lora}); !s.ok()) return s;
  }
  for (size_t i = 0; i < modules.size(); ++i) {
    const WeightHandle bias = layers_[layer].bias[static_cast<int>(modules[i])];
    if (bias.valid()) {
      if (auto s = backend_->AddBias(ys[i], bias); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::ApplyLoraAndBias(const BatchPlan& plan, const PoolStorage& adapter_pool,
                                          int layer, Module module, const Tensor& x,
                                          const Tensor& y) const {
  const int m = static_cast<int>(module);
  const LayerWeights& w = layers_[layer];
  Backend& b = *backend_;
  const auto segments = plan.lora.Segments(layer, m);
  if (!segments.empty()) {
    if (auto s = b.LoraApply(adapter_pool, x, y, {segments, plan.lora.refs}); !s.ok()) return s;
  }
  if (w.bias[m].valid()) return b.AddBias(y, w.bias[m]);
  return absl::OkStatus();
}

absl::Status LlamaModel::Forward(const BatchPlan& plan, PoolStorage& kv_pool,
                                 const PoolStorage& adapter_pool,
                                 const kernels::KvPageLayout& layout, float* logits) const {
  if (auto s = ValidatePlan(plan, layout); !s.ok()) return s;
  const ModelConfig& c = config_;
  const int T = plan.num_tokens();
  if (T == 0) return absl::OkStatus();
  Backend& b = *backend_;
  const int H = c.hidden_size;
  const int I = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  absl::StatusOr<Buffer> buffers[9] = {b.Allocate(T, H),        b.Allocate(T, H),
                                       b.Allocate(T, c.q_dim()), b.Allocate(T, c.kv_dim()),
                                       b.Allocate(T, c.kv_dim()), b.Allocate(T, c.q_dim()),
                                       b.Allocate(T, I),        b.Allocate(T, I),
                                       b.Allocate(T, H)};
  for (const auto& buffer : buffers) {
    if (!buffer.ok()) return buffer.status();
  }
  const Tensor& x = buffers[0]->tensor();
  const Tensor& h = buffers[1]->tensor();
  const Tensor& q = buffers[2]->tensor();
  const Tensor& k = buffers[3]->tensor();
  const Tensor& v = buffers[4]->tensor();
  const Tensor& attn = buffers[5]->tensor();
  const Tensor& gate = buffers[6]->tensor();
  const Tensor& up = buffers[7]->tensor();
  const Tensor& proj = buffers[8]->tensor();
  // q/k/v and gate/up each run as one fused matmul over h (one parallel region, h read once).
  static constexpr Module kQkv[] = {Module::kQ, Module::kK, Module::kV};
  static constexpr Module kGateUp[] = {Module::kGate, Module::kUp};
  const Tensor qkv[] = {q, k, v};
  const Tensor gate_up[] = {gate, up};
  std::vector<kernels::AttentionSeq> seqs;
  for (const SequencePlan& seq : plan.seqs) {
    seqs.push_back({seq.token_begin, seq.token_end, seq.block_table.data()});
  }
  const std::span<const int32_t> positions = plan.positions;

  if (auto s = b.Embed(embed_tokens_, plan.token_ids, x); !s.ok()) return s;
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    absl::Status s = b.RmsNorm(x, w.input_norm, eps, h);
    if (s.ok()) s = ApplyFusedLinear(plan, adapter_pool, l, kQkv, h, qkv);
    if (s.ok()) s = b.Rope(q, c.num_heads, c.head_dim, positions, inv_freq_);
    if (s.ok()) s = b.Rope(k, c.num_kv_heads, c.head_dim, positions, inv_freq_);
    if (s.ok()) s = b.StoreKv(kv_pool, layout, l, seqs, positions, k, v);
    if (s.ok()) {
      s = b.PagedAttention(kv_pool, layout, l, seqs, positions, q, c.num_heads, c.num_kv_heads,
                           c.head_dim, attn);
    }
    if (s.ok()) s = ApplyLinear(plan, adapter_pool, l, Module::kO, attn, proj);
    if (s.ok()) s = b.Add(x, proj);
    if (s.ok()) s = b.RmsNorm(x, w.post_attention_norm, eps, h);
    if (s.ok()) s = ApplyFusedLinear(plan, adapter_pool, l, kGateUp, h, gate_up);
    if (s.ok()) s = b.SiluMul(gate, up, gate);
    if (s.ok()) s = ApplyLinear(plan, adapter_pool, l, Module::kDown, gate, proj);
    if (s.ok()) s = b.Add(x, proj);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("layer ", l, ": ", s.message()));
  }

  const int rows = static_cast<int>(plan.logit_rows.size());
  if (rows == 0) return absl::OkStatus();
  // The last rows reuse the front of h: only logit rows go through the final norm and head.
  const Tensor last = h.RowRange(0, rows);
  const Tensor picked = proj.RowRange(0, rows);
  if (auto s = b.GatherRows(x, plan.logit_rows, picked); !s.ok()) return s;
  if (auto s = b.RmsNorm(picked, final_norm_, eps, last); !s.ok()) return s;
  const WeightHandle head = lm_head_.valid() ? lm_head_ : embed_tokens_;
  auto host = b.ViewHost(logits, rows, c.vocab_size);
  if (host.ok()) return b.Linear(last, head, *host);
  auto out = b.Allocate(rows, c.vocab_size);
  if (!out.ok()) return out.status();
  if (auto s = b.Linear(last, head, out->tensor()); !s.ok()) return s;
  return b.CopyToHost(out->tensor(), std::span<float>(logits, static_cast<size_t>(rows) *
                                                                  c.vocab_size));
}

}  // namespace loraserve
