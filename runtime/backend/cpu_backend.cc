// Each op checks the shapes it is handed (a wrong view is an INVALID_ARGUMENT naming the op, not
// a wild write) and then calls exactly the kernel the model called before the seam existed, so
// results are bit-identical to the pre-seam engine.
#include "runtime/backend/cpu_backend.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/backend/view_checks.h"
#include "formats/dtype.h"
#include "formats/half.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/bf16_pairs.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/lora.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rms_norm.h"
#include "kernels/cpu/rope.h"
#include "runtime/sampler.h"

namespace loraserve {
namespace {

// The pool as one host allocation. Left uninitialised: the OS commits pages on first touch, so
// a large pool costs nothing until KV blocks or adapters are written into it.
class CpuPool final : public PoolStorage {
 public:
  // Zeroed, so every page is touched now: the pool's memory is taken at start (a machine
  // without it fails here, not under load) and the process's RSS does not creep up as traffic
  // first reaches more pages.
  CpuPool(int64_t page_units, int32_t num_pages)
      : PoolStorage(page_units, num_pages),
        storage_(static_cast<size_t>(std::max<int64_t>(1, page_units * num_pages))) {}

  absl::Status Write(int64_t offset, std::span<const uint32_t> units) override {
    if (auto s = CheckRange(offset, static_cast<int64_t>(units.size())); !s.ok()) return s;
    std::memcpy(storage_.data() + offset, units.data(), units.size() * sizeof(uint32_t));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<uint32_t>> Read(int64_t offset, int64_t count) const override {
    if (auto s = CheckRange(offset, count); !s.ok()) return s;
    std::vector<uint32_t> out(static_cast<size_t>(count));
    std::memcpy(out.data(), storage_.data() + offset, out.size() * sizeof(uint32_t));
    return out;
  }

  float* data() const { return const_cast<float*>(storage_.data()); }

 private:
  HostVector<float> storage_;  // host_allocator.h: cache-line aligned, huge pages
};

absl::StatusOr<float*> PoolData(const PoolStorage& pool, const char* op) {
  const auto* cpu = dynamic_cast<const CpuPool*>(&pool);
  if (cpu == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": the pool belongs to another backend"));
  }
  return cpu->data();
}

float* F32(const Tensor& t) { return static_cast<float*>(t.data); }

kernels::detail::LinearOptions LinearOptionsFor(CpuIsa isa) {
  kernels::detail::LinearOptions options;
  options.allow_avx512 = isa == CpuIsa::kAuto;
  options.allow_avx2 = isa != CpuIsa::kPortable;
  return options;
}

kernels::detail::LoraApplyOptions LoraOptionsFor(CpuIsa isa) {
  kernels::detail::LoraApplyOptions options;
  options.allow_avx512 = isa == CpuIsa::kAuto;
  options.allow_avx2 = isa != CpuIsa::kPortable;
  return options;
}

kernels::detail::AttentionOptions AttentionOptionsFor(CpuIsa isa) {
  return {.allow_avx512 = isa == CpuIsa::kAuto, .allow_avx2 = isa != CpuIsa::kPortable};
}

// The dtype a matrix is held in: the option, or for kAuto the file's 16-bit type when it has
// one. Vectors are always fp32 (the norm, bias and RoPE kernels read floats).
DType StoredDtype(WeightDtype option, DType source, size_t rank) {
  if (rank != 2) return DType::kF32;
  switch (option) {
    case WeightDtype::kF32: return DType::kF32;
    case WeightDtype::kBF16: return DType::kBF16;
    case WeightDtype::kF16: return DType::kF16;
    case WeightDtype::kAuto: break;
  }
  return source == DType::kBF16 || source == DType::kF16 ? source : DType::kF32;
}

}  // namespace

absl::StatusOr<WeightDtype> ParseWeightDtype(std::string_view name) {
  if (name == "auto") return WeightDtype::kAuto;
  if (name == "fp32" || name == "f32") return WeightDtype::kF32;
  if (name == "bf16") return WeightDtype::kBF16;
  if (name == "fp16" || name == "f16") return WeightDtype::kF16;
  return absl::InvalidArgumentError(
      absl::StrCat("weight dtype '", std::string(name), "' is not one of auto, fp32, bf16, fp16"));
}

absl::StatusOr<CpuIsa> ParseCpuIsa(std::string_view name) {
  if (name == "auto") return CpuIsa::kAuto;
  if (name == "avx2") return CpuIsa::kAvx2;
  if (name == "portable") return CpuIsa::kPortable;
  return absl::InvalidArgumentError(
      absl::StrCat("cpu isa '", std::string(name), "' is not one of auto, avx2, portable"));
}

std::string_view CpuIsaName(CpuIsa isa) {
  const bool avx2 = kernels::detail::CpuHasAvx2Fma();
  const bool avx512 = kernels::detail::CpuHasAvx512();
  if (isa == CpuIsa::kPortable || !avx2) return "portable";
  if (isa == CpuIsa::kAvx2 || !avx512) return "avx2";
  return "avx512";
}

absl::Status PoolStorage::CheckRange(int64_t offset, int64_t count) const {
  if (offset < 0 || count < 0 || offset + count > total_units()) {
    return absl::OutOfRangeError(absl::StrCat("pool: units [", offset, ", ", offset + count,
                                              ") outside the pool of ", total_units()));
  }
  return absl::OkStatus();
}

absl::StatusOr<const CpuBackend::Weight*> CpuBackend::Find(WeightHandle weight) const {
  if (weight.index < 0 || weight.index >= static_cast<int32_t>(weights_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("weight handle ", weight.index, " is unknown"));
  }
  return &weights_[weight.index];
}

absl::StatusOr<CpuBackend::Weight*> CpuBackend::Find(WeightHandle weight) {
  auto found = static_cast<const CpuBackend*>(this)->Find(weight);
  if (!found.ok()) return found.status();
  return const_cast<Weight*>(*found);
}

namespace {

constexpr size_t kHalvesPerLine = host_memory::kCacheLine / sizeof(uint16_t);

size_t RoundToLine(size_t halves) {
  return (halves + kHalvesPerLine - 1) / kHalvesPerLine * kHalvesPerLine;
}

}  // namespace

absl::Status CpuBackend::ReserveWeights(std::span<const WeightSpec> specs) {
  if (!half_arena_.empty() || !weights_.empty()) {
    return absl::FailedPreconditionError("ReserveWeights: must come once, before any upload");
  }
  size_t halves = 0;
  for (const WeightSpec& spec : specs) {
    if (StoredDtype(options_.weight_dtype, spec.source_dtype, spec.shape.size()) == DType::kF32) {
      continue;
    }
    size_t elements = 1;
    for (int64_t d : spec.shape) elements *= static_cast<size_t>(std::max<int64_t>(d, 0));
    halves += RoundToLine(elements);
  }
  half_arena_ = HostVector<uint16_t>(halves);
  return absl::OkStatus();
}

std::span<uint16_t> CpuBackend::HalfStorage(size_t n) {
  if (half_arena_used_ + n <= half_arena_.size()) {
    const std::span<uint16_t> room(half_arena_.data() + half_arena_used_, n);
    half_arena_used_ += RoundToLine(n);
    return room;
  }
  half_blocks_.emplace_back(n);
  return {half_blocks_.back().data(), n};
}

absl::StatusOr<WeightHandle> CpuBackend::UploadWeight(std::span<const float> values,
                                                      std::vector<int64_t> shape,
                                                      DType source_dtype) {
  if (auto s = CheckElements(shape, values.size()); !s.ok()) return s;
  Weight w;
  w.info.stored_dtype = StoredDtype(options_.weight_dtype, source_dtype, shape.size());
  w.info.shape = std::move(shape);
  w.info.source_dtype = source_dtype;
  if (w.info.stored_dtype == DType::kF32) {
    w.values.assign(values.begin(), values.end());
  } else {
    // Exact when the file held this dtype (the values are its widening); rounded to nearest
    // even otherwise.
    w.half = HalfStorage(values.size());
    const bool bf16 = w.info.stored_dtype == DType::kBF16;
    for (size_t i = 0; i < values.size(); ++i) {
      w.half[i] = bf16 ? FloatToBf16(values[i]) : FloatToF16(values[i]);
    }
    if (bf16) {
      w.pair_lanes = kernels::detail::Bf16PairLanes(LinearOptionsFor(options_.isa));
      if (w.pair_lanes != 0) {
        const int64_t rows = w.info.shape[0], cols = w.info.shape[1];
        std::vector<uint16_t> row(static_cast<size_t>(cols));
        for (int64_t r = 0; r < rows; ++r) {
          uint16_t* stored = w.half.data() + r * cols;
          std::copy(stored, stored + cols, row.begin());
          kernels::PairBf16Rows(row.data(), 1, cols, w.pair_lanes, stored);
        }
      }
    }
  }
  weights_.push_back(std::move(w));
  return WeightHandle{static_cast<int32_t>(weights_.size() - 1)};
}

absl::StatusOr<WeightInfo> CpuBackend::Info(WeightHandle weight) const {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  return (*w)->info;
}

template <class Vector>
Vector CpuBackend::Widen(const Weight& w) const {
  Vector out(w.half.size());
  if (w.pair_lanes != 0) {
    const int64_t rows = w.info.shape[0], cols = w.info.shape[1];
    for (int64_t r = 0; r < rows; ++r) {
      kernels::WidenPairedBf16Row(w.half.data() + r * cols, cols, w.pair_lanes, 0, cols,
                                  out.data() + r * cols);
    }
    return out;
  }
  ToFloat(w.info.stored_dtype, reinterpret_cast<const uint8_t*>(w.half.data()), out.size(),
          out.data());
  return out;
}

kernels::LinearPart CpuBackend::LivePart(const Weight& w, const Tensor& y) const {
  return {LiveData(w), LiveDtype(w), static_cast<int>(w.info.shape[0]), F32(y), y.ld,
          w.live_is_f32() ? 0 : w.pair_lanes};
}

const void* CpuBackend::LiveData(const Weight& w) const {
  return w.live_is_f32() ? static_cast<const void*>(w.values.data()) : w.half.data();
}

kernels::LoraDtype CpuBackend::LiveDtype(const Weight& w) const {
  if (w.live_is_f32()) return kernels::LoraDtype::kF32;
  return w.info.stored_dtype == DType::kBF16 ? kernels::LoraDtype::kBF16
                                             : kernels::LoraDtype::kF16;
}

absl::StatusOr<std::vector<float>> CpuBackend::ReadWeight(WeightHandle weight) const {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  if (!(*w)->live_is_f32()) return Widen<std::vector<float>>(**w);
  return std::vector<float>((*w)->values.begin(), (*w)->values.end());
}

absl::StatusOr<std::vector<float>> CpuBackend::ReadPristineWeight(WeightHandle weight) const {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  if (!(*w)->half.empty()) return Widen<std::vector<float>>(**w);
  const HostVector<float>& pristine = (*w)->info.merged ? (*w)->pristine : (*w)->values;
  return std::vector<float>(pristine.begin(), pristine.end());
}

absl::Status CpuBackend::MergeLora(WeightHandle weight, const LoraModuleWeights& module,
                                   std::span<const float> dora_scale) {
  auto found = Find(weight);
  if (!found.ok()) return found.status();
  Weight& w = **found;
  if (w.info.shape.size() != 2) return absl::InvalidArgumentError("MergeLora: not a matrix");
  const int64_t out = w.info.shape[0], in = w.info.shape[1];
  if (static_cast<int64_t>(module.a.size()) != module.rank * in ||
      static_cast<int64_t>(module.b.size()) != out * module.rank) {
    return absl::InvalidArgumentError("MergeLora: adapter factors do not match the weight");
  }
  if (!dora_scale.empty() && static_cast<int64_t>(dora_scale.size()) != out) {
    return absl::InvalidArgumentError("MergeLora: dora_scale must have one entry per row");
  }
  if (!w.half.empty()) {
    w.values = Widen<HostVector<float>>(w);  // the 16-bit storage stays untouched: it is the pristine copy
  } else if (w.info.merged) {
    w.values = w.pristine;
  } else {
    w.pristine = w.values;
  }
  w.info.merged = true;
  for (int64_t o = 0; o < out; ++o) {
    float* row = &w.values[static_cast<size_t>(o * in)];
    for (int r = 0; r < module.rank; ++r) {
      const float b = module.scaling * module.b[static_cast<size_t>(o) * module.rank + r];
      const float* a = &module.a[static_cast<size_t>(r) * in];
      for (int64_t i = 0; i < in; ++i) row[i] += b * a[i];
    }
    if (!dora_scale.empty()) {
      for (int64_t i = 0; i < in; ++i) row[i] *= dora_scale[o];
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::RestoreWeight(WeightHandle weight) {
  auto found = Find(weight);
  if (!found.ok()) return found.status();
  Weight& w = **found;
  if (!w.info.merged) return absl::OkStatus();
  if (!w.half.empty()) {
    HostVector<float>().swap(w.values);  // back to the untouched 16-bit storage
  } else {
    w.values = std::move(w.pristine);
    w.pristine.clear();
  }
  w.info.merged = false;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PoolStorage>> CpuBackend::CreatePool(int64_t page_units,
                                                                    int32_t num_pages) {
  if (page_units <= 0 || num_pages < 0) {
    return absl::InvalidArgumentError("CreatePool: page_units must be positive");
  }
  return std::make_unique<CpuPool>(page_units, num_pages);
}

absl::StatusOr<Buffer> CpuBackend::Allocate(int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) return absl::InvalidArgumentError("Allocate: negative shape");
  auto storage =
      std::make_shared<HostVector<float>>(static_cast<size_t>(std::max<int64_t>(1, rows * cols)));
  Tensor t{storage->data(), DType::kF32, rows, cols, cols};
  return Buffer(t, std::shared_ptr<void>(storage, storage->data()));
}

absl::StatusOr<Tensor> CpuBackend::ViewHost(float* host, int64_t rows, int64_t cols) {
  return Tensor{host, DType::kF32, rows, cols, cols};
}

absl::Status CpuBackend::CopyToHost(const Tensor& x, std::span<float> out) {
  if (auto s = CheckF32(x, "CopyToHost", "x"); !s.ok()) return s;
  if (static_cast<int64_t>(out.size()) < x.elements()) {
    return absl::InvalidArgumentError("CopyToHost: output too small");
  }
  for (int64_t r = 0; r < x.rows; ++r) {
    std::memcpy(&out[static_cast<size_t>(r * x.cols)], F32(x) + r * x.ld, x.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Embed(WeightHandle table, std::span<const int32_t> ids,
                               const Tensor& out) {
  auto w = Find(table);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(out, "Embed", "out"); !s.ok()) return s;
  const auto& shape = (*w)->info.shape;
  if (shape.size() != 2 || shape[1] != out.cols ||
      static_cast<int64_t>(ids.size()) != out.rows) {
    return absl::InvalidArgumentError("Embed: table and output shapes disagree");
  }
  const int64_t hidden = shape[1];
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= shape[0]) {
      return absl::InvalidArgumentError(absl::StrCat("Embed: token id ", ids[t], " out of range"));
    }
    const Weight& table_w = **w;
    const size_t first = static_cast<size_t>(ids[t]) * hidden;
    float* row = F32(out) + t * out.ld;
    if (table_w.live_is_f32()) {
      std::memcpy(row, &table_w.values[first], sizeof(float) * hidden);
    } else if (table_w.pair_lanes != 0) {
      kernels::WidenPairedBf16Row(table_w.half.data() + first, hidden, table_w.pair_lanes, 0,
                                  hidden, row);
    } else {
      ToFloat(table_w.info.stored_dtype,
              reinterpret_cast<const uint8_t*>(table_w.half.data() + first), hidden, row);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GatherRows(const Tensor& x, std::span<const int32_t> rows,
                                    const Tensor& out) {
  if (auto s = CheckF32(x, "GatherRows", "x"); !s.ok()) return s;
  if (auto s = CheckF32(out, "GatherRows", "out"); !s.ok()) return s;
  if (out.cols != x.cols || out.rows != static_cast<int64_t>(rows.size())) {
    return absl::InvalidArgumentError("GatherRows: shapes disagree");
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= x.rows) return absl::InvalidArgumentError("GatherRows: bad row");
    std::memcpy(F32(out) + i * out.ld, F32(x) + rows[i] * x.ld, x.cols * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Linear(const Tensor& x, WeightHandle weight, const Tensor& y) {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  if (auto s = CheckLinearViews(x, (*w)->info.shape, y); !s.ok()) return s;
  kernels::detail::LinearForward(F32(x), x.ld, static_cast<int>(x.rows),
                                 static_cast<int>((*w)->info.shape[1]), LivePart(**w, y),
                                 /*accumulate=*/false, LinearOptionsFor(options_.isa));
  return absl::OkStatus();
}

absl::Status CpuBackend::LinearFused(const Tensor& x, std::span<const LinearTarget> targets) {
  std::vector<kernels::LinearPart> parts;
  parts.reserve(targets.size());
  for (const LinearTarget& target : targets) {
    auto w = Find(target.weight);
    if (!w.ok()) return w.status();
    if (auto s = CheckLinearViews(x, (*w)->info.shape, target.y); !s.ok()) return s;
    parts.push_back(LivePart(**w, target.y));
  }
  kernels::detail::LinearForwardFused(F32(x), x.ld, static_cast<int>(x.rows),
                                      static_cast<int>(x.cols), parts.data(),
                                      static_cast<int>(parts.size()),
                                      LinearOptionsFor(options_.isa));
  return absl::OkStatus();
}

absl::Status CpuBackend::LoraApply(const PoolStorage& pool, const Tensor& x, const Tensor& y,
                                   const LoraModulePlan& plan) {
  const LoraTargetPlan target{y, plan};
  return LoraApplyFused(pool, x, {&target, 1});
}

absl::Status CpuBackend::LoraApplyFused(const PoolStorage& pool, const Tensor& x,
                                        std::span<const LoraTargetPlan> targets) {
  std::vector<kernels::LoraTarget> kernel_targets;
  for (const LoraTargetPlan& target : targets) {
    if (target.plan.segments.empty()) continue;
    if (auto s = CheckLoraSegments(x, target.y, target.plan); !s.ok()) return s;
    kernel_targets.push_back({F32(target.y), target.y.ld, static_cast<int>(target.y.cols),
                              target.plan.segments, target.plan.refs});
  }
  if (kernel_targets.empty()) return absl::OkStatus();
  auto data = PoolData(pool, "LoraApply");
  if (!data.ok()) return data.status();
  kernels::detail::LoraApplyFused(*data, F32(x), x.ld, static_cast<int>(x.cols), kernel_targets,
                                  LoraOptionsFor(options_.isa));
  return absl::OkStatus();
}

absl::Status CpuBackend::AddBias(const Tensor& y, WeightHandle bias) {
  auto w = Find(bias);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(y, "AddBias", "y"); !s.ok()) return s;
  if (static_cast<int64_t>((*w)->values.size()) != y.cols) {
    return absl::InvalidArgumentError("AddBias: bias length differs from the output width");
  }
  kernels::AddBias(F32(y), y.ld, static_cast<int>(y.rows), static_cast<int>(y.cols),
                   (*w)->values.data());
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(const Tensor& x, WeightHandle weight, float eps,
                                 const Tensor& out) {
  auto w = Find(weight);
  if (!w.ok()) return w.status();
  if (auto s = CheckF32(x, "RmsNorm", "x"); !s.ok()) return s;
  if (auto s = CheckF32(out, "RmsNorm", "out"); !s.ok()) return s;
  if (auto s = CheckSame(x, out, "RmsNorm"); !s.ok()) return s;
  if (static_cast<int64_t>((*w)->values.size()) != x.cols) {
    return absl::InvalidArgumentError("RmsNorm: weight length differs from the row width");
  }
  kernels::RmsNorm(F32(x), x.ld, (*w)->values.data(), static_cast<int>(x.rows),
                   static_cast<int>(x.cols), eps, F32(out), out.ld);
  return absl::OkStatus();
}

absl::Status CpuBackend::Rope(const Tensor& x, int num_heads, int head_dim,
                              std::span<const int32_t> positions, WeightHandle inv_freq) {
  auto w = Find(inv_freq);
  if (!w.ok()) return w.status();
  if (auto s = CheckRopeViews(x, num_heads, head_dim, positions,
                              static_cast<int64_t>((*w)->values.size()));
      !s.ok()) {
    return s;
  }
  kernels::ApplyRope(F32(x), x.ld, static_cast<int>(x.rows), num_heads, head_dim,
                     positions.data(), (*w)->values.data());
  return absl::OkStatus();
}

absl::Status CpuBackend::StoreKv(PoolStorage& pool, const kernels::KvPageLayout& layout,
                                 int layer, std::span<const kernels::AttentionSeq> seqs,
                                 std::span<const int32_t> positions, const Tensor& k,
                                 const Tensor& v) {
  auto data = PoolData(pool, "StoreKv");
  if (!data.ok()) return data.status();
  if (auto s = CheckKvViews(k, v, layout, pool.page_units()); !s.ok()) return s;
  kernels::StoreKv(*data, layout, layer, seqs, positions.data(), F32(k), F32(v), k.ld);
  return absl::OkStatus();
}

absl::Status CpuBackend::PagedAttention(const PoolStorage& pool,
                                        const kernels::KvPageLayout& layout, int layer,
                                        std::span<const kernels::AttentionSeq> seqs,
                                        std::span<const int32_t> positions, const Tensor& q,
                                        int num_heads, int num_kv_heads, int head_dim,
                                        const Tensor& out) {
  auto data = PoolData(pool, "PagedAttention");
  if (!data.ok()) return data.status();
  if (auto s = CheckSame(q, out, "PagedAttention"); !s.ok()) return s;
  kernels::detail::PagedAttention(*data, layout, layer, seqs, positions.data(), F32(q), q.ld,
                                  num_heads, num_kv_heads, head_dim, F32(out), out.ld,
                                  AttentionOptionsFor(options_.isa));
  return absl::OkStatus();
}

absl::Status CpuBackend::SiluMul(const Tensor& gate, const Tensor& up, const Tensor& out) {
  if (auto s = CheckSame(gate, up, "SiluMul"); !s.ok()) return s;
  if (auto s = CheckSame(gate, out, "SiluMul"); !s.ok()) return s;
  if (gate.ld == gate.cols && up.ld == up.cols && out.ld == out.cols) {
    kernels::SiluMul(F32(gate), F32(up), gate.elements(), F32(out));
    return absl::OkStatus();
  }
  // Views of wider rows (gate/up in one buffer): one parallel region over the rows.
  kernels::SiluMulRows(F32(gate), gate.ld, F32(up), up.ld, gate.rows, gate.cols, F32(out), out.ld);
  return absl::OkStatus();
}

absl::Status CpuBackend::Add(const Tensor& x, const Tensor& y) {
  if (auto s = CheckSame(x, y, "Add"); !s.ok()) return s;
  for (int64_t r = 0; r < x.rows; ++r) {
    float* xr = F32(x) + r * x.ld;
    const float* yr = F32(y) + r * y.ld;
    for (int64_t i = 0; i < x.cols; ++i) xr[i] += yr[i];
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::ArgmaxRows(const Tensor& logits, std::span<int32_t> out) {
  if (auto s = CheckF32(logits, "ArgmaxRows", "logits"); !s.ok()) return s;
  if (static_cast<int64_t>(out.size()) != logits.rows) {
    return absl::InvalidArgumentError("ArgmaxRows: one output per row");
  }
  for (int64_t r = 0; r < logits.rows; ++r) {
    out[r] = Argmax(std::span<const float>(F32(logits) + r * logits.ld, logits.cols));
  }
  return absl::OkStatus();
}

}  // namespace loraserve
