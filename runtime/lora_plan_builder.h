// Builds a step's LoRA plan once, for every layer and module, from the sequences' adapter sets:
// consecutive sequences with the same set share one segment, each ref carries its scale with the
// request weight folded in, and DoRA segments carry their per-row factors.
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/plan/lora_plan.h"
#include "runtime/batch_plan.h"
#include "runtime/resident_adapter.h"

namespace loraserve {

// `sets[seq.adapter_set]` is the set of each sequence with adapter_set >= 0. The plan points
// into the ResidentLora tables of `sets`, which must outlive it.
absl::StatusOr<kernels::LoraPlan> BuildLoraPlan(std::span<const SequencePlan> seqs,
                                                std::span<const AdapterSetView> sets,
                                                int num_layers);

}  // namespace loraserve
