// A stored adapter's index entry: what registration needs (rank, alpha, targets, size), kept in
// the store manifest written atomically with the adapter, so a start over thousands of stored
// adapters reads one small JSON per adapter and no tensors. The tensors are read, checked
// against the manifest's sha256 and parsed when a request first needs the adapter.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "adapters/adapter_store.h"
#include "adapters/lora_adapter.h"
#include "runtime/adapter_loader.h"
#include "runtime/adapter_registry.h"

namespace loraserve::server {

std::string AdapterIndexJson(const AdapterSummary& summary);
// DATA_LOSS naming the field when the index is malformed; the id comes from the store entry.
absl::StatusOr<AdapterSummary> ParseAdapterIndex(const std::string& id, std::string_view json);

// Reads `entry` from the store: parses it against `base` and fails with DATA_LOSS when
// adapter_model.safetensors no longer hashes to the sha256 its manifest recorded.
AdapterLoadFn StoredAdapterLoader(const StoredAdapter& entry,
                                  std::shared_ptr<const ModelConfig> base, AdapterLimits limits);

}  // namespace loraserve::server
