// The one implementation of bf16/fp16 <-> fp32 conversion, header-only so that the formats
// (safetensors tensors), the CPU kernels (16-bit adapter rows and weights) and CUDA code share
// it bit for bit. Widening is exact; narrowing rounds to nearest even.
#pragma once

#include <cstdint>
#include <cstring>

#include "formats/host_device.h"

namespace loraserve {

// bf16 is the top half of an fp32.
LORASERVE_HOST_DEVICE inline float Bf16ToFloat(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

// IEEE binary16 bits to fp32, exact (subnormals, infinities and NaNs included).
LORASERVE_HOST_DEVICE inline float F16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  uint32_t word;
  if (exponent == 0 && mantissa == 0) {
    word = sign;
  } else if (exponent == 0) {  // subnormal: renormalise
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    word = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  } else if (exponent == 31) {
    word = sign | 0x7f800000u | (mantissa << 13);
  } else {
    word = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

// Round to nearest even, NaN kept quiet.
LORASERVE_HOST_DEVICE inline uint16_t FloatToBf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  if ((word & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((word >> 16) | 0x40);
  const uint32_t rounding = 0x7fffu + ((word >> 16) & 1u);
  return static_cast<uint16_t>((word + rounding) >> 16);
}

// Round to nearest even; beyond the fp16 range gives infinity, NaN stays a (quiet) NaN.
LORASERVE_HOST_DEVICE inline uint16_t FloatToF16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  const uint16_t sign = static_cast<uint16_t>((word >> 16) & 0x8000u);
  const uint32_t magnitude = word & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;  // NaN
  const int exponent = static_cast<int>(magnitude >> 23) - 127 + 15;
  if (exponent >= 31) return sign | 0x7c00u;  // too large (or infinite): infinity
  if (exponent <= 0) {
    // Subnormal (or zero) in fp16: shift the full 24-bit significand into place, rounding to
    // nearest even on the bits that fall off.
    if (exponent < -10) return sign;  // below half the smallest subnormal
    const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    const int shift = 14 - exponent;
    uint32_t half = significand >> shift;
    const uint32_t rest = significand & ((1u << shift) - 1);
    const uint32_t midpoint = 1u << (shift - 1);
    if (rest > midpoint || (rest == midpoint && (half & 1u))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t half = (static_cast<uint32_t>(exponent) << 10) | ((magnitude >> 13) & 0x3ffu);
  const uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into infinity
  return sign | static_cast<uint16_t>(half);
}

}  // namespace loraserve
