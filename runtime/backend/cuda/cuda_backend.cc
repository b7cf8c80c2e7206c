// Each op validates its views as the CPU backend does (a wrong view is INVALID_ARGUMENT naming
// the op), stages its host tables through the pinned ring, and enqueues kernels on the compute
// stream; nothing waits on the GPU except the ops that return data to the host (CopyToHost,
// ArgmaxRows, ReadWeight, pool reads). All work runs on one stream, so a buffer handed back to
// the activation cache may be reused at once: later work is ordered after earlier work.
#include "runtime/backend/cuda/cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "formats/dtype.h"
#include "formats/half.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tables.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/kv_cache.cuh"
#include "kernels/cuda/lora.cuh"
#include "kernels/cuda/lora_table_builder.h"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/weights.cuh"
#include "runtime/backend/cuda/cuda_context.h"
#include "runtime/backend/cuda/cuda_pool.h"

namespace loraserve {
namespace {

using cuda_backend::CublasStatus;
using cuda_backend::CudaContext;
using cuda_backend::CudaPool;
using cuda_backend::CudaStatus;
using cuda_backend::DeviceAlloc;
using cuda_backend::DevicePtr;
using cuda_backend::StagingRing;
namespace kc = kernels::cuda;

constexpr size_t kStagingRingBytes = size_t{32} << 20;
// Floats of the pool's DoRA tail: a step's DoRA factors for one module call (segments x out_dim).
constexpr int64_t kDoraTailUnits = int64_t{4} << 20;
constexpr size_t kWeightAlign = 256;

size_t AlignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

float* F32(const Tensor& t) { return static_cast<float*>(t.data); }

absl::Status CheckF32(const Tensor& t, const char* op, const char* name) {
  if (t.data == nullptr && t.elements() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " has no data"));
  }
  if (t.dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " must be F32, got ", DTypeName(t.dtype)));
  }
  if (t.rows > 0 && t.ld < t.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " has ld ", t.ld, " < cols ", t.cols));
  }
  return absl::OkStatus();
}

absl::Status CheckSame(const Tensor& a, const Tensor& b, const char* op) {
  if (a.rows != b.rows || a.cols != b.cols) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": shapes differ (", a.rows, "x", a.cols,
                                                   " vs ", b.rows, "x", b.cols, ")"));
  }
  return absl::OkStatus();
}

absl::Status Launched(cudaError_t error, const char* kernel) {
  return CudaStatus(error, absl::StrCat("launch ", kernel));
}

// Matrices: bf16 unless fp16 or fp32 is asked for (an fp16 file stays fp16 under auto: rounding
// it to bf16 would lose bits). Vectors (norms, biases, RoPE frequencies) are fp32.
DType StoredDtype(WeightDtype option, DType source, size_t rank) {
  if (rank != 2) return DType::kF32;
  switch (option) {
    case WeightDtype::kF32: return DType::kF32;
    case WeightDtype::kBF16: return DType::kBF16;
    case WeightDtype::kF16: return DType::kF16;
    case WeightDtype::kAuto: break;
  }
  return source == DType::kF16 ? DType::kF16 : DType::kBF16;
}

const CudaPool* AsCudaPool(const PoolStorage& pool) {
  return dynamic_cast<const CudaPool*>(&pool);
}

// Activations: device buffers cached by size and reused in stream order.
class ActivationCache {
 public:
  absl::StatusOr<std::shared_ptr<void>> Get(size_t bytes) {
    bytes = AlignUp(std::max<size_t>(bytes, 1), kWeightAlign);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& list = free_[bytes];
      if (!list.empty()) {
        p = list.back();
        list.pop_back();
      }
    }
    if (p == nullptr) {
      auto fresh = DeviceAlloc(bytes, "activations");
      if (!fresh.ok()) return fresh.status();
      p = fresh->release();
    }
    std::weak_ptr<ActivationCache> owner = self_;
    return std::shared_ptr<void>(p, [owner, bytes](void* q) {
      if (auto cache = owner.lock()) {
        std::lock_guard<std::mutex> lock(cache->mu_);
        cache->free_[bytes].push_back(q);
      } else {
        cudaFree(q);
      }
    });
  }
  ~ActivationCache() {
    for (auto& [bytes, list] : free_) {
      for (void* p : list) cudaFree(p);
    }
  }
  std::weak_ptr<ActivationCache> self_;

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
};

// Scratch that grows: partials, 16-bit copies of activations, gathered indices.
class Scratch {
 public:
  absl::StatusOr<void*> Get(size_t bytes, CudaContext& context, const char* what) {
    if (bytes <= bytes_) return buffer_.get();
    if (auto s = context.Sync(what); !s.ok()) return s;  // the old buffer may still be read
    buffer_.reset();
    auto fresh = DeviceAlloc(AlignUp(bytes + bytes / 2, kWeightAlign), what);
    if (!fresh.ok()) return fresh.status();
    buffer_ = std::move(*fresh);
    bytes_ = AlignUp(bytes + bytes / 2, kWeightAlign);
    return buffer_.get();
  }

 private:
  DevicePtr buffer_;
  size_t bytes_ = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(CudaBackendOptions options, std::shared_ptr<CudaContext> context,
              std::unique_ptr<StagingRing> ring)
      : options_(options), context_(std::move(context)), ring_(std::move(ring)),
        activations_(std::make_shared<ActivationCache>()) {
    activations_->self_ = activations_;
  }
  ~CudaBackend() override {
    if (context_ != nullptr) (void)context_->Sync("teardown");
  }
  std::string_view name() const override { return "cuda"; }

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
    int64_t elements = 0;
    void* storage = nullptr;  // stored dtype; in the arena or in `own`
    DevicePtr own;            // set when the weight did not fit the reservation
    DevicePtr live_f32;       // a merged 16-bit weight's fp32 live copy
    DevicePtr pristine;       // a merged fp32 weight's values as loaded
    const void* live() const { return live_f32 ? live_f32.get() : storage; }
    bool live_is_f32() const { return live_f32 != nullptr || info.stored_dtype == DType::kF32; }
  };

  absl::StatusOr<const Weight*> Find(WeightHandle weight) const;
  absl::StatusOr<Weight*> Find(WeightHandle weight);
  absl::Status CheckLinear(const Tensor& x, const Weight& w, const Tensor& y) const;
  // Stages `bytes` of host data and copies them to the device; returns the device address.
  absl::StatusOr<void*> Stage(const void* data, size_t bytes);
  absl::StatusOr<std::vector<float>> ReadDevice(const void* data, DType dtype,
                                                int64_t elements) const;
  // y = x W^T through cuBLAS; x16 is x already narrowed to the weight's 16-bit type (or null).
  absl::Status Gemm(const Tensor& x, const uint16_t* x16, const Weight& w, const Tensor& y);
  absl::StatusOr<const uint16_t*> Narrow(const Tensor& x, DType dtype);
  absl::Status LoraOne(const CudaPool& pool, const Tensor& x, const LoraTargetPlan& target);

  CudaBackendOptions options_;
  std::shared_ptr<CudaContext> context_;
  std::unique_ptr<StagingRing> ring_;
  std::shared_ptr<ActivationCache> activations_;
  Scratch narrow_scratch_, partials_scratch_, attention_scratch_, merge_scratch_, argmax_scratch_;
  DevicePtr arena_;
  size_t arena_bytes_ = 0, arena_used_ = 0;
  // Not guarded, as on the CPU: weights are uploaded before the engine starts and merges run on
  // the step loop between forward passes.
  std::vector<Weight> weights_;
};

absl::StatusOr<const CudaBackend::Weight*> CudaBackend::Find(WeightHandle weight) const {
  if (weight.index < 0 || weight.index >= static_cast<int32_t>(weights_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("weight handle ", weight.index, " is unknown"));
  }
  return &weights_[weight.index];
}

absl::StatusOr<CudaBackend::Weight*> CudaBackend::Find(WeightHandle weight) {
  auto found = static_cast<const CudaBackend*>(this)->Find(weight);
  if (!found.ok()) return found.status();
  return const_cast<Weight*>(*found);
}

absl::StatusOr<void*> CudaBackend::Stage(const void* data, size_t bytes) {
  auto slot = ring_->Take(bytes, context_->compute);
  if (!slot.ok()) return slot.status();
  std::memcpy(slot->host, data, bytes);
  if (auto s = ring_->Upload(*slot, bytes, context_->compute); !s.ok()) return s;
  return slot->device;
}

// ---- weights

absl::Status CudaBackend::ReserveWeights(std::span<const WeightSpec> specs) {
  if (arena_ != nullptr) return absl::FailedPreconditionError("ReserveWeights: called twice");
  size_t bytes = 0;
  for (const WeightSpec& spec : specs) {
    size_t elements = 1;
    for (int64_t d : spec.shape) elements *= static_cast<size_t>(std::max<int64_t>(d, 0));
    const DType stored = StoredDtype(options_.weight_dtype, spec.source_dtype, spec.shape.size());
    bytes += AlignUp(elements * DTypeSize(stored), kWeightAlign);
  }
  auto arena = DeviceAlloc(bytes, "the base weights");
  if (!arena.ok()) return arena.status();
  arena_ = std::move(*arena);
  arena_bytes_ = bytes;
  return absl::OkStatus();
}

absl::StatusOr<WeightHandle> CudaBackend::UploadWeight(std::span<const float> values,
                                                       std::vector<int64_t> shape,
                                                       DType source_dtype) {
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  if (elements != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(absl::StrCat("UploadWeight: shape holds ", elements,
                                                   " elements, got ", values.size()));
  }
  Weight w;
  w.info.stored_dtype = StoredDtype(options_.weight_dtype, source_dtype, shape.size());
  w.info.shape = std::move(shape);
  w.info.source_dtype = source_dtype;
  w.elements = elements;
  const size_t bytes = static_cast<size_t>(elements) * DTypeSize(w.info.stored_dtype);
  if (arena_ != nullptr && arena_used_ + AlignUp(bytes, kWeightAlign) <= arena_bytes_) {
    w.storage = static_cast<char*>(arena_.get()) + arena_used_;
    arena_used_ += AlignUp(bytes, kWeightAlign);
  } else {
    auto own = DeviceAlloc(bytes, "a weight");
    if (!own.ok()) return own.status();
    w.own = std::move(*own);
    w.storage = w.own.get();
  }
  absl::Status copied;
  if (w.info.stored_dtype == DType::kF32) {
    copied = CudaStatus(cudaMemcpy(w.storage, values.data(), bytes, cudaMemcpyHostToDevice),
                        "cudaMemcpy(weight)");
  } else {
    // Exact when the file held this dtype (the values are its widening); rounded to nearest even
    // otherwise, as on the CPU.
    std::vector<uint16_t> half(values.size());
    const bool bf16 = w.info.stored_dtype == DType::kBF16;
    for (size_t i = 0; i < values.size(); ++i) {
      half[i] = bf16 ? FloatToBf16(values[i]) : FloatToF16(values[i]);
    }
    copied = CudaStatus(cudaMemcpy(w.storage, half.data(), bytes, cudaMemcpyHostToDevice),
                        "cudaMemcpy(weight)");
  }
  if (!copied.ok()) return copied;
  weights_.push_back(std::move(w));
  return WeightHandle{static_cast<int32_t>(weights_.size() - 1)};
}

absl::StatusOr<WeightInfo> CudaBackend::Info(WeightHandle weight) const {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  return (*w)->info;
}

absl::StatusOr<std::vector<float>> CudaBackend::ReadDevice(const void* data, DType dtype,
                                                           int64_t elements) const {
  if (auto s = context_->Sync("ReadWeight"); !s.ok()) return s;
  std::vector<float> out(static_cast<size_t>(elements));
  if (dtype == DType::kF32) {
    if (auto s = CudaStatus(cudaMemcpy(out.data(), data, out.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost),
                            "cudaMemcpy(read weight)");
        !s.ok()) {
      return s;
    }
    return out;
  }
  std::vector<uint16_t> half(out.size());
  if (auto s = CudaStatus(cudaMemcpy(half.data(), data, half.size() * sizeof(uint16_t),
                                     cudaMemcpyDeviceToHost),
                          "cudaMemcpy(read weight)");
      !s.ok()) {
    return s;
  }
  ToFloat(dtype, reinterpret_cast<const uint8_t*>(half.data()), out.size(), out.data());
  return out;
}

absl::StatusOr<std::vector<float>> CudaBackend::ReadWeight(WeightHandle weight) const {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  const Weight& wt = **w;
  return ReadDevice(wt.live(), wt.live_is_f32() ? DType::kF32 : wt.info.stored_dtype,
                    wt.elements);
}

absl::StatusOr<std::vector<float>> CudaBackend::ReadPristineWeight(WeightHandle weight) const {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  const Weight& wt = **w;
  if (wt.pristine != nullptr) return ReadDevice(wt.pristine.get(), DType::kF32, wt.elements);
  return ReadDevice(wt.storage, wt.info.stored_dtype, wt.elements);
}

absl::Status CudaBackend::MergeLora(WeightHandle weight, const LoraModuleWeights& module,
                                    std::span<const float> dora_scale) {
  auto found = Find(weight);
  if (!found.ok()) return found.status();
  Weight& w = **found;
  if (w.info.shape.size() != 2) return absl::InvalidArgumentError("MergeLora: not a matrix");
  const int64_t out = w.info.shape[0], in = w.info.shape[1];
  if (module.rank < 1 || static_cast<int64_t>(module.a.size()) != module.rank * in ||
      static_cast<int64_t>(module.b.size()) != out * module.rank) {
    return absl::InvalidArgumentError("MergeLora: adapter factors do not match the weight");
  }
  if (!dora_scale.empty() && static_cast<int64_t>(dora_scale.size()) != out) {
    return absl::InvalidArgumentError("MergeLora: dora_scale must have one entry per row");
  }
  cudaStream_t stream = context_->compute;
  const size_t f32_bytes = static_cast<size_t>(w.elements) * sizeof(float);
  // The live fp32 weights start from the pristine ones: a second merge replaces the first.
  if (w.info.stored_dtype != DType::kF32) {
    if (w.live_f32 == nullptr) {
      auto live = DeviceAlloc(f32_bytes, "a merged weight");
      if (!live.ok()) return live.status();
      w.live_f32 = std::move(*live);
    }
    if (auto s = Launched(kc::WidenToF32(static_cast<const uint16_t*>(w.storage),
                                         w.info.stored_dtype == DType::kBF16, w.elements,
                                         static_cast<float*>(w.live_f32.get()), stream),
                          "WidenToF32");
        !s.ok()) {
      return s;
    }
  } else if (w.pristine != nullptr) {
    if (auto s = CudaStatus(cudaMemcpyAsync(w.storage, w.pristine.get(), f32_bytes,
                                            cudaMemcpyDeviceToDevice, stream),
                            "cudaMemcpyAsync(pristine -> live)");
        !s.ok()) {
      return s;
    }
  } else {
    auto pristine = DeviceAlloc(f32_bytes, "a pristine weight copy");
    if (!pristine.ok()) return pristine.status();
    w.pristine = std::move(*pristine);
    if (auto s = CudaStatus(cudaMemcpyAsync(w.pristine.get(), w.storage, f32_bytes,
                                            cudaMemcpyDeviceToDevice, stream),
                            "cudaMemcpyAsync(live -> pristine)");
        !s.ok()) {
      return s;
    }
  }
  w.info.merged = true;
  float* live = w.live_f32 ? static_cast<float*>(w.live_f32.get()) : static_cast<float*>(w.storage);
  // A and B (and DoRA's scale) go up once; W += scaling * B A is one GEMM.
  const size_t a_bytes = module.a.size() * sizeof(float), b_bytes = module.b.size() * sizeof(float);
  const size_t scale_bytes = dora_scale.size() * sizeof(float);
  auto scratch = merge_scratch_.Get(AlignUp(a_bytes, 256) + AlignUp(b_bytes, 256) + scale_bytes,
                                    *context_, "merge scratch");
  if (!scratch.ok()) return scratch.status();
  auto* a = static_cast<float*>(*scratch);
  auto* b = reinterpret_cast<float*>(static_cast<char*>(*scratch) + AlignUp(a_bytes, 256));
  auto* scale = reinterpret_cast<float*>(reinterpret_cast<char*>(b) + AlignUp(b_bytes, 256));
  if (auto s = CudaStatus(cudaMemcpyAsync(a, module.a.data(), a_bytes, cudaMemcpyHostToDevice,
                                          stream),
                          "cudaMemcpyAsync(merge A)");
      !s.ok()) {
    return s;
  }
  if (auto s = CudaStatus(cudaMemcpyAsync(b, module.b.data(), b_bytes, cudaMemcpyHostToDevice,
                                          stream),
                          "cudaMemcpyAsync(merge B)");
      !s.ok()) {
    return s;
  }
  // Row-major W[out x in] is column-major in x out: W^T += A^T(in x rank) B^T(rank x out), i.e.
  // column-major A (ld in) times column-major B (ld rank).
  const float alpha = module.scaling, beta = 1.0f;
  if (auto s = CublasStatus(cublasSgemm(context_->cublas, CUBLAS_OP_N, CUBLAS_OP_N,
                                        static_cast<int>(in), static_cast<int>(out), module.rank,
                                        &alpha, a, static_cast<int>(in), b, module.rank, &beta,
                                        live, static_cast<int>(in)),
                            "cublasSgemm(merge)");
      !s.ok()) {
    return s;
  }
  if (!dora_scale.empty()) {
    if (auto s = CudaStatus(cudaMemcpyAsync(scale, dora_scale.data(), scale_bytes,
                                            cudaMemcpyHostToDevice, stream),
                            "cudaMemcpyAsync(merge DoRA scale)");
        !s.ok()) {
      return s;
    }
    if (auto s = Launched(kc::ScaleRows(live, out, in, scale, stream), "ScaleRows"); !s.ok()) {
      return s;
    }
  }
  // The host factors are the caller's: they must not be read after return.
  return context_->Sync("MergeLora");
}

absl::Status CudaBackend::RestoreWeight(WeightHandle weight) {
  auto found = Find(weight);
  if (!found.ok()) return found.status();
  Weight& w = **found;
  if (!w.info.merged) return absl::OkStatus();
  if (auto s = context_->Sync("RestoreWeight"); !s.ok()) return s;  // no step reads it now
  if (w.live_f32 != nullptr) {
    w.live_f32.reset();  // back to the untouched 16-bit storage
  } else if (w.pristine != nullptr) {
    if (auto s = CudaStatus(cudaMemcpy(w.storage, w.pristine.get(),
                                       static_cast<size_t>(w.elements) * sizeof(float),
                                       cudaMemcpyDeviceToDevice),
                            "cudaMemcpy(pristine -> live)");
        !s.ok()) {
      return s;
    }
    w.pristine.reset();
  }
  w.info.merged = false;
  return absl::OkStatus();
}

// ---- memory

absl::StatusOr<std::unique_ptr<PoolStorage>> CudaBackend::CreatePool(int64_t page_units,
                                                                     int32_t num_pages) {
  if (page_units <= 0 || num_pages < 0) {
    return absl::InvalidArgumentError("CreatePool: page_units must be positive");
  }
  auto pool = CudaPool::Create(context_, page_units, num_pages, kDoraTailUnits);
  if (!pool.ok()) return pool.status();
  return std::unique_ptr<PoolStorage>(std::move(*pool));
}

absl::StatusOr<Buffer> CudaBackend::Allocate(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) return absl::InvalidArgumentError("Allocate: negative shape");
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(float);
  auto memory = activations_->Get(bytes);
  if (!memory.ok()) return memory.status();
  if (bytes > 0) {
    if (auto s = CudaStatus(cudaMemsetAsync(memory->get(), 0, bytes, context_->compute),
                            "cudaMemsetAsync(activations)");
        !s.ok()) {
      return s;
    }
  }
  Tensor t{memory->get(), DType::kF32, rows, cols, cols};
  return Buffer(t, std::move(*memory));
}

absl::StatusOr<Tensor> CudaBackend::ViewHost(float*, int64_t, int64_t) {
  return absl::UnimplementedError("ViewHost: CUDA activations live on the device");
}

absl::Status CudaBackend::CopyToHost(const Tensor& x, std::span<float> out) {
  if (auto s = CheckF32(x, "CopyToHost", "x"); !s.ok()) return s;
  if (static_cast<int64_t>(out.size()) < x.elements()) {
    return absl::InvalidArgumentError("CopyToHost: output too small");
  }
  if (x.elements() == 0) return absl::OkStatus();
  if (auto s = CudaStatus(cudaMemcpy2DAsync(out.data(), x.cols * sizeof(float), x.data,
                                            x.ld * sizeof(float), x.cols * sizeof(float), x.rows,
                                            cudaMemcpyDeviceToHost, context_->compute),
                          "cudaMemcpy2DAsync(to host)");
      !s.ok()) {
    return s;
  }
  return context_->Sync("CopyToHost");
}

// ---- forward-pass ops

absl::Status CudaBackend::Embed(WeightHandle table, std::span<const int32_t> ids,
                                const Tensor& out) {
  auto w = Find(table);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(out, "Embed", "out"); !s.ok()) return s;
  const auto& shape = (*w)->info.shape;
  if (shape.size() != 2 || shape[1] != out.cols || static_cast<int64_t>(ids.size()) != out.rows) {
    return absl::InvalidArgumentError("Embed: table and output shapes disagree");
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= shape[0]) {
      return absl::InvalidArgumentError(absl::StrCat("Embed: token id ", id, " out of range"));
    }
  }
  if (ids.empty()) return absl::OkStatus();
  auto device_ids = Stage(ids.data(), ids.size_bytes());
  if (!device_ids.ok()) return device_ids.status();
  const Weight& t = **w;
  const kernels::LoraDtype dtype = t.live_is_f32()                      ? kernels::LoraDtype::kF32
                                   : t.info.stored_dtype == DType::kBF16 ? kernels::LoraDtype::kBF16
                                                                         : kernels::LoraDtype::kF16;
  return Launched(kc::Embed(t.live(), dtype, shape[1], static_cast<const int32_t*>(*device_ids),
                            static_cast<int>(ids.size()), F32(out), out.ld, context_->compute),
                  "Embed");
}

absl::Status CudaBackend::GatherRows(const Tensor& x, std::span<const int32_t> rows,
                                     const Tensor& out) {
  if (auto s = CheckF32(x, "GatherRows", "x"); !s.ok()) return s;
  if (auto s = CheckF32(out, "GatherRows", "out"); !s.ok()) return s;
  if (out.cols != x.cols || out.rows != static_cast<int64_t>(rows.size())) {
    return absl::InvalidArgumentError("GatherRows: shapes disagree");
  }
  for (int32_t r : rows) {
    if (r < 0 || r >= x.rows) return absl::InvalidArgumentError("GatherRows: bad row");
  }
  if (rows.empty()) return absl::OkStatus();
  auto device_rows = Stage(rows.data(), rows.size_bytes());
  if (!device_rows.ok()) return device_rows.status();
  return Launched(kc::GatherRows(F32(x), x.ld, static_cast<const int32_t*>(*device_rows),
                                 static_cast<int>(rows.size()), static_cast<int>(x.cols), F32(out),
                                 out.ld, context_->compute),
                  "GatherRows");
}

absl::Status CudaBackend::CheckLinear(const Tensor& x, const Weight& w, const Tensor& y) const {
  if (auto s = CheckF32(x, "Linear", "x"); !s.ok()) return s;
  if (auto s = CheckF32(y, "Linear", "y"); !s.ok()) return s;
  const auto& shape = w.info.shape;
  if (shape.size() != 2 || shape[1] != x.cols || shape[0] != y.cols || x.rows != y.rows) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: x ", x.rows, "x", x.cols, ", y ",
                                                   y.rows, "x", y.cols, " do not fit the weight"));
  }
  return absl::OkStatus();
}

absl::StatusOr<const uint16_t*> CudaBackend::Narrow(const Tensor& x, DType dtype) {
  auto scratch = narrow_scratch_.Get(static_cast<size_t>(x.elements()) * sizeof(uint16_t),
                                     *context_, "16-bit activations");
  if (!scratch.ok()) return scratch.status();
  auto* out = static_cast<uint16_t*>(*scratch);
  if (auto s = Launched(kc::NarrowRows(F32(x), x.ld, x.rows, x.cols, dtype == DType::kBF16, out,
                                       context_->compute),
                        "NarrowRows");
      !s.ok()) {
    return s;
  }
  return out;
}

absl::Status CudaBackend::Gemm(const Tensor& x, const uint16_t* x16, const Weight& w,
                               const Tensor& y) {
  const int out = static_cast<int>(w.info.shape[0]);
  const int in = static_cast<int>(w.info.shape[1]);
  const int rows = static_cast<int>(x.rows);
  if (rows == 0) return absl::OkStatus();
  const float alpha = 1.0f, beta = 0.0f;
  // Row-major y[rows x out] = x W^T is column-major y^T(out x rows) = W_cm^T x_cm, with W_cm the
  // column-major (in x out, ld in) view of W and x_cm that of x (in x rows, ld ldx).
  if (w.live_is_f32()) {
    return CublasStatus(
        cublasSgemm(context_->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha,
                    static_cast<const float*>(w.live()), in, F32(x), static_cast<int>(x.ld), &beta,
                    F32(y), static_cast<int>(y.ld)),
        "cublasSgemm(Linear)");
  }
  const cudaDataType type = w.info.stored_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  return CublasStatus(cublasGemmEx(context_->cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha,
                                   w.live(), type, in, x16, type, in, &beta, F32(y), CUDA_R_32F,
                                   static_cast<int>(y.ld), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx(Linear)");
}

absl::Status CudaBackend::Linear(const Tensor& x, WeightHandle weight, const Tensor& y) {
  const LinearTarget target{weight, y};
  return LinearFused(x, {&target, 1});
}

// The targets share one narrowing of x (read once from fp32, written once as 16 bits); each then
// runs its own GEMM, since the outputs are separate views.
absl::Status CudaBackend::LinearFused(const Tensor& x, std::span<const LinearTarget> targets) {
  std::vector<const Weight*> ws;
  for (const LinearTarget& target : targets) {
    auto w = Find(target.weight);
    if (!w.ok()) return w.status();
    if (auto s = CheckLinear(x, **w, target.y); !s.ok()) return s;
    ws.push_back(*w);
  }
  const uint16_t* x16 = nullptr;
  DType narrowed = DType::kF32;
  for (size_t i = 0; i < targets.size(); ++i) {
    const Weight& w = *ws[i];
    if (!w.live_is_f32() && narrowed != w.info.stored_dtype) {
      auto n = Narrow(x, w.info.stored_dtype);
      if (!n.ok()) return n.status();
      x16 = *n;
      narrowed = w.info.stored_dtype;
    }
    if (auto s = Gemm(x, x16, w, targets[i].y); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::LoraOne(const CudaPool& pool, const Tensor& x,
                                  const LoraTargetPlan& target) {
  const Tensor& y = target.y;
  const auto segments = target.plan.segments;
  const auto refs = target.plan.refs;
  for (const kernels::LoraSegment& segment : segments) {
    if (segment.row_begin < 0 || segment.row_end > x.rows || segment.row_end > y.rows ||
        segment.refs_begin < 0 || segment.refs_end > static_cast<int>(refs.size())) {
      return absl::InvalidArgumentError("LoraApply: segment outside the step's rows or refs");
    }
  }
  const int in_dim = static_cast<int>(x.cols), out_dim = static_cast<int>(y.cols);
  // Pool offsets are the host's; the DoRA tail sits after the pages in the same allocation.
  const int64_t units = pool.total_units() + pool.tail_units();
  auto counts = kc::CountLoraTables(segments, refs, pool.total_units(), in_dim, out_dim);
  if (!counts.ok()) return counts.status();
  if (counts->segments == 0) return absl::OkStatus();
  // DoRA factors: staged into the pool's tail, one out_dim row per segment that has one.
  std::vector<int64_t> out_scale_offsets(segments.size(), -1);
  std::vector<float> dora;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].out_scale == nullptr || !kc::LoraSegmentHasWork(segments[i])) continue;
    out_scale_offsets[i] = pool.total_units() + static_cast<int64_t>(dora.size());
    dora.insert(dora.end(), segments[i].out_scale, segments[i].out_scale + out_dim);
  }
  if (static_cast<int64_t>(dora.size()) > pool.tail_units()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "LoraApply: ", dora.size(), " DoRA factors in one call exceed the pool's tail of ",
        pool.tail_units()));
  }
  if (!dora.empty()) {
    // Ordered on the compute stream after every earlier reader of the tail.
    if (auto s = CudaStatus(cudaMemcpyAsync(pool.data() + pool.total_units(), dora.data(),
                                            dora.size() * sizeof(float), cudaMemcpyHostToDevice,
                                            context_->compute),
                            "cudaMemcpyAsync(DoRA factors)");
        !s.ok()) {
      return s;
    }
  }
  const kc::LoraTableCapacity capacity = *counts;  // eager: exactly this call's tables
  const kc::LoraTableLayout layout = kc::LoraTableLayoutFor(capacity);
  auto slot = ring_->Take(static_cast<size_t>(layout.bytes), context_->compute);
  if (!slot.ok()) return slot.status();
  const kc::LoraTables host_tables = kc::LoraTablesAt(slot->host, capacity);
  auto built = kc::BuildLoraTables(segments, refs, nullptr, units, in_dim, out_dim, host_tables,
                                   out_scale_offsets);
  if (!built.ok()) return built.status();
  if (auto s = ring_->Upload(*slot, static_cast<size_t>(layout.bytes), context_->compute); !s.ok()) {
    return s;
  }
  const kc::LoraTables device_tables = kc::LoraTablesAt(slot->device, capacity);
  auto partials = partials_scratch_.Get(
      static_cast<size_t>(kc::LoraPartialsFloats(capacity, in_dim)) * sizeof(float), *context_,
      "LoRA partials");
  if (!partials.ok()) return partials.status();
  return Launched(kc::LoraApplyDevice(pool.data(), device_tables, F32(x), x.ld, in_dim,
                                      static_cast<float*>(*partials), F32(y), y.ld, out_dim,
                                      context_->compute),
                  "LoraApplyDevice");
}

absl::Status CudaBackend::LoraApply(const PoolStorage& pool, const Tensor& x, const Tensor& y,
                                    const LoraModulePlan& plan) {
  const LoraTargetPlan target{y, plan};
  return LoraApplyFused(pool, x, {&target, 1});
}

absl::Status CudaBackend::LoraApplyFused(const PoolStorage& pool, const Tensor& x,
                                         std::span<const LoraTargetPlan> targets) {
  const CudaPool* device_pool = AsCudaPool(pool);
  if (device_pool == nullptr) {
    return absl::InvalidArgumentError("LoraApply: the pool belongs to another backend");
  }
  if (auto s = CheckF32(x, "LoraApply", "x"); !s.ok()) return s;
  if (auto s = device_pool->BeforeUse(); !s.ok()) return s;
  for (const LoraTargetPlan& target : targets) {
    if (target.plan.segments.empty()) continue;
    if (auto s = CheckF32(target.y, "LoraApply", "y"); !s.ok()) return s;
    if (auto s = LoraOne(*device_pool, x, target); !s.ok()) return s;
  }
  return device_pool->AfterUse();
}

absl::Status CudaBackend::AddBias(const Tensor& y, WeightHandle bias) {
  auto w = Find(bias);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(y, "AddBias", "y"); !s.ok()) return s;
  if ((*w)->elements != y.cols || (*w)->info.stored_dtype != DType::kF32) {
    return absl::InvalidArgumentError("AddBias: bias length differs from the output width");
  }
  return Launched(kc::AddBias(F32(y), y.ld, static_cast<int>(y.rows), static_cast<int>(y.cols),
                              static_cast<const float*>((*w)->storage), context_->compute),
                  "AddBias");
}

absl::Status CudaBackend::RmsNorm(const Tensor& x, WeightHandle weight, float eps,
                                  const Tensor& out) {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(x, "RmsNorm", "x"); !s.ok()) return s;
  if (auto s = CheckF32(out, "RmsNorm", "out"); !s.ok()) return s;
  if (auto s = CheckSame(x, out, "RmsNorm"); !s.ok()) return s;
  if ((*w)->elements != x.cols || (*w)->info.stored_dtype != DType::kF32) {
    return absl::InvalidArgumentError("RmsNorm: weight length differs from the row width");
  }
  return Launched(kc::RmsNorm(F32(x), x.ld, static_cast<const float*>((*w)->storage),
                              static_cast<int>(x.rows), static_cast<int>(x.cols), eps, F32(out),
                              out.ld, context_->compute),
                  "RmsNorm");
}

absl::Status CudaBackend::Rope(const Tensor& x, int num_heads, int head_dim,
                               std::span<const int32_t> positions, WeightHandle inv_freq) {
  auto w = Find(inv_freq);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(x, "Rope", "x"); !s.ok()) return s;
  if (static_cast<int64_t>(positions.size()) != x.rows ||
      x.cols != int64_t{num_heads} * head_dim || (*w)->elements != head_dim / 2) {
    return absl::InvalidArgumentError("Rope: positions, heads or frequencies disagree with x");
  }
  if (positions.empty()) return absl::OkStatus();
  auto device_positions = Stage(positions.data(), positions.size_bytes());
  if (!device_positions.ok()) return device_positions.status();
  return Launched(kc::Rope(F32(x), x.ld, static_cast<int>(x.rows), num_heads, head_dim,
                           static_cast<const int32_t*>(*device_positions),
                           static_cast<const float*>((*w)->storage), context_->compute),
                  "Rope");
}

absl::Status CudaBackend::StoreKv(PoolStorage& pool, const kernels::KvPageLayout& layout,
                                  int layer, std::span<const kernels::AttentionSeq> seqs,
                                  std::span<const int32_t> positions, const Tensor& k,
                                  const Tensor& v) {
  const CudaPool* device_pool = AsCudaPool(pool);
  if (device_pool == nullptr) {
    return absl::InvalidArgumentError("StoreKv: the pool belongs to another backend");
  }
  if (auto s = CheckSame(k, v, "StoreKv"); !s.ok()) return s;
  if (k.cols != layout.kv_dim || k.ld != v.ld) {
    return absl::InvalidArgumentError("StoreKv: k/v width differs from the KV layout");
  }
  if (layout.page_floats() > pool.page_units()) {
    return absl::InvalidArgumentError("StoreKv: a KV block does not fit in one pool page");
  }
  if (layer < 0 || layer >= layout.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("StoreKv: layer ", layer, " out of range"));
  }
  // The host resolves each row's cache slot (page * block_size + slot) from its block table.
  std::vector<int32_t> row_slots(static_cast<size_t>(k.rows), -1);
  for (const kernels::AttentionSeq& seq : seqs) {
    if (seq.token_begin < 0 || seq.token_end > k.rows) {
      return absl::InvalidArgumentError("StoreKv: sequence rows outside the step");
    }
    for (int r = seq.token_begin; r < seq.token_end; ++r) {
      const int32_t pos = positions[r];
      const int32_t page = seq.block_table[pos / layout.block_size];
      if (page < 0 || page >= pool.num_pages()) {
        return absl::OutOfRangeError(absl::StrCat("StoreKv: page ", page, " outside the pool"));
      }
      row_slots[r] = page * layout.block_size + pos % layout.block_size;
    }
  }
  for (int32_t slot : row_slots) {
    if (slot < 0) return absl::InvalidArgumentError("StoreKv: a row belongs to no sequence");
  }
  if (row_slots.empty()) return absl::OkStatus();
  if (auto s = device_pool->BeforeUse(); !s.ok()) return s;
  auto device_slots = Stage(row_slots.data(), row_slots.size() * sizeof(int32_t));
  if (!device_slots.ok()) return device_slots.status();
  if (auto s = Launched(kc::StoreKv(device_pool->data(), layout, layer,
                                    static_cast<const int32_t*>(*device_slots), F32(k), F32(v),
                                    k.ld, static_cast<int>(k.rows), context_->compute),
                        "StoreKv");
      !s.ok()) {
    return s;
  }
  return device_pool->AfterUse();
}

absl::Status CudaBackend::PagedAttention(const PoolStorage& pool,
                                         const kernels::KvPageLayout& layout, int layer,
                                         std::span<const kernels::AttentionSeq> seqs,
                                         std::span<const int32_t> positions, const Tensor& q,
                                         int num_heads, int num_kv_heads, int head_dim,
                                         const Tensor& out) {
  const CudaPool* device_pool = AsCudaPool(pool);
  if (device_pool == nullptr) {
    return absl::InvalidArgumentError("PagedAttention: the pool belongs to another backend");
  }
  if (auto s = CheckF32(q, "PagedAttention", "q"); !s.ok()) return s;
  if (auto s = CheckF32(out, "PagedAttention", "out"); !s.ok()) return s;
  if (auto s = CheckSame(q, out, "PagedAttention"); !s.ok()) return s;
  if (static_cast<int64_t>(positions.size()) != q.rows) {
    return absl::InvalidArgumentError("PagedAttention: one position per row");
  }
  if (q.rows == 0) return absl::OkStatus();
  auto counts = kc::CountAttentionTables(seqs, positions, layout.block_size);
  if (!counts.ok()) return counts.status();
  const kc::AttentionTableCapacity capacity = *counts;  // eager: exactly this call's tables
  const kc::AttentionTableLayout table_layout = kc::AttentionTableLayoutFor(capacity);
  auto slot = ring_->Take(static_cast<size_t>(table_layout.bytes), context_->compute);
  if (!slot.ok()) return slot.status();
  auto built = kc::BuildAttentionTables(seqs, positions, layout.block_size,
                                        kc::AttentionTablesAt(slot->host, capacity));
  if (!built.ok()) return built.status();
  if (auto s = ring_->Upload(*slot, static_cast<size_t>(table_layout.bytes), context_->compute);
      !s.ok()) {
    return s;
  }
  auto scratch = attention_scratch_.Get(
      static_cast<size_t>(kc::AttentionScratchFloats(capacity, num_heads, head_dim)) *
          sizeof(float),
      *context_, "attention partials");
  if (!scratch.ok()) return scratch.status();
  if (auto s = device_pool->BeforeUse(); !s.ok()) return s;
  if (auto s = Launched(kc::PagedAttention(device_pool->data(), layout, layer,
                                           kc::AttentionTablesAt(slot->device, capacity), F32(q),
                                           q.ld, num_heads, num_kv_heads, head_dim,
                                           static_cast<float*>(*scratch), F32(out), out.ld,
                                           context_->compute),
                        "PagedAttention");
      !s.ok()) {
    return s;
  }
  return device_pool->AfterUse();
}

absl::Status CudaBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  if (auto s = CheckSame(gate, up, "SiluMul"); !s.ok()) return s;
  if (auto s = CheckSame(gate, out, "SiluMul"); !s.ok()) return s;
  if (gate.ld != gate.cols || up.ld != up.cols || out.ld != out.cols) {
    return absl::InvalidArgumentError("SiluMul: needs contiguous rows");
  }
  return Launched(kc::SiluMul(F32(gate), F32(up), gate.elements(), F32(out), context_->compute),
                  "SiluMul");
}

absl::Status CudaBackend::Add(const Tensor& x, const Tensor& y) {
  if (auto s = CheckSame(x, y, "Add"); !s.ok()) return s;
  return Launched(kc::Add(F32(x), x.ld, F32(y), y.ld, static_cast<int>(x.rows),
                          static_cast<int>(x.cols), context_->compute),
                  "Add");
}

absl::Status CudaBackend::ArgmaxRows(const Tensor& logits, std::span<int32_t> out) {
  if (auto s = CheckF32(logits, "ArgmaxRows", "logits"); !s.ok()) return s;
  if (static_cast<int64_t>(out.size()) != logits.rows) {
    return absl::InvalidArgumentError("ArgmaxRows: one output per row");
  }
  if (out.empty()) return absl::OkStatus();
  auto device_out = argmax_scratch_.Get(out.size_bytes(), *context_, "argmax");
  if (!device_out.ok()) return device_out.status();
  if (auto s = Launched(kc::ArgmaxRows(F32(logits), logits.ld, static_cast<int>(logits.rows),
                                       static_cast<int>(logits.cols),
                                       static_cast<int32_t*>(*device_out), context_->compute),
                        "ArgmaxRows");
      !s.ok()) {
    return s;
  }
  if (auto s = CudaStatus(cudaMemcpyAsync(out.data(), *device_out, out.size_bytes(),
                                          cudaMemcpyDeviceToHost, context_->compute),
                          "cudaMemcpyAsync(argmax)");
      !s.ok()) {
    return s;
  }
  return context_->Sync("ArgmaxRows");
}

}  // namespace

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clears the sticky "no device" error for later calls
    return 0;
  }
  return count;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options,
                                                           std::string* description) {
  const int count = CudaDeviceCount();
  if (options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda device ", options.device, " requested but ", count, " CUDA device(s) answer"));
  }
  cudaDeviceProp prop{};
  if (auto s = CudaStatus(cudaGetDeviceProperties(&prop, options.device),
                          "cudaGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  auto context = CudaContext::Create(options.device);
  if (!context.ok()) return context.status();
  auto ring = StagingRing::Create(kStagingRingBytes);
  if (!ring.ok()) return ring.status();
  if (description != nullptr) {
    *description = absl::StrCat("cuda (", prop.name, ", sm_", prop.major, prop.minor, ", ",
                                prop.totalGlobalMem >> 30, " GiB)");
  }
  return std::unique_ptr<Backend>(new CudaBackend(options, std::move(*context), std::move(*ring)));
}

}  // namespace loraserve
