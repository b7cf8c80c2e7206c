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
#include <optional>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/backend/view_checks.h"
#include "formats/dtype.h"
#include "formats/half.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_table_builder.h"
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

// Memory every graph step bumps from offset 0 (one step runs at a time): activations, scratch
// and the device half of the tables; the pinned host half of the tables, copied in one
// cudaMemcpyAsync before each launch; and pinned targets of the device-to-host copies.
// Growing any of them moves its base, so every captured graph is dropped.
struct GraphMemory {
  DevicePtr device;
  size_t device_bytes = 0;
  cuda_backend::PinnedPtr stage_host;
  DevicePtr stage_device;
  size_t stage_bytes = 0;
  cuda_backend::PinnedPtr out_host;
  size_t out_bytes = 0;
};

absl::StatusOr<GraphMemory> AllocateGraphMemory(size_t device_bytes, size_t stage_bytes,
                                                size_t out_bytes) {
  GraphMemory memory;
  auto device = DeviceAlloc(device_bytes, "graph activations");
  if (!device.ok()) return device.status();
  auto stage_device = DeviceAlloc(stage_bytes, "graph tables");
  if (!stage_device.ok()) return stage_device.status();
  void* stage_host = nullptr;
  if (auto s = CudaStatus(cudaMallocHost(&stage_host, stage_bytes), "cudaMallocHost(graph tables)");
      !s.ok()) {
    return s;
  }
  memory.stage_host.reset(stage_host);
  void* out_host = nullptr;
  if (auto s = CudaStatus(cudaMallocHost(&out_host, out_bytes), "cudaMallocHost(graph outputs)");
      !s.ok()) {
    return s;
  }
  memory.out_host.reset(out_host);
  memory.device = std::move(*device);
  memory.stage_device = std::move(*stage_device);
  memory.device_bytes = device_bytes;
  memory.stage_bytes = stage_bytes;
  memory.out_bytes = out_bytes;
  return memory;
}

struct GraphKey {
  int rows = 0;       // padded rows
  int blocks = 0;     // block-table entries per sequence, a power of two
  int rank_rows = 0;  // LoRA rank rows per module call, a power of two (0: no adapter)
  int segment_ranks = 0;  // rank rows of any one segment, a power of two
  auto operator<=>(const GraphKey&) const = default;
};

struct CapturedGraph {
  cudaGraphExec_t exec = nullptr;
  // Every memory request of the capture, (arena, bytes) in order: a replay that asks for
  // anything else has diverged from the graph and runs eagerly instead.
  std::vector<std::pair<int, size_t>> requests;
  ~CapturedGraph() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  }
};

enum GraphArena { kDeviceArena = 0, kStageArena = 1, kOutArena = 2 };

// The graph step in flight, between BeginGraphStep and EndGraphStep.
struct GraphStep {
  GraphKey key;
  CapturedGraph* graph = nullptr;
  bool capturing = false;
  bool diverged = false;
  size_t request = 0;
  size_t used[3] = {0, 0, 0};
  struct HostCopy {
    const void* from;
    void* to;
    size_t bytes;
  };
  std::vector<HostCopy> host_copies;
};

int NextPowerOfTwo(int n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

constexpr int kMaxGraphRows = 256;
constexpr int kMaxGraphRankRows = 8192;

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

  int GraphRows(const StepShape& shape) const override;
  absl::Status BeginGraphStep(const StepShape& padded) override;
  absl::Status EndGraphStep(bool ok) override;

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
  struct TableSlot {
    void* host;    // fill these bytes on the host...
    void* device;  // ...and kernels read them here
  };
  // Room for one op's host tables: the staging ring eagerly, the graph staging in a graph step.
  absl::StatusOr<TableSlot> TakeTables(size_t bytes);
  // Eagerly copies the filled tables now; a graph step copies all of its tables before launch.
  absl::Status CommitTables(const TableSlot& slot, size_t bytes);
  // Stages `bytes` of host data for the device; returns the device address.
  absl::StatusOr<void*> Stage(const void* data, size_t bytes);
  // Device scratch: `eager` grows as needed; in a graph step it comes from the graph arena.
  absl::StatusOr<void*> DeviceTemp(Scratch& eager, size_t bytes, const char* what);
  // Memory from one of the graph arenas at the step's next offset, checked against the capture.
  absl::StatusOr<void*> GraphTake(GraphArena arena, size_t bytes);
  // True while a graph step replays: ops stage their tables and enqueue nothing.
  bool Replaying() const { return step_.has_value() && !step_->capturing; }
  bool InGraphStep() const { return step_.has_value(); }
  absl::Status DropGraphs();
  absl::StatusOr<std::vector<float>> ReadDevice(const void* data, DType dtype,
                                                int64_t elements) const;
  // y = x W^T through cuBLAS; x16 is x already narrowed to the weight's 16-bit type (or null).
  absl::Status Gemm(const Tensor& x, const uint16_t* x16, const Weight& w, const Tensor& y);
  absl::StatusOr<const uint16_t*> Narrow(const Tensor& x, DType dtype);
  // Whether the targets can run as one GEMM: unmerged weights of one dtype lying back to back
  // (the model uploads q/k/v and gate/up in order, so the arena holds them so) and outputs that
  // are adjacent column ranges of one buffer with one ld.
  static bool Stacked(std::span<const LinearTarget> targets, std::span<const Weight* const> ws);
  absl::Status LoraFused(const CudaPool& pool, const Tensor& x,
                         std::span<const LoraTargetPlan> targets);

  CudaBackendOptions options_;
  std::shared_ptr<CudaContext> context_;
  std::unique_ptr<StagingRing> ring_;
  std::shared_ptr<ActivationCache> activations_;
  Scratch narrow_scratch_, partials_scratch_, attention_scratch_, merge_scratch_, argmax_scratch_;
  DevicePtr arena_;
  size_t arena_bytes_ = 0, arena_used_ = 0;
  GraphMemory graph_memory_;
  std::map<GraphKey, std::unique_ptr<CapturedGraph>> graphs_;
  std::optional<GraphStep> step_;
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

absl::StatusOr<CudaBackend::TableSlot> CudaBackend::TakeTables(size_t bytes) {
  if (InGraphStep()) {
    auto host = GraphTake(kStageArena, bytes);
    if (!host.ok()) return host.status();
    const size_t offset = static_cast<char*>(*host) - static_cast<char*>(graph_memory_.stage_host.get());
    return TableSlot{*host, static_cast<char*>(graph_memory_.stage_device.get()) + offset};
  }
  auto slot = ring_->Take(bytes, context_->compute);
  if (!slot.ok()) return slot.status();
  return TableSlot{slot->host, slot->device};
}

absl::Status CudaBackend::CommitTables(const TableSlot& slot, size_t bytes) {
  if (InGraphStep() || bytes == 0) return absl::OkStatus();
  return CudaStatus(
      cudaMemcpyAsync(slot.device, slot.host, bytes, cudaMemcpyHostToDevice, context_->compute),
      "cudaMemcpyAsync(staged tables)");
}

absl::StatusOr<void*> CudaBackend::Stage(const void* data, size_t bytes) {
  auto slot = TakeTables(bytes);
  if (!slot.ok()) return slot.status();
  std::memcpy(slot->host, data, bytes);
  if (auto s = CommitTables(*slot, bytes); !s.ok()) return s;
  return slot->device;
}

absl::StatusOr<void*> CudaBackend::DeviceTemp(Scratch& eager, size_t bytes, const char* what) {
  if (InGraphStep()) return GraphTake(kDeviceArena, bytes);
  return eager.Get(bytes, *context_, what);
}

absl::StatusOr<void*> CudaBackend::GraphTake(GraphArena arena, size_t bytes) {
  GraphStep& step = *step_;
  bytes = AlignUp(std::max<size_t>(bytes, 1), kWeightAlign);
  std::vector<std::pair<int, size_t>>& requests = step.graph->requests;
  if (step.capturing) {
    requests.emplace_back(arena, bytes);
  } else if (step.request >= requests.size() || requests[step.request] != std::pair<int, size_t>(arena, bytes)) {
    step.diverged = true;
    return absl::AbortedError("graph step: the step's memory requests differ from the capture's");
  }
  ++step.request;
  const size_t capacity[3] = {graph_memory_.device_bytes, graph_memory_.stage_bytes,
                              graph_memory_.out_bytes};
  char* base[3] = {static_cast<char*>(graph_memory_.device.get()),
                   static_cast<char*>(graph_memory_.stage_host.get()),
                   static_cast<char*>(graph_memory_.out_host.get())};
  if (step.used[arena] + bytes > capacity[arena]) {
    // Grown at EndGraphStep (moving the base drops every graph); this step runs eagerly.
    step.used[arena] += bytes;
    step.diverged = true;
    return absl::AbortedError("graph step: graph memory is short; it grows for the next capture");
  }
  void* p = base[arena] + step.used[arena];
  step.used[arena] += bytes;
  return p;
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
  if (auto s = CheckElements(shape, values.size()); !s.ok()) return s;
  Weight w;
  w.info.stored_dtype = StoredDtype(options_.weight_dtype, source_dtype, shape.size());
  w.info.shape = std::move(shape);
  w.info.source_dtype = source_dtype;
  w.elements = static_cast<int64_t>(values.size());
  const size_t bytes = values.size() * DTypeSize(w.info.stored_dtype);
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
  // Graphs hold the live weights' addresses, and a merge changes them.
  if (auto s = DropGraphs(); !s.ok()) return s;
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
  if (auto s = DropGraphs(); !s.ok()) return s;
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
  if (InGraphStep()) {
    auto p = GraphTake(kDeviceArena, bytes);
    if (!p.ok()) return p.status();
    if (!Replaying() && bytes > 0) {
      if (auto s = CudaStatus(cudaMemsetAsync(*p, 0, bytes, context_->compute),
                              "cudaMemsetAsync(activations)");
          !s.ok()) {
        return s;
      }
    }
    // The graph arena owns the memory; the buffer's owner is a no-op.
    return Buffer(Tensor{*p, DType::kF32, rows, cols, cols}, std::shared_ptr<void>(*p, [](void*) {}));
  }
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
  if (InGraphStep()) {
    // Into pinned memory inside the graph; the caller's buffer (which may hold only the real,
    // unpadded rows) is filled after the launch.
    const size_t bytes = static_cast<size_t>(x.elements()) * sizeof(float);
    auto pinned = GraphTake(kOutArena, bytes);
    if (!pinned.ok()) return pinned.status();
    step_->host_copies.push_back(
        {*pinned, out.data(), std::min(bytes, out.size() * sizeof(float))});
    if (Replaying() || bytes == 0) return absl::OkStatus();
    return CudaStatus(cudaMemcpy2DAsync(*pinned, x.cols * sizeof(float), x.data,
                                        x.ld * sizeof(float), x.cols * sizeof(float), x.rows,
                                        cudaMemcpyDeviceToHost, context_->compute),
                      "cudaMemcpy2DAsync(to host, graph)");
  }
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
  if (Replaying()) return absl::OkStatus();
  const Weight& t = **w;
  const DType dtype = t.live_is_f32() ? DType::kF32 : t.info.stored_dtype;
  return Launched(kc::Embed(t.live(), dtype, shape[1], shape[0],
                            static_cast<const int32_t*>(*device_ids), static_cast<int>(ids.size()),
                            static_cast<int>(shape[1]), F32(out), out.ld, context_->compute),
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
  if (Replaying()) return absl::OkStatus();
  return Launched(kc::GatherRows(F32(x), x.ld, x.rows, static_cast<const int32_t*>(*device_rows),
                                 static_cast<int>(rows.size()), static_cast<int>(x.cols), F32(out),
                                 out.ld, context_->compute),
                  "GatherRows");
}

absl::StatusOr<const uint16_t*> CudaBackend::Narrow(const Tensor& x, DType dtype) {
  auto scratch = DeviceTemp(narrow_scratch_, static_cast<size_t>(x.elements()) * sizeof(uint16_t),
                            "16-bit activations");
  if (!scratch.ok()) return scratch.status();
  auto* out = static_cast<uint16_t*>(*scratch);
  if (Replaying()) return out;
  const int rows = static_cast<int>(x.rows), cols = static_cast<int>(x.cols);
  if (auto s = dtype == DType::kBF16
                   ? Launched(kc::CastF32ToBf16(F32(x), x.ld, rows, cols, out, context_->compute),
                              "CastF32ToBf16")
                   : Launched(kc::CastF32ToF16(F32(x), x.ld, rows, cols, out, context_->compute),
                              "CastF32ToF16");
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
  if (rows == 0 || Replaying()) return absl::OkStatus();
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

bool CudaBackend::Stacked(std::span<const LinearTarget> targets,
                          std::span<const Weight* const> ws) {
  for (size_t i = 1; i < targets.size(); ++i) {
    const Weight& prev = *ws[i - 1];
    const Weight& w = *ws[i];
    if (prev.live_f32 != nullptr || w.live_f32 != nullptr ||
        w.info.stored_dtype != prev.info.stored_dtype || w.info.shape[1] != prev.info.shape[1]) {
      return false;
    }
    const size_t prev_bytes = static_cast<size_t>(prev.elements) * DTypeSize(prev.info.stored_dtype);
    if (static_cast<const char*>(prev.storage) + prev_bytes != w.storage) return false;
    const Tensor& a = targets[i - 1].y;
    const Tensor& b = targets[i].y;
    if (a.ld != b.ld || a.rows != b.rows ||
        static_cast<const float*>(a.data) + a.cols != static_cast<const float*>(b.data)) {
      return false;
    }
  }
  int64_t cols = 0;
  for (const LinearTarget& t : targets) cols += t.y.cols;
  return cols <= targets[0].y.ld;
}

absl::Status CudaBackend::Linear(const Tensor& x, WeightHandle weight, const Tensor& y) {
  const LinearTarget target{weight, y};
  return LinearFused(x, {&target, 1});
}

// Whether targets [0, n) can run as one GEMM: their live weights lie back to back in one dtype
// (the model uploads q/k/v and gate/up in order, so the arena holds them so, unmerged) and their
// outputs are adjacent column ranges of one buffer.
// The targets share one narrowing of x (read once from fp32, written once as 16 bits), and run as
// one GEMM over the stacked weights where they allow it (OneGemm), else one GEMM each.
absl::Status CudaBackend::LinearFused(const Tensor& x, std::span<const LinearTarget> targets) {
  std::vector<const Weight*> ws;
  for (const LinearTarget& target : targets) {
    auto w = Find(target.weight);
    if (!w.ok()) return w.status();
    if (auto s = CheckLinearViews(x, (*w)->info.shape, target.y); !s.ok()) return s;
    ws.push_back(*w);
  }
  if (targets.size() > 1 && Stacked(targets, ws)) {
    // One weight of sum(out) rows, one output of sum(cols) columns with the first view's ld.
    Weight stacked;
    stacked.info = ws[0]->info;
    int64_t out = 0;
    for (const Weight* w : ws) out += w->info.shape[0];
    stacked.info.shape = {out, ws[0]->info.shape[1]};
    stacked.elements = out * ws[0]->info.shape[1];
    stacked.storage = const_cast<void*>(ws[0]->live());
    Tensor y = targets[0].y;
    y.cols = out;
    const uint16_t* x16 = nullptr;
    if (!stacked.live_is_f32()) {
      auto n = Narrow(x, stacked.info.stored_dtype);
      if (!n.ok()) return n.status();
      x16 = *n;
    }
    return Gemm(x, x16, stacked, y);
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

// All targets read one x (q/k/v, gate/up): their tables are built into one fused set, so one
// shrink launch computes every target's shrink outputs and each target then gets its own expand
// launch over its block (kernels/cuda/lora_table_builder.h).
absl::Status CudaBackend::LoraFused(const CudaPool& pool, const Tensor& x,
                                    std::span<const LoraTargetPlan> targets) {
  // A graph bucket without adapters (its key has no rank rows) launches no LoRA work at all.
  if (InGraphStep() && step_->key.rank_rows == 0) return absl::OkStatus();
  const int in_dim = static_cast<int>(x.cols);
  // Pool offsets are the host's; the DoRA tail sits after the pages in the same allocation.
  const int64_t units = pool.total_units() + pool.tail_units();
  std::vector<kc::LoraFusedModule> modules;
  std::vector<const Tensor*> ys;
  std::vector<std::vector<int64_t>> out_scale_offsets(targets.size());
  std::vector<float> dora;
  for (size_t t = 0; t < targets.size(); ++t) {
    const Tensor& y = targets[t].y;
    const auto segments = targets[t].plan.segments;
    const auto refs = targets[t].plan.refs;
    if (refs.data() != targets[0].plan.refs.data() || refs.size() != targets[0].plan.refs.size()) {
      return absl::InvalidArgumentError("LoraApply: fused targets must share one refs table");
    }
    if (auto s = CheckLoraSegments(x, y, targets[t].plan); !s.ok()) return s;
    const int out_dim = static_cast<int>(y.cols);
    auto counts = kc::CountLoraTables(segments, refs, pool.total_units(), in_dim, out_dim);
    if (!counts.ok()) return counts.status();
    if (counts->segments == 0 && !InGraphStep()) continue;
    // DoRA factors: staged into the pool's tail, one out_dim row per segment that has one.
    out_scale_offsets[t].assign(segments.size(), -1);
    for (size_t i = 0; i < segments.size(); ++i) {
      if (segments[i].out_scale == nullptr || !kc::LoraSegmentHasWork(segments[i])) continue;
      out_scale_offsets[t][i] = pool.total_units() + static_cast<int64_t>(dora.size());
      dora.insert(dora.end(), segments[i].out_scale, segments[i].out_scale + out_dim);
    }
    // Eagerly the tables are exactly this call's; a graph's are its bucket's (fixed grids,
    // tails neutralised by the builder), so any step of the bucket fits the captured launches.
    kc::LoraTableCapacity capacity = *counts;
    if (InGraphStep()) {
      const GraphKey& key = step_->key;
      capacity = kc::LoraCapacityFor({.rows = key.rows, .segments = key.rows,
                                      .rank_rows = key.rank_rows,
                                      .segment_ranks = key.segment_ranks},
                                     out_dim);
      if (!kc::CheckLoraCapacity(*counts, capacity).ok()) {
        return absl::AbortedError("LoraApply: the step outgrew its graph bucket");
      }
    }
    modules.push_back({segments, out_dim, capacity, out_scale_offsets[t]});
    ys.push_back(&y);
  }
  if (modules.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(dora.size()) > pool.tail_units()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "LoraApply: ", dora.size(), " DoRA factors in one call exceed the pool's tail of ",
        pool.tail_units()));
  }
  if (!dora.empty() && InGraphStep()) {
    return absl::AbortedError("LoraApply: DoRA steps run eagerly, not as graphs");
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
  const kc::LoraTableCapacity capacity = kc::LoraFusedCapacity(modules);
  const kc::LoraTableLayout layout = kc::LoraTableLayoutFor(capacity);
  auto slot = TakeTables(static_cast<size_t>(layout.bytes));
  if (!slot.ok()) return slot.status();
  const kc::LoraTables host_tables = kc::LoraTablesAt(slot->host, capacity);
  auto built = kc::BuildFusedLoraTables(modules, targets[0].plan.refs, nullptr, units, in_dim,
                                        host_tables);
  if (!built.ok()) return built.status();
  if (auto s = CommitTables(*slot, static_cast<size_t>(layout.bytes)); !s.ok()) return s;
  const kc::LoraTables device_tables = kc::LoraTablesAt(slot->device, capacity);
  auto partials = DeviceTemp(
      partials_scratch_,
      static_cast<size_t>(kc::LoraPartialsFloats(capacity, in_dim)) * sizeof(float),
      "LoRA partials");
  if (!partials.ok()) return partials.status();
  if (Replaying()) return absl::OkStatus();
  auto* v = static_cast<float*>(*partials);
  if (auto s = Launched(kc::LoraShrink(pool.data(), device_tables, F32(x), x.ld, in_dim, v,
                                       context_->compute),
                        "LoraShrink");
      !s.ok()) {
    return s;
  }
  for (size_t m = 0; m < modules.size(); ++m) {
    const kc::LoraTables view = kc::LoraFusedExpandView(device_tables, modules, m);
    if (auto s = Launched(kc::LoraExpand(pool.data(), view, v, in_dim, F32(*ys[m]), ys[m]->ld,
                                         modules[m].out_dim, context_->compute),
                          "LoraExpand");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
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
  // A graph step waits for pool writes at launch (its capture cannot wait on outside events).
  const bool eager = !InGraphStep();
  if (eager) {
    if (auto s = device_pool->BeforeUse(); !s.ok()) return s;
  }
  std::vector<LoraTargetPlan> work;
  for (const LoraTargetPlan& target : targets) {
    if (target.plan.segments.empty() && eager) continue;
    work.push_back(target);
  }
  if (auto s = LoraFused(*device_pool, x, work); !s.ok()) return s;
  return eager ? device_pool->AfterUse() : absl::OkStatus();
}

absl::Status CudaBackend::AddBias(const Tensor& y, WeightHandle bias) {
  auto w = Find(bias);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(y, "AddBias", "y"); !s.ok()) return s;
  if ((*w)->elements != y.cols || (*w)->info.stored_dtype != DType::kF32) {
    return absl::InvalidArgumentError("AddBias: bias length differs from the output width");
  }
  if (Replaying()) return absl::OkStatus();
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
  if (Replaying()) return absl::OkStatus();
  return Launched(kc::RmsNorm(F32(x), x.ld, static_cast<const float*>((*w)->storage),
                              static_cast<int>(x.rows), static_cast<int>(x.cols), eps, F32(out),
                              out.ld, context_->compute),
                  "RmsNorm");
}

absl::Status CudaBackend::Rope(const Tensor& x, int num_heads, int head_dim,
                               std::span<const int32_t> positions, WeightHandle inv_freq) {
  auto w = Find(inv_freq);
  if (!w.ok()) return w.status();
  if (auto s = CheckRopeViews(x, num_heads, head_dim, positions, (*w)->elements); !s.ok()) {
    return s;
  }
  if (positions.empty()) return absl::OkStatus();
  auto device_positions = Stage(positions.data(), positions.size_bytes());
  if (!device_positions.ok()) return device_positions.status();
  if (Replaying()) return absl::OkStatus();
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
  if (auto s = CheckKvViews(k, v, layout, pool.page_units()); !s.ok()) return s;
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
  // Rows in no sequence keep slot -1 and store nothing, as on the CPU (a graph step's padding).
  if (row_slots.empty()) return absl::OkStatus();
  const bool eager = !InGraphStep();
  if (eager) {
    if (auto s = device_pool->BeforeUse(); !s.ok()) return s;
  }
  auto device_slots = Stage(row_slots.data(), row_slots.size() * sizeof(int32_t));
  if (!device_slots.ok()) return device_slots.status();
  if (Replaying()) return absl::OkStatus();
  if (auto s = Launched(kc::StoreKv(device_pool->data(), layout, layer,
                                    static_cast<const int32_t*>(*device_slots), F32(k), F32(v),
                                    k.ld, static_cast<int>(k.rows), context_->compute),
                        "StoreKv");
      !s.ok()) {
    return s;
  }
  return eager ? device_pool->AfterUse() : absl::OkStatus();
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
  auto counts = kc::CountAttentionTables(seqs, positions, layout.block_size, pool.num_pages());
  if (!counts.ok()) return counts.status();
  // Eagerly exactly this call's tables; a graph step's are its bucket's, tails neutralised.
  kc::AttentionTableCapacity capacity = *counts;
  if (InGraphStep()) {
    const int rows = step_->key.rows;
    capacity = kc::AttentionCapacityFor(
        {.rows = rows, .seqs = rows, .max_context = step_->key.blocks * layout.block_size},
        layout.block_size);
    if (!kc::CheckAttentionCapacity(*counts, capacity).ok()) {
      return absl::AbortedError("PagedAttention: the step outgrew its graph bucket");
    }
  }
  const kc::AttentionTableLayout table_layout = kc::AttentionTableLayoutFor(capacity);
  auto slot = TakeTables(static_cast<size_t>(table_layout.bytes));
  if (!slot.ok()) return slot.status();
  auto built = kc::BuildAttentionTables(seqs, positions, layout.block_size, pool.num_pages(),
                                        kc::AttentionTablesAt(slot->host, capacity));
  if (!built.ok()) return built.status();
  if (auto s = CommitTables(*slot, static_cast<size_t>(table_layout.bytes)); !s.ok()) return s;
  auto scratch = DeviceTemp(
      attention_scratch_,
      static_cast<size_t>(kc::AttentionScratchFloats(capacity, num_heads, head_dim)) *
          sizeof(float),
      "attention partials");
  if (!scratch.ok()) return scratch.status();
  if (Replaying()) return absl::OkStatus();
  const bool eager = !InGraphStep();
  if (eager) {
    if (auto s = device_pool->BeforeUse(); !s.ok()) return s;
  }
  if (auto s = Launched(kc::PagedAttention(device_pool->data(), layout, layer,
                                           kc::AttentionTablesAt(slot->device, capacity), F32(q),
                                           q.ld, num_heads, num_kv_heads, head_dim,
                                           static_cast<float*>(*scratch), F32(out), out.ld,
                                           context_->compute),
                        "PagedAttention");
      !s.ok()) {
    return s;
  }
  return eager ? device_pool->AfterUse() : absl::OkStatus();
}

absl::Status CudaBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  if (auto s = CheckSame(gate, up, "SiluMul"); !s.ok()) return s;
  if (auto s = CheckSame(gate, out, "SiluMul"); !s.ok()) return s;
  if (Replaying()) return absl::OkStatus();
  return Launched(kc::SiluMul(F32(gate), gate.ld, F32(up), up.ld, static_cast<int>(gate.rows),
                              static_cast<int>(gate.cols), F32(out), out.ld, context_->compute),
                  "SiluMul");
}

absl::Status CudaBackend::Add(const Tensor& x, const Tensor& y) {
  if (auto s = CheckSame(x, y, "Add"); !s.ok()) return s;
  if (Replaying()) return absl::OkStatus();
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
  auto device_out = DeviceTemp(argmax_scratch_, out.size_bytes(), "argmax");
  if (!device_out.ok()) return device_out.status();
  if (InGraphStep()) {
    auto pinned = GraphTake(kOutArena, out.size_bytes());
    if (!pinned.ok()) return pinned.status();
    step_->host_copies.push_back({*pinned, out.data(), out.size_bytes()});
    if (Replaying()) return absl::OkStatus();
    if (auto s = Launched(kc::ArgmaxRows(F32(logits), logits.ld, static_cast<int>(logits.rows),
                                         static_cast<int>(logits.cols),
                                         static_cast<int32_t*>(*device_out), context_->compute),
                          "ArgmaxRows");
        !s.ok()) {
      return s;
    }
    return CudaStatus(cudaMemcpyAsync(*pinned, *device_out, out.size_bytes(),
                                      cudaMemcpyDeviceToHost, context_->compute),
                      "cudaMemcpyAsync(argmax, graph)");
  }
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

// ---- whole-step graphs

int CudaBackend::GraphRows(const StepShape& shape) const {
  // Past a few thousand rank rows per module the bucket's fixed tables (sized for the worst
  // placement of those rows) would cost more to stage each step than the launches they save.
  if (!options_.graphs || !shape.decode_only || shape.has_dora || shape.rows < 1 ||
      shape.rows > kMaxGraphRows || shape.lora_rank_rows > kMaxGraphRankRows) {
    return 0;
  }
  return NextPowerOfTwo(shape.rows);
}

absl::Status CudaBackend::DropGraphs() {
  if (InGraphStep()) {
    return absl::FailedPreconditionError("merge or restore inside a graph step");
  }
  if (graphs_.empty()) return absl::OkStatus();
  if (auto s = context_->Sync("drop graphs"); !s.ok()) return s;
  graphs_.clear();
  return absl::OkStatus();
}

absl::Status CudaBackend::BeginGraphStep(const StepShape& padded) {
  if (InGraphStep()) return absl::FailedPreconditionError("BeginGraphStep: a step is in flight");
  GraphKey key;
  key.rows = padded.rows;
  key.blocks = NextPowerOfTwo(std::max(padded.max_blocks, 1));
  key.rank_rows = padded.lora_rank_rows > 0 ? NextPowerOfTwo(padded.lora_rank_rows) : 0;
  key.segment_ranks =
      padded.lora_segment_ranks > 0 ? NextPowerOfTwo(padded.lora_segment_ranks) : 0;
  if (graph_memory_.device == nullptr) {
    // First use: room for a small model's step; a larger step grows it (and recaptures).
    auto memory = AllocateGraphMemory(size_t{64} << 20, size_t{4} << 20, size_t{16} << 20);
    if (!memory.ok()) return memory.status();
    graph_memory_ = std::move(*memory);
  }
  GraphStep step;
  step.key = key;
  auto found = graphs_.find(key);
  if (found == graphs_.end()) {
    found = graphs_.emplace(key, std::make_unique<CapturedGraph>()).first;
    step.capturing = true;
    // Relaxed: nothing this capture calls (cuBLAS with its fixed workspace, memsets, copies,
    // launches) may be refused for touching the legacy stream.
    if (auto s = CudaStatus(cudaStreamBeginCapture(context_->compute, cudaStreamCaptureModeRelaxed),
                            "cudaStreamBeginCapture");
        !s.ok()) {
      graphs_.erase(found);
      return s;
    }
  }
  step.graph = found->second.get();
  step_ = std::move(step);
  return absl::OkStatus();
}

absl::Status CudaBackend::EndGraphStep(bool ok) {
  if (!InGraphStep()) return absl::FailedPreconditionError("EndGraphStep: no step in flight");
  GraphStep step = std::move(*step_);
  step_.reset();
  const GraphKey key = step.key;
  if (!step.capturing && step.request != step.graph->requests.size()) step.diverged = true;
  absl::Status launched;
  if (step.capturing) {
    cudaGraph_t graph = nullptr;
    launched = CudaStatus(cudaStreamEndCapture(context_->compute, &graph), "cudaStreamEndCapture");
    if (launched.ok() && ok && !step.diverged) {
      launched = CudaStatus(cudaGraphInstantiate(&step.graph->exec, graph, 0),
                            "cudaGraphInstantiate");
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  if (!ok || step.diverged || !launched.ok() || step.graph->exec == nullptr) {
    graphs_.erase(key);
    // Memory ran short: grow what did (its base moves, so every graph goes) for the next capture.
    const size_t need[3] = {step.used[kDeviceArena], step.used[kStageArena], step.used[kOutArena]};
    if (need[0] > graph_memory_.device_bytes || need[1] > graph_memory_.stage_bytes ||
        need[2] > graph_memory_.out_bytes) {
      if (auto s = context_->Sync("grow graph memory"); !s.ok()) return s;
      graphs_.clear();
      auto grow = [](size_t need, size_t have) { return need > have ? need + need / 4 : have; };
      const size_t device_bytes = grow(need[0], graph_memory_.device_bytes);
      const size_t stage_bytes = grow(need[1], graph_memory_.stage_bytes);
      const size_t out_bytes = grow(need[2], graph_memory_.out_bytes);
      graph_memory_ = GraphMemory{};
      auto memory = AllocateGraphMemory(device_bytes, stage_bytes, out_bytes);
      if (!memory.ok()) return memory.status();
      graph_memory_ = std::move(*memory);
    }
    if (!launched.ok()) return launched;
    // The caller runs this step eagerly (ABORTED); the next one of the bucket captures again.
    return ok ? absl::AbortedError("graph step: recapture") : absl::OkStatus();
  }
  cudaStream_t stream = context_->compute;
  // The step's tables, staged by every op into one pinned buffer, go over in one copy.
  if (auto s = CudaStatus(cudaMemcpyAsync(graph_memory_.stage_device.get(),
                                          graph_memory_.stage_host.get(), step.used[kStageArena],
                                          cudaMemcpyHostToDevice, stream),
                          "cudaMemcpyAsync(graph tables)");
      !s.ok()) {
    return s;
  }
  std::vector<const CudaPool*> pools;
  {
    std::lock_guard<std::mutex> lock(context_->pools_mu);
    pools.assign(context_->pools.begin(), context_->pools.end());
  }
  for (const CudaPool* pool : pools) {
    if (auto s = pool->BeforeUse(); !s.ok()) return s;
  }
  if (auto s = CudaStatus(cudaGraphLaunch(step.graph->exec, stream), "cudaGraphLaunch"); !s.ok()) {
    return s;
  }
  for (const CudaPool* pool : pools) {
    if (auto s = pool->AfterUse(); !s.ok()) return s;
  }
  if (auto s = context_->Sync("graph step"); !s.ok()) return s;
  for (const GraphStep::HostCopy& copy : step.host_copies) {
    std::memcpy(copy.to, copy.from, copy.bytes);
  }
  return absl::OkStatus();
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
