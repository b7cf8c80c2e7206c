// The op set every forward pass goes through: the seam between the model definition (runtime/)
// and the kernels of one device (kernels/cpu today, kernels/cuda next). The backend owns all
// memory the math touches (weights, activations, the unified KV + adapter pool) and hands out
// handles and views; the model never dereferences them. Every call returns absl::Status so a
// device error (a failed launch, an out-of-memory) reaches the caller as a value.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "adapters/lora_adapter.h"
#include "formats/dtype.h"
#include "kernels/plan/kv_layout.h"
#include "kernels/plan/lora_plan.h"

namespace loraserve {

// A row-major 2-D view of backend memory (host memory on the CPU backend, device memory on a
// GPU). `ld` is the distance between rows in elements.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;

  int64_t elements() const { return rows * cols; }
  // Rows [begin, begin + count) as a view of the same memory.
  Tensor RowRange(int64_t begin, int64_t count) const {
    Tensor view = *this;
    view.data = static_cast<char*>(data) + begin * ld * static_cast<int64_t>(DTypeSize(dtype));
    view.rows = count;
    return view;
  }
  // Columns [begin, begin + count) of every row: a view with the same ld (q/k/v in one buffer).
  Tensor ColRange(int64_t begin, int64_t count) const {
    Tensor view = *this;
    view.data = static_cast<char*>(data) + begin * static_cast<int64_t>(DTypeSize(dtype));
    view.cols = count;
    return view;
  }
};

// Backend-owned activation memory; the view stays valid while the buffer lives.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Tensor tensor, std::shared_ptr<void> owner)
      : tensor_(tensor), owner_(std::move(owner)) {}
  const Tensor& tensor() const { return tensor_; }

 private:
  Tensor tensor_;
  std::shared_ptr<void> owner_;
};

// A weight matrix or vector held by the backend. `dtype` is how it is stored there; the source
// dtype (what the checkpoint held) is kept so a 16-bit backend can keep files 16-bit.
struct WeightHandle {
  int32_t index = -1;
  bool valid() const { return index >= 0; }
};

// One weight a model will upload: what ReserveWeights sizes storage from.
struct WeightSpec {
  std::vector<int64_t> shape;
  DType source_dtype = DType::kF32;
};

struct WeightInfo {
  std::vector<int64_t> shape;
  DType stored_dtype = DType::kF32;
  DType source_dtype = DType::kF32;
  bool merged = false;  // a pristine copy exists and the live weights differ from it
};

// The unified page pool's memory: `num_pages` pages of `page_units` 4-byte units. Page ids and
// unit offsets are the host PagePool's (the one bookkeeper); only the bytes live here.
class PoolStorage {
 public:
  PoolStorage(int64_t page_units, int32_t num_pages)
      : page_units_(page_units), num_pages_(num_pages) {}
  virtual ~PoolStorage() = default;

  int64_t page_units() const { return page_units_; }
  int32_t num_pages() const { return num_pages_; }
  int64_t total_units() const { return page_units_ * num_pages_; }

  // Copies `units` into the pool at `offset` (in 4-byte units).
  virtual absl::Status Write(int64_t offset, std::span<const uint32_t> units) = 0;
  // Copies `count` units at `offset` back to the host (tests, debugging).
  virtual absl::StatusOr<std::vector<uint32_t>> Read(int64_t offset, int64_t count) const = 0;

 protected:
  absl::Status CheckRange(int64_t offset, int64_t count) const;

 private:
  int64_t page_units_;
  int32_t num_pages_;
};

// One output of a fused projection: y = x W^T.
struct LinearTarget {
  WeightHandle weight;
  Tensor y;
};

// One (layer, module)'s LoRA work: the step plan's segments for it and the shared refs.
struct LoraModulePlan {
  std::span<const kernels::LoraSegment> segments;
  std::span<const kernels::LoraRef> refs;
};

// One module of a fused LoRA call: its output and its plan.
struct LoraTargetPlan {
  Tensor y;
  LoraModulePlan plan;
};

// What a backend needs to decide whether a step runs as a captured graph, and to size the
// graph's fixed-capacity tables: plain counts, filled by runtime/step_shape.h.
struct StepShape {
  int rows = 0;
  bool decode_only = false;  // every sequence contributes exactly one row
  int max_blocks = 0;        // the longest block table
  int lora_rank_rows = 0;    // the most rank rows any one (layer, module) gathers
  int lora_segment_ranks = 0;  // the most rank rows any one segment gathers (a set sums its refs)
  bool has_dora = false;     // some segment carries a DoRA factor
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // --- Weights -------------------------------------------------------------------------------
  // Called once before the first UploadWeight with every weight the model will upload, so a
  // backend can place them all in one allocation (the CUDA backend does). A hint: uploads beyond
  // it still work.
  virtual absl::Status ReserveWeights(std::span<const WeightSpec> specs) {
    (void)specs;
    return absl::OkStatus();
  }
  // Takes fp32 values (already widened from the file) and stores them as the backend prefers.
  virtual absl::StatusOr<WeightHandle> UploadWeight(std::span<const float> values,
                                                    std::vector<int64_t> shape,
                                                    DType source_dtype) = 0;
  virtual absl::StatusOr<WeightInfo> Info(WeightHandle weight) const = 0;
  // The live weights (merged or not), widened to fp32. For tests and adapter math.
  virtual absl::StatusOr<std::vector<float>> ReadWeight(WeightHandle weight) const = 0;
  // The weights as loaded, even while an adapter is merged into them (DoRA norms use these).
  virtual absl::StatusOr<std::vector<float>> ReadPristineWeight(WeightHandle weight) const = 0;

  // --- Merge (single-tenant traffic) ---------------------------------------------------------
  // W' = W + s B A (DoRA: W' = dora_scale[row] * (W + s B A)). The first merge into a weight
  // keeps a pristine copy with the backend; merging again starts from the pristine weights.
  virtual absl::Status MergeLora(WeightHandle weight, const LoraModuleWeights& module,
                                 std::span<const float> dora_scale) = 0;
  // Restores the pristine copy bit for bit and drops it; a no-op when nothing is merged.
  virtual absl::Status RestoreWeight(WeightHandle weight) = 0;

  // --- Memory --------------------------------------------------------------------------------
  virtual absl::StatusOr<std::unique_ptr<PoolStorage>> CreatePool(int64_t page_units,
                                                                  int32_t num_pages) = 0;
  // Zero-filled fp32 activations.
  virtual absl::StatusOr<Buffer> Allocate(int64_t rows, int64_t cols) = 0;
  // A view of host memory the ops can write directly, when the backend computes in host memory
  // (the CPU backend); UNIMPLEMENTED elsewhere, and callers then Allocate + CopyToHost.
  virtual absl::StatusOr<Tensor> ViewHost(float* host, int64_t rows, int64_t cols) = 0;
  virtual absl::Status CopyToHost(const Tensor& x, std::span<float> out) = 0;

  // --- Forward-pass ops (fp32 compute) -------------------------------------------------------
  // out[r] = table[ids[r]].
  virtual absl::Status Embed(WeightHandle table, std::span<const int32_t> ids,
                             const Tensor& out) = 0;
  // out[i] = x[rows[i]].
  virtual absl::Status GatherRows(const Tensor& x, std::span<const int32_t> rows,
                                  const Tensor& out) = 0;
  // y = x W^T for a PyTorch-layout weight [out x in].
  virtual absl::Status Linear(const Tensor& x, WeightHandle weight, const Tensor& y) = 0;
  // Every target's y = x W^T from one x (q/k/v, gate/up). A backend may fuse them into one
  // launch or parallel region; the results equal one Linear per target.
  virtual absl::Status LinearFused(const Tensor& x, std::span<const LinearTarget> targets) {
    for (const LinearTarget& target : targets) {
      if (auto s = Linear(x, target.weight, target.y); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  // y[r] += sum over the row's refs of scale * B (A x[r]), then DoRA's out_scale; rows are
  // read from the pool by offset (BGMV for short segments, SGMV for long ones).
  virtual absl::Status LoraApply(const PoolStorage& pool, const Tensor& x, const Tensor& y,
                                 const LoraModulePlan& plan) = 0;
  // LoraApply for several modules reading one x (q/k/v, gate/up); a backend may run them as
  // one launch or parallel region. The results equal one LoraApply per target.
  virtual absl::Status LoraApplyFused(const PoolStorage& pool, const Tensor& x,
                                      std::span<const LoraTargetPlan> targets) {
    for (const LoraTargetPlan& target : targets) {
      if (auto s = LoraApply(pool, x, target.y, target.plan); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  virtual absl::Status AddBias(const Tensor& y, WeightHandle bias) = 0;
  virtual absl::Status RmsNorm(const Tensor& x, WeightHandle weight, float eps,
                               const Tensor& out) = 0;
  // Rotates x in place (HF rotate_half layout); inv_freq is a [head_dim / 2] weight.
  virtual absl::Status Rope(const Tensor& x, int num_heads, int head_dim,
                            std::span<const int32_t> positions, WeightHandle inv_freq) = 0;
  virtual absl::Status StoreKv(PoolStorage& pool, const kernels::KvPageLayout& layout, int layer,
                               std::span<const kernels::AttentionSeq> seqs,
                               std::span<const int32_t> positions, const Tensor& k,
                               const Tensor& v) = 0;
  virtual absl::Status PagedAttention(const PoolStorage& pool,
                                      const kernels::KvPageLayout& layout, int layer,
                                      std::span<const kernels::AttentionSeq> seqs,
                                      std::span<const int32_t> positions, const Tensor& q,
                                      int num_heads, int num_kv_heads, int head_dim,
                                      const Tensor& out) = 0;
  // out = silu(gate) * up.
  virtual absl::Status SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  // x += y (residual connections).
  virtual absl::Status Add(const Tensor& x, const Tensor& y) = 0;

  // --- Whole-step graphs --------------------------------------------------------------------
  // A backend that replays captured graphs (CUDA graphs) returns the rows a step of this shape
  // is padded to; 0 runs it eagerly (the default, and the CPU's answer). A padded step calls
  // every op the same way whatever its adapters are (LoraApply for every module, segments or
  // not), so one capture per bucket replays every step that fits.
  virtual int GraphRows(const StepShape& shape) const {
    (void)shape;
    return 0;
  }
  // Bracket one padded forward pass. The first step of a bucket records its ops, later ones
  // only stage their tables; EndGraphStep launches the graph and completes the host outputs
  // (CopyToHost may then be given fewer rows of `out` than x has: padding rows are not copied).
  // `ok` false: the pass failed part-way; the backend drops what it recorded.
  virtual absl::Status BeginGraphStep(const StepShape& padded) {
    (void)padded;
    return absl::UnimplementedError("BeginGraphStep: this backend runs every step eagerly");
  }
  virtual absl::Status EndGraphStep(bool ok) {
    (void)ok;
    return absl::UnimplementedError("EndGraphStep: this backend runs every step eagerly");
  }

  // --- Sampling helpers ----------------------------------------------------------------------
  // out[r] = argmax of logits row r (lowest index on ties), without copying logits back.
  virtual absl::Status ArgmaxRows(const Tensor& logits, std::span<int32_t> out) = 0;
};

}  // namespace loraserve
