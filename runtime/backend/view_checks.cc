#include "runtime/backend/view_checks.h"

#include "absl/strings/str_cat.h"
#include "formats/dtype.h"

namespace loraserve {

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

absl::Status CheckElements(const std::vector<int64_t>& shape, size_t values) {
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  if (elements != static_cast<int64_t>(values)) {
    return absl::InvalidArgumentError(
        absl::StrCat("UploadWeight: shape holds ", elements, " elements, got ", values));
  }
  return absl::OkStatus();
}

absl::Status CheckLinearViews(const Tensor& x, const std::vector<int64_t>& shape,
                              const Tensor& y) {
  if (auto s = CheckF32(x, "Linear", "x"); !s.ok()) return s;
  if (auto s = CheckF32(y, "Linear", "y"); !s.ok()) return s;
  if (shape.size() != 2 || shape[1] != x.cols || shape[0] != y.cols || x.rows != y.rows) {
    return absl::InvalidArgumentError(absl::StrCat("Linear: x ", x.rows, "x", x.cols, ", y ",
                                                   y.rows, "x", y.cols, " do not fit the weight"));
  }
  return absl::OkStatus();
}

absl::Status CheckLoraSegments(const Tensor& x, const Tensor& y, const LoraModulePlan& plan) {
  if (auto s = CheckF32(x, "LoraApply", "x"); !s.ok()) return s;
  if (auto s = CheckF32(y, "LoraApply", "y"); !s.ok()) return s;
  for (const kernels::LoraSegment& segment : plan.segments) {
    if (segment.row_begin < 0 || segment.row_end > x.rows || segment.row_end > y.rows ||
        segment.refs_begin < 0 || segment.refs_end > static_cast<int>(plan.refs.size())) {
      return absl::InvalidArgumentError("LoraApply: segment outside the step's rows or refs");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckRopeViews(const Tensor& x, int num_heads, int head_dim,
                            std::span<const int32_t> positions, int64_t inv_freq_elements) {
  if (auto s = CheckF32(x, "Rope", "x"); !s.ok()) return s;
  if (static_cast<int64_t>(positions.size()) != x.rows ||
      x.cols != int64_t{num_heads} * head_dim || inv_freq_elements != head_dim / 2) {
    return absl::InvalidArgumentError("Rope: positions, heads or frequencies disagree with x");
  }
  return absl::OkStatus();
}

absl::Status CheckKvViews(const Tensor& k, const Tensor& v, const kernels::KvPageLayout& layout,
                          int64_t page_units) {
  if (auto s = CheckSame(k, v, "StoreKv"); !s.ok()) return s;
  if (k.cols != layout.kv_dim || k.ld != v.ld) {
    return absl::InvalidArgumentError("StoreKv: k/v width differs from the KV layout");
  }
  if (layout.page_floats() > page_units) {
    return absl::InvalidArgumentError("StoreKv: a KV block does not fit in one pool page");
  }
  return absl::OkStatus();
}

}  // namespace loraserve
