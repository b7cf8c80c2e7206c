// Exact widening of the 16-bit float formats to fp32: the one implementation, shared by the
// kernels (16-bit adapter rows) and runtime/formats (safetensors tensors).
#pragma once

#include <cstdint>
#include <cstring>

namespace loraserve::kernels {

// bf16 is the top half of an fp32.
inline float Bf16BitsToFloat(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

// IEEE binary16 bits to fp32, exact (subnormals, infinities and NaNs included).
inline float F16BitsToFloat(uint16_t bits) {
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

}  // namespace loraserve::kernels
