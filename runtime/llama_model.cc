// Every linear module runs as GEMM (OpenBLAS) -> LoRA segment kernel -> bias, in that order, so
// DoRA's per-output scale multiplies W x + s B A x but not the bias, exactly as PEFT does.
#include "runtime/llama_model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/lora.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "formats/safetensors.h"
#include "runtime/rope_frequencies.h"

namespace loraserve {
namespace {

absl::Status Read(const SafetensorsFolder& weights, const std::string& name,
                  std::vector<int64_t> shape, std::vector<float>* out) {
  auto tensor = weights.ReadFloat(name, shape);
  if (!tensor.ok()) return tensor.status();
  *out = std::move(*tensor);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir) {
  namespace fs = std::filesystem;
  auto config = ModelConfig::FromFile((fs::path(dir) / "config.json").string());
  if (!config.ok()) return config.status();
  auto weights = SafetensorsFolder::Open(dir);
  if (!weights.ok()) return weights.status();
  std::unique_ptr<LlamaModel> model(new LlamaModel());
  model->dir_ = dir;
  model->config_ = *config;
  const ModelConfig& c = model->config_;
  const int64_t hidden = c.hidden_size;
  if (auto s = Read(*weights, "model.embed_tokens.weight", {c.vocab_size, hidden},
                    &model->embed_tokens_);
      !s.ok()) {
    return s;
  }
  if (auto s = Read(*weights, "model.norm.weight", {hidden}, &model->final_norm_); !s.ok()) {
    return s;
  }
  if (!c.tie_word_embeddings) {
    if (auto s = Read(*weights, "lm_head.weight", {c.vocab_size, hidden}, &model->lm_head_);
        !s.ok()) {
      return s;
    }
  }
  model->layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights& layer = model->layers_[l];
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    for (int m = 0; m < kNumModules; ++m) {
      const Module module = static_cast<Module>(m);
      const ModuleDims dims = c.Dims(module);
      const std::string name =
          absl::StrCat(prefix, ModuleParent(module), ".", kModuleNames[m]);
      if (auto s = Read(*weights, name + ".weight", {dims.out, dims.in}, &layer.weight[m]);
          !s.ok()) {
        return s;
      }
      if (c.HasBias(module)) {
        if (auto s = Read(*weights, name + ".bias", {dims.out}, &layer.bias[m]); !s.ok()) return s;
      }
    }
    if (auto s = Read(*weights, prefix + "input_layernorm.weight", {hidden}, &layer.input_norm);
        !s.ok()) {
      return s;
    }
    if (auto s = Read(*weights, prefix + "post_attention_layernorm.weight", {hidden},
                      &layer.post_attention_norm);
        !s.ok()) {
      return s;
    }
  }
  model->inv_freq_ = RopeInverseFrequencies(c);
  return model;
}

kernels::KvPageLayout LlamaModel::KvLayout(int block_size) const {
  return {block_size, config_.num_layers, config_.kv_dim()};
}

size_t LlamaModel::ParameterCount() const {
  size_t n = embed_tokens_.size() + lm_head_.size() + final_norm_.size();
  for (const LayerWeights& layer : layers_) {
    for (int m = 0; m < kNumModules; ++m) n += layer.weight[m].size() + layer.bias[m].size();
    n += layer.input_norm.size() + layer.post_attention_norm.size();
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
    if (seq.adapter_set >= static_cast<int>(plan.adapter_sets.size())) {
      return absl::InvalidArgumentError("plan: adapter_set index out of range");
    }
  }
  for (int32_t r : plan.logit_rows) {
    if (r < 0 || r >= plan.num_tokens()) return absl::InvalidArgumentError("plan: bad logit row");
  }
  return absl::OkStatus();
}

void LlamaModel::ApplyLinear(const BatchPlan& plan, int layer, Module module, const float* x,
                             int64_t ldx, float* y, int64_t ldy) const {
  const int m = static_cast<int>(module);
  const ModuleDims dims = config_.Dims(module);
  const LayerWeights& w = layers_[layer];
  kernels::LinearForward(x, ldx, w.weight[m].data(), plan.num_tokens(), dims.in, dims.out, y, ldy);
  if (!plan.adapter_sets.empty()) {
    std::vector<kernels::LoraSegment> segments;
    std::vector<kernels::LoraRef> refs;
    // Consecutive sequences with the same adapter set share one segment.
    for (size_t s = 0; s < plan.seqs.size();) {
      const int set = plan.seqs[s].adapter_set;
      size_t e = s;
      while (e < plan.seqs.size() && plan.seqs[e].adapter_set == set &&
             (e == s || plan.seqs[e].token_begin == plan.seqs[e - 1].token_end)) {
        ++e;
      }
      if (set >= 0) {
        kernels::LoraSegment segment{plan.seqs[s].token_begin, plan.seqs[e - 1].token_end,
                                     static_cast<int>(refs.size()), 0, nullptr};
        for (const auto& [adapter, weight] : plan.adapter_sets[set]) {
          const auto& slot = adapter->modules[layer][m];
          if (!slot) continue;
          refs.push_back({slot->rank, weight * slot->scaling, slot->a_rows.data(),
                          slot->b_cols.data(), slot->dtype});
          if (!slot->dora_scale.empty()) segment.out_scale = slot->dora_scale.data();
        }
        segment.refs_end = static_cast<int>(refs.size());
        if (segment.refs_end > segment.refs_begin || segment.out_scale != nullptr) {
          segments.push_back(segment);
        }
      }
      s = e;
    }
    if (!segments.empty()) {
      kernels::LoraApply(plan.adapter_pool, x, ldx, y, ldy, dims.in, dims.out, segments, refs);
    }
  }
  if (!w.bias[m].empty()) kernels::AddBias(y, ldy, plan.num_tokens(), dims.out, w.bias[m].data());
}

absl::Status LlamaModel::Forward(const BatchPlan& plan, float* kv_pool,
                                 const kernels::KvPageLayout& layout, float* logits) const {
  if (auto s = ValidatePlan(plan, layout); !s.ok()) return s;
  const ModelConfig& c = config_;
  const int T = plan.num_tokens();
  if (T == 0) return absl::OkStatus();
  const int H = c.hidden_size;
  const int q_dim = c.q_dim();
  const int kv_dim = c.kv_dim();
  const int I = c.intermediate_size;

  std::vector<float> x(static_cast<size_t>(T) * H);
  for (int t = 0; t < T; ++t) {
    std::memcpy(&x[static_cast<size_t>(t) * H], &embed_tokens_[static_cast<size_t>(plan.token_ids[t]) * H],
                sizeof(float) * H);
  }
  std::vector<float> h(static_cast<size_t>(T) * H);
  std::vector<float> q(static_cast<size_t>(T) * q_dim), k(static_cast<size_t>(T) * kv_dim),
      v(static_cast<size_t>(T) * kv_dim), attn(static_cast<size_t>(T) * q_dim);
  std::vector<float> gate(static_cast<size_t>(T) * I), up(static_cast<size_t>(T) * I);
  std::vector<float> proj(static_cast<size_t>(T) * H);
  std::vector<kernels::AttentionSeq> seqs;
  for (const SequencePlan& seq : plan.seqs) {
    seqs.push_back({seq.token_begin, seq.token_end, seq.block_table.data()});
  }

  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    kernels::RmsNorm(x.data(), H, w.input_norm.data(), T, H, static_cast<float>(c.rms_norm_eps),
                     h.data(), H);
    ApplyLinear(plan, l, Module::kQ, h.data(), H, q.data(), q_dim);
    ApplyLinear(plan, l, Module::kK, h.data(), H, k.data(), kv_dim);
    ApplyLinear(plan, l, Module::kV, h.data(), H, v.data(), kv_dim);
    kernels::ApplyRope(q.data(), q_dim, T, c.num_heads, c.head_dim, plan.positions.data(),
                       inv_freq_.data());
    kernels::ApplyRope(k.data(), kv_dim, T, c.num_kv_heads, c.head_dim, plan.positions.data(),
                       inv_freq_.data());
    kernels::StoreKv(kv_pool, layout, l, seqs, plan.positions.data(), k.data(), v.data(), kv_dim);
    kernels::PagedAttention(kv_pool, layout, l, seqs, plan.positions.data(), q.data(), q_dim,
                            c.num_heads, c.num_kv_heads, c.head_dim, attn.data(), q_dim);
    ApplyLinear(plan, l, Module::kO, attn.data(), q_dim, proj.data(), H);
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

    kernels::RmsNorm(x.data(), H, w.post_attention_norm.data(), T, H,
                     static_cast<float>(c.rms_norm_eps), h.data(), H);
    ApplyLinear(plan, l, Module::kGate, h.data(), H, gate.data(), I);
    ApplyLinear(plan, l, Module::kUp, h.data(), H, up.data(), I);
    kernels::SiluMul(gate.data(), up.data(), static_cast<int64_t>(T) * I, gate.data());
    ApplyLinear(plan, l, Module::kDown, gate.data(), I, proj.data(), H);
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
  }

  const int rows = static_cast<int>(plan.logit_rows.size());
  if (rows == 0) return absl::OkStatus();
  std::vector<float> last(static_cast<size_t>(rows) * H);
  for (int i = 0; i < rows; ++i) {
    kernels::RmsNorm(&x[static_cast<size_t>(plan.logit_rows[i]) * H], H, final_norm_.data(), 1, H,
                     static_cast<float>(c.rms_norm_eps), &last[static_cast<size_t>(i) * H], H);
  }
  const std::vector<float>& head = lm_head_.empty() ? embed_tokens_ : lm_head_;
  kernels::LinearForward(last.data(), H, head.data(), rows, H, c.vocab_size, logits, c.vocab_size);
  return absl::OkStatus();
}

}  // namespace loraserve
