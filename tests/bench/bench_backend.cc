#include "tests/bench/bench_backend.h"

#include <cstdlib>
#include <iostream>

namespace loraserve::bench {

CpuBackendOptions BackendOptionsFromEnv() {
  CpuBackendOptions options;
  if (const char* v = std::getenv("LORASERVE_BENCH_WEIGHT_DTYPE"); v != nullptr && *v) {
    auto dtype = ParseWeightDtype(v);
    if (!dtype.ok()) {
      std::cerr << "LORASERVE_BENCH_WEIGHT_DTYPE: " << dtype.status().message() << "\n";
      std::exit(2);
    }
    options.weight_dtype = *dtype;
  }
  if (const char* v = std::getenv("LORASERVE_BENCH_CPU_ISA"); v != nullptr && *v) {
    auto isa = ParseCpuIsa(v);
    if (!isa.ok()) {
      std::cerr << "LORASERVE_BENCH_CPU_ISA: " << isa.status().message() << "\n";
      std::exit(2);
    }
    options.isa = *isa;
  }
  std::cerr << "bench: cpu backend with " << CpuIsaName(options.isa) << " kernels\n";
  return options;
}

}  // namespace loraserve::bench
