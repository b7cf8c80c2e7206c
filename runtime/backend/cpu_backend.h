// The CPU implementation of the op set: weights and the pool in host memory, fp32 compute
// through kernels/cpu (AVX-512/AVX2 micro-kernels, OpenBLAS, OpenMP). Matrices are held in the
// chosen weight dtype (by default what the file stored: a bf16 checkpoint stays bf16, half the
// bytes a memory-bound decode step streams) and widened inside the micro-kernels; vectors (norms,
// biases) stay fp32. A merged module is held fp32 while merged: rounding W + s B A to 16 bits
// would lose most of the adapter's delta.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "runtime/backend/backend.h"
#include "kernels/cpu/gemm.h"
#include "runtime/backend/host_allocator.h"

namespace loraserve {

// How matrices are stored: kAuto keeps the file's dtype (fp32 for fp32 or wider files).
enum class WeightDtype { kAuto, kF32, kBF16, kF16 };
// Which SIMD kernels the CPU backend may use; kAuto is the widest the CPU runs. Narrower choices
// exist to measure and test the AVX2 path on an AVX-512 machine.
enum class CpuIsa { kAuto, kAvx2, kPortable };

absl::StatusOr<WeightDtype> ParseWeightDtype(std::string_view name);  // auto|fp32|bf16|fp16
absl::StatusOr<CpuIsa> ParseCpuIsa(std::string_view name);            // auto|avx2|portable
std::string_view CpuIsaName(CpuIsa isa);  // what kAuto resolves to on this CPU, for logs

struct CpuBackendOptions {
  WeightDtype weight_dtype = WeightDtype::kAuto;
  CpuIsa isa = CpuIsa::kAuto;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend() = default;
  explicit CpuBackend(CpuBackendOptions options) : options_(options) {}
  // Weights hold spans into half_arena_: a copy would point into the original's memory.
  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;
  std::string_view name() const override { return "cpu"; }

  // Sizes one huge-page arena for every 16-bit matrix (host_allocator.h), where UploadWeight
  // then places them back to back: a decode step streams them all, and at batch 64 that ran
  // ~7% faster than from separate cache-line-aligned blocks on 4 KiB pages.
  absl::Status ReserveWeights(std::span<const WeightSpec> specs) override;
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
  absl::Status LinearFused(const Tensor& x, std::span<const LinearTarget> targets) override;
  absl::Status LoraApply(const PoolStorage& pool, const Tensor& x, const Tensor& y,
                         const LoraModulePlan& plan) override;
  absl::Status LoraApplyFused(const PoolStorage& pool, const Tensor& x,
                              std::span<const LoraTargetPlan> targets) override;
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
    // Live values when they are fp32: an fp32-stored weight, or a 16-bit one while merged.
    HostVector<float> values;
    // The 16-bit storage (bf16 or fp16 bits) of a 16-bit weight, in half_arena_ or one of
    // half_blocks_; never changed by a merge, so it is also the pristine copy.
    std::span<uint16_t> half;
    // Nonzero: `half` holds bf16 rows in kernels/cpu/bf16_pairs.h's paired layout with this many
    // lanes, the one this backend's linear micro-kernels read (AVX-512: 16).
    int pair_lanes = 0;
    HostVector<float> pristine;  // an fp32-stored weight's values as loaded, while merged
    bool live_is_f32() const { return !values.empty() || half.empty(); }
  };
  absl::StatusOr<const Weight*> Find(WeightHandle weight) const;
  absl::StatusOr<Weight*> Find(WeightHandle weight);
  // The live weights as the kernels read them.
  const void* LiveData(const Weight& w) const;
  kernels::LoraDtype LiveDtype(const Weight& w) const;
  // One linear part reading w's live values into y.
  kernels::LinearPart LivePart(const Weight& w, const Tensor& y) const;
  // The 16-bit storage as fp32: a HostVector for a merge's live copy, a std::vector for reads.
  template <class Vector>
  Vector Widen(const Weight& w) const;
  // Room for n 16-bit elements: the arena's next cache line, else a block of its own.
  std::span<uint16_t> HalfStorage(size_t n);

  CpuBackendOptions options_;
  // Not guarded: the engine's step loop is the one caller after load (weights are uploaded
  // before the engine starts; merges run on the step loop between forward passes).
  std::vector<Weight> weights_;
  HostVector<uint16_t> half_arena_;
  size_t half_arena_used_ = 0;  // elements, a multiple of a cache line's
  std::vector<HostVector<uint16_t>> half_blocks_;  // uploads the reservation did not cover
};

}  // namespace loraserve
