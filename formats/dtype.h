// Element types found in safetensors files and their conversion to fp32, the compute type of
// the CPU backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "formats/half.h"

namespace loraserve {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

// Parses a safetensors dtype string ("F32", "BF16", ...); nullopt when unknown.
std::optional<DType> ParseDType(std::string_view name);
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);
// True when ToFloat can convert the dtype (the float types).
bool IsFloatDType(DType dtype);

// Converts `count` elements of a float dtype to fp32. Caller checked IsFloatDType.
void ToFloat(DType dtype, const uint8_t* src, size_t count, float* dst);

}  // namespace loraserve
