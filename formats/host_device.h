// LORASERVE_HOST_DEVICE marks small inline functions that host code and CUDA kernels share
// (dtype conversion, pool offset math), so one definition serves both compilers.
#pragma once

#if defined(__CUDACC__)
#define LORASERVE_HOST_DEVICE __host__ __device__
#else
#define LORASERVE_HOST_DEVICE
#endif
