// Scalar dtype conversions; the bulk loops are simple enough for the compiler to vectorise.
#include "formats/dtype.h"

#include <cstring>


namespace loraserve {

std::optional<DType> ParseDType(std::string_view name) {
  if (name == "F64") return DType::kF64;
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "I64") return DType::kI64;
  if (name == "I32") return DType::kI32;
  if (name == "I16") return DType::kI16;
  if (name == "I8") return DType::kI8;
  if (name == "U8") return DType::kU8;
  if (name == "BOOL") return DType::kBool;
  if (name == "F8_E4M3") return DType::kF8E4M3;
  if (name == "F8_E5M2") return DType::kF8E5M2;
  return std::nullopt;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kF8E5M2: return "F8_E5M2";
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64: return 8;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 2;
    default: return 1;
  }
}

bool IsFloatDType(DType dtype) {
  return dtype == DType::kF64 || dtype == DType::kF32 || dtype == DType::kF16 ||
         dtype == DType::kBF16;
}

void ToFloat(DType dtype, const uint8_t* src, size_t count, float* dst) {
  // An empty tensor's buffers may be null, and memcpy's pointers must not be, even for 0 bytes.
  if (count == 0) return;
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::kF64:
      for (size_t i = 0; i < count; ++i) {
        double v;
        std::memcpy(&v, src + i * 8, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t v;
        std::memcpy(&v, src + i * 2, 2);
        dst[i] = Bf16ToFloat(v);
      }
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t v;
        std::memcpy(&v, src + i * 2, 2);
        dst[i] = F16ToFloat(v);
      }
      return;
    default:
      return;
  }
}

}  // namespace loraserve
