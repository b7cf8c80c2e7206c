// The CPU implementation of the op set: weights and the pool in host memory, fp32 compute
// through kernels/cpu (AVX-512/AVX2 micro-kernels, OpenBLAS, OpenMP). Weights are stored fp32
// whatever the file held (16-bit storage is a later addition behind the same handles).
#pragma once

#include <memory>
#include <vector>

#include "runtime/backend/backend.h"

namespace loraserve {

class CpuBackend final : public Backend {
 public:
  CpuBackend() = default;
  std::string_view name() const override { return "cpu"; }

  absl::StatusOr<WeightHandle> UploadWeight(std::span<const float> values,
                                            std::vector<int64_t> shape,
                                            DType source_dtype) override;
  absl::StatusOr<WeightInfo> Info(WeightHandle weight) const override;
  absl::StatusOr<std::vector<float>> ReadWeight(WeightHandle weight) const override;
  absl::StatusOr<std::vector<float>> ReadPristineWeight(WeightHandle weight) const override;
  absl::Status MergeLora(WeightHandle weight, const LoraModuleWeights& module,
                         std::span<const float> dora_scale) override;
  absl::Status RestoreWeight(WeightHandle weight) override;

  absl::StatusOr<std::unique_ptr<PoolStorage>> CreatePool(int64_t page_units,
                                                          int32_t num_pages) override;
  absl::StatusOr<Buffer> Allocate(int64_t rows, int64_t cols) override;
  absl::StatusOr<Tensor> ViewHost(float* host, int64_t rows, int64_t cols) override;
  absl::Status CopyToHost(const Tensor& x, std::span<float> out) override;

  absl::Status Embed(WeightHandle table, std::span<const int32_t> ids, const Tensor& out) override;
  absl::Status GatherRows(const Tensor& x, std::span<const int32_t> rows,
                          const Tensor& out) override;
  absl::Status Linear(const Tensor& x, WeightHandle weight, const Tensor& y) override;
  absl::Status LoraApply(const PoolStorage& pool, const Tensor& x, const Tensor& y,
                         const LoraModulePlan& plan) override;
  absl::Status AddBias(const Tensor& y, WeightHandle bias) override;
  absl::Status RmsNorm(const Tensor& x, WeightHandle weight, float eps,
                       const Tensor& out) override;
  absl::Status Rope(const Tensor& x, int num_heads, int head_dim,
                    std::span<const int32_t> positions, WeightHandle inv_freq) override;
  absl::Status StoreKv(PoolStorage& pool, const kernels::KvPageLayout& layout, int layer,
                       std::span<const kernels::AttentionSeq> seqs,
                       std::span<const int32_t> positions, const Tensor& k,
                       const Tensor& v) override;
  absl::Status PagedAttention(const PoolStorage& pool, const kernels::KvPageLayout& layout,
                              int layer, std::span<const kernels::AttentionSeq> seqs,
                              std::span<const int32_t> positions, const Tensor& q, int num_heads,
                              int num_kv_heads, int head_dim, const Tensor& out) override;
  absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  absl::Status Add(const Tensor& x, const Tensor& y) override;
  absl::Status ArgmaxRows(const Tensor& logits, std::span<int32_t> out) override;

 private:
  struct Weight {
    WeightInfo info;
    std::vector<float> values;    // live
    std::vector<float> pristine;  // as loaded; non-empty only while merged
  };
  absl::StatusOr<const Weight*> Find(WeightHandle weight) const;
  absl::StatusOr<Weight*> Find(WeightHandle weight);

  // Not guarded: the engine's step loop is the one caller after load (weights are uploaded
  // before the engine starts; merges run on the step loop between forward passes).
  std::vector<Weight> weights_;
};

}  // namespace loraserve
