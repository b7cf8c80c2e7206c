// Fuzzes the safetensors reader on whole files (the 8-byte length, the JSON header, the tensor
// table): any bytes are an error or a file whose every tensor view lies inside the buffer and
// reads back as fp32 with its own shape.
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/safetensors.h"

using loraserve::SafetensorsFile;
using loraserve::TensorView;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = SafetensorsFile::FromBuffer(std::string(reinterpret_cast<const char*>(data), size),
                                          "fuzz.safetensors");
  if (!file.ok()) return 0;
  // The views point into the file's own copy of the bytes: [begin, end) of that copy.
  const uint8_t* begin = nullptr;
  const uint8_t* end = nullptr;
  for (const TensorView& t : (*file)->tensors()) {
    if (begin == nullptr || t.bytes.data() < begin) begin = t.bytes.data();
    if (end == nullptr || t.bytes.data() + t.bytes.size() > end)
      end = t.bytes.data() + t.bytes.size();
    if ((*file)->Find(t.name) != &t) __builtin_trap();  // names are unique and indexed
    if (t.numel() < 0) __builtin_trap();
    // Reading back stays within the view; small tensors only, to keep each run fast.
    if (t.numel() <= (1 << 16)) {
      auto values = (*file)->ReadFloat(t.name, t.shape);
      if (values.ok() && values->size() != static_cast<size_t>(t.numel())) __builtin_trap();
    }
  }
  if (begin != nullptr && static_cast<size_t>(end - begin) > size) __builtin_trap();
  return 0;
}
