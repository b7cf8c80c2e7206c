// Packing: rows are laid out greedily page by page in (layer, module, A rows, B columns) order;
// the first pass only counts pages so a failed acquire allocates nothing.
#include "runtime/adapter_pool.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace loraserve {
namespace {

using kernels::LoraDtype;

LoraDtype StoredDtype(const LoraModuleWeights& module, AdapterStorage storage) {
  switch (storage) {
    case AdapterStorage::kF32:
      return LoraDtype::kF32;
    case AdapterStorage::kBF16:
      return LoraDtype::kBF16;
    case AdapterStorage::kAuto:
      break;
  }
  switch (module.source_dtype) {
    case DType::kBF16:
      return LoraDtype::kBF16;
    case DType::kF16:
      return LoraDtype::kF16;
    default:
      return LoraDtype::kF32;
  }
}

// Calls emit(layer, module, is_b, rank row, length, dtype) for every row of the adapter in
// packing order.
template <typename Fn>
void ForEachRow(const LoraAdapter& adapter, const ModelConfig& config, AdapterStorage storage,
                Fn&& emit) {
  for (int l = 0; l < adapter.num_layers; ++l) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& module = adapter.modules[l][m];
      if (!module) continue;
      const ModuleDims dims = config.Dims(static_cast<Module>(m));
      const LoraDtype dtype = StoredDtype(*module, storage);
      for (int r = 0; r < module->rank; ++r) emit(l, m, /*is_b=*/false, r, dims.in, dtype);
      for (int r = 0; r < module->rank; ++r) emit(l, m, /*is_b=*/true, r, dims.out, dtype);
    }
  }
}

// Packs `length` values (every `stride`-th of `src`) as `dtype` into pool units; a 16-bit row
// of odd length leaves the high half of its last unit zero.
std::vector<uint32_t> PackRow(const float* src, int64_t stride, int length, LoraDtype dtype) {
  std::vector<uint32_t> units(static_cast<size_t>(kernels::LoraRowUnits(dtype, length)), 0);
  if (dtype == LoraDtype::kF32) {
    for (int i = 0; i < length; ++i) std::memcpy(&units[i], &src[i * stride], sizeof(float));
    return units;
  }
  std::vector<uint16_t> bits(length);
  for (int i = 0; i < length; ++i) {
    const float value = src[i * stride];
    // Auto storage only picks F16 for values that came from an fp16 file: exact.
    bits[i] = dtype == LoraDtype::kBF16 ? FloatToBf16(value) : FloatToF16(value);
  }
  std::memcpy(units.data(), bits.data(), bits.size() * sizeof(uint16_t));
  return units;
}

}  // namespace

absl::StatusOr<AdapterStorage> ParseAdapterStorage(std::string_view name) {
  if (name == "auto") return AdapterStorage::kAuto;
  if (name == "fp32") return AdapterStorage::kF32;
  if (name == "bf16") return AdapterStorage::kBF16;
  return absl::InvalidArgumentError(absl::StrCat(
      "adapter dtype must be auto, fp32 or bf16, got '", std::string(name), "'"));
}

const char* AdapterStorageName(AdapterStorage storage) {
  switch (storage) {
    case AdapterStorage::kF32:
      return "fp32";
    case AdapterStorage::kBF16:
      return "bf16";
    default:
      return "auto";
  }
}

std::vector<float> DoraScale(const LoraModuleWeights& module, const std::vector<float>& base,
                             ModuleDims dims) {
  std::vector<float> scale(dims.out);
  std::vector<double> row(dims.in);
  for (int o = 0; o < dims.out; ++o) {
    for (int i = 0; i < dims.in; ++i) row[i] = base[static_cast<size_t>(o) * dims.in + i];
    for (int r = 0; r < module.rank; ++r) {
      const double b = static_cast<double>(module.scaling) * module.b[static_cast<size_t>(o) * module.rank + r];
      const float* a = &module.a[static_cast<size_t>(r) * dims.in];
      for (int i = 0; i < dims.in; ++i) row[i] += b * a[i];
    }
    double norm = 0.0;
    for (int i = 0; i < dims.in; ++i) norm += row[i] * row[i];
    scale[o] = static_cast<float>(module.dora_magnitude[o] / std::sqrt(norm));
  }
  return scale;
}

AdapterPool::AdapterPool(PagePool* pages, PoolStorage* memory, const ModelConfig& config,
                         BaseWeightFn base_weight, AdapterStorage storage)
    : pages_(pages),
      memory_(memory),
      config_(config),
      storage_(storage),
      base_weight_(std::move(base_weight)) {}

int64_t AdapterPool::PagesNeeded(const LoraAdapter& adapter, const ModelConfig& config,
                                 int64_t page_units, AdapterStorage storage) {
  const int64_t page = page_units;
  int64_t pages = 0;
  int64_t used = page;  // forces a first page
  ForEachRow(adapter, config, storage, [&](int, int, bool, int, int length, LoraDtype dtype) {
    const int64_t units = kernels::LoraRowUnits(dtype, length);
    if (used + units > page) {
      ++pages;
      used = 0;
    }
    used += units;
  });
  return pages;
}

absl::StatusOr<const ResidentLora*> AdapterPool::Acquire(
    const std::string& key, const std::shared_ptr<const LoraAdapter>& adapter,
    double* load_seconds) {
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    ++stats_.hits;
    ++it->second.refs;
    lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
    return it->second.resident.get();
  }
  ++stats_.misses;
  const auto start = std::chrono::steady_clock::now();
  const int64_t page = pages_->page_units();
  const int64_t needed = PagesNeeded(*adapter);
  for (int max_dim : {config_.hidden_size, config_.intermediate_size, config_.q_dim()}) {
    if (max_dim > page) {
      return absl::InternalError("pool pages are smaller than one adapter row");
    }
  }
  while (pages_->free_pages() < needed && EvictOne()) {
  }
  auto pages = pages_->Allocate(static_cast<int32_t>(needed));
  if (!pages) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "adapter ", key, " needs ", needed, " pool pages, ", pages_->free_pages(),
        " free and nothing evictable"));
  }
  auto resident = std::make_unique<ResidentLora>();
  resident->id = adapter->id;
  resident->use_dora = adapter->use_dora;
  resident->modules.resize(adapter->num_layers);
  for (int l = 0; l < adapter->num_layers; ++l) {
    for (int m = 0; m < kNumModules; ++m) {
      const auto& module = adapter->modules[l][m];
      if (!module) continue;
      ResidentLoraModule& slot = resident->modules[l][m].emplace();
      slot.rank = module->rank;
      slot.scaling = module->scaling;
      slot.dtype = StoredDtype(*module, storage_);
      slot.a_rows.resize(module->rank);
      slot.b_cols.resize(module->rank);
      if (!module->dora_magnitude.empty()) {
        const Module mod = static_cast<Module>(m);
        slot.dora_scale = DoraScale(*module, base_weight_(l, mod), config_.Dims(mod));
      }
    }
  }
  // Same walk as PagesNeeded, now writing rows.
  absl::Status written;
  size_t page_index = 0;
  int64_t used = page;
  bool first = true;
  ForEachRow(*adapter, config_, storage_,
             [&](int l, int m, bool is_b, int r, int length, LoraDtype dtype) {
               const int64_t units = kernels::LoraRowUnits(dtype, length);
               if (used + units > page) {
                 if (!first) ++page_index;
                 first = false;
                 used = 0;
               }
               const int64_t offset = int64_t{(*pages)[page_index]} * page + used;
               const LoraModuleWeights& module = *adapter->modules[l][m];
               ResidentLoraModule& slot = *resident->modules[l][m];
               const std::vector<uint32_t> packed =
                   is_b ? PackRow(&module.b[r], module.rank, length, dtype)
                        : PackRow(&module.a[static_cast<size_t>(r) * length], 1, length, dtype);
               if (written.ok()) written = memory_->Write(offset, packed);
               (is_b ? slot.b_cols : slot.a_rows)[r] = offset;
               used += units;
             });
  if (!written.ok()) {
    pages_->Free(*pages);
    return written;
  }
  Entry entry;
  entry.adapter = adapter;
  entry.resident = std::move(resident);
  entry.pages = std::move(*pages);
  entry.refs = 1;
  entry.pinned = pinned_requests_.count(key) ? pinned_requests_[key] : false;
  lru_.push_front(key);
  entry.lru_pos = lru_.begin();
  const ResidentLora* view = entry.resident.get();
  entries_.emplace(key, std::move(entry));
  ++stats_.loads;
  if (load_seconds != nullptr) {
    *load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return view;
}

void AdapterPool::Release(const std::string& id) {
  auto it = entries_.find(id);
  if (it != entries_.end() && it->second.refs > 0) --it->second.refs;
}

int AdapterPool::RefCount(const std::string& id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? 0 : it->second.refs;
}

void AdapterPool::SetPinned(const std::string& id, bool pinned) {
  pinned_requests_[id] = pinned;
  auto it = entries_.find(id);
  if (it != entries_.end()) it->second.pinned = pinned;
}

bool AdapterPool::IsPinned(const std::string& id) const {
  auto it = pinned_requests_.find(id);
  return it != pinned_requests_.end() && it->second;
}

void AdapterPool::Evict(std::map<std::string, Entry>::iterator it) {
  pages_->Free(it->second.pages);
  lru_.erase(it->second.lru_pos);
  entries_.erase(it);
  ++stats_.evictions;
}

bool AdapterPool::EvictOne() {
  for (auto lru = lru_.rbegin(); lru != lru_.rend(); ++lru) {
    auto it = entries_.find(*lru);
    if (it->second.refs == 0 && !it->second.pinned) {
      Evict(it);
      return true;
    }
  }
  return false;
}

void AdapterPool::EvictIfUnused(const std::string& id) {
  auto it = entries_.find(id);
  if (it != entries_.end() && it->second.refs == 0) Evict(it);
  pinned_requests_.erase(id);
}

std::vector<std::string> AdapterPool::ResidentKeys() const {
  std::vector<std::string> keys;
  for (const auto& [key, entry] : entries_) keys.push_back(key);
  return keys;
}

AdapterPoolStats AdapterPool::stats() const {
  AdapterPoolStats s = stats_;
  s.resident = static_cast<int>(entries_.size());
  s.pages_used = 0;
  for (const auto& [id, entry] : entries_) s.pages_used += static_cast<int64_t>(entry.pages.size());
  return s;
}

}  // namespace loraserve
