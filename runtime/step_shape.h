// A step's shape for the backend's graph decision (StepShape), and the padding that turns a
// decode step of n rows into one of a graph bucket's rows. Pure functions of the plan.
#pragma once

#include "runtime/backend/backend.h"
#include "runtime/batch_plan.h"

namespace loraserve {

StepShape ShapeOf(const BatchPlan& plan);

// `plan` with rows appended up to `rows`: token 0 at position 0, in no sequence (no KV is
// stored or read for them; their attention output is zero) and with no LoRA segment, each its
// own logit row after the real ones. The real rows' results are unchanged by the padding.
BatchPlan PadPlan(const BatchPlan& plan, int rows);

}  // namespace loraserve
