// The CPU backend options a benchmark runs with, from the environment (the CLI's --weight-dtype
// and --cpu-isa): LORASERVE_BENCH_WEIGHT_DTYPE (auto|fp32|bf16|fp16) and LORASERVE_BENCH_CPU_ISA
// (auto|avx2|portable). Exits with a message on a bad value.
#pragma once

#include "runtime/backend/cpu_backend.h"

namespace loraserve::bench {

CpuBackendOptions BackendOptionsFromEnv();

}  // namespace loraserve::bench
