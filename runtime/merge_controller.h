// Folds one adapter into the base weights for single-tenant traffic and restores the base
// bit-identically from pristine copies (never by subtraction). Decides when, with a window
// of sustained single-adapter traffic as hysteresis; the backend-side work is Merge/Unmerge.
// Not thread-safe: owned by the engine's step loop.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "adapters/lora_adapter.h"
#include "runtime/llama_model.h"

namespace loraserve {

enum class MergeMode;

class MergeController {
 public:
  using Clock = std::chrono::steady_clock;

  explicit MergeController(LlamaModel* model) : model_(model) {}

  // W' = W + s B A on every module the adapter targets (DoRA: W' = g * (W + s B A) per row).
  // `key` identifies this registration of the adapter (see AdapterPool::Acquire).
  void Merge(const std::shared_ptr<const LoraAdapter>& adapter, const std::string& key);
  // Copies the pristine rows back; a no-op when nothing is merged.
  void Unmerge();

  const std::string& merged_id() const { return merged_id_; }  // the pool key
  const std::string& merged_adapter_id() const { return merged_adapter_id_; }
  bool merged() const { return !merged_id_.empty(); }
  // The weights adapters must be measured against (pristine even while merged).
  const std::vector<float>& PristineWeight(int layer, Module module) const;

  // The policy, called once per step with the single adapter every active request uses
  // (nullopt when traffic is mixed, base-only or absent). Returns the adapter id that should be
  // merged for this step ("" = none).
  std::string Decide(MergeMode mode, const std::string& forced_id,
                     const std::optional<std::string>& single_adapter, bool idle, Clock::time_point now,
                     Clock::duration window);

  int64_t switches() const { return switches_; }
  double seconds_merged() const { return seconds_merged_; }
  double seconds_unmerged() const { return seconds_unmerged_; }
  // Accounts time spent since the last call in the current mode.
  void Tick(Clock::time_point now);

 private:
  LlamaModel* model_;
  std::string merged_id_;
  std::string merged_adapter_id_;
  std::map<std::pair<int, int>, std::vector<float>> pristine_;  // (layer, module) -> weights
  std::optional<std::string> candidate_;
  Clock::time_point candidate_since_;
  int64_t switches_ = 0;
  double seconds_merged_ = 0;
  double seconds_unmerged_ = 0;
  std::optional<Clock::time_point> last_tick_;
};

}  // namespace loraserve
