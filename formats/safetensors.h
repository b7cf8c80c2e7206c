// Reader for the safetensors format (8-byte little-endian header length, JSON header, raw
// data). Every structural property is validated at open time so later reads cannot run out of
// bounds: a malformed file is an error naming the file and the tensor, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "formats/dtype.h"

namespace loraserve {

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // points into the mapped file or owned buffer

  int64_t numel() const;
};

// Largest header we accept; real headers are a few hundred KiB even for huge models.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

class SafetensorsFile {
 public:
  // Maps the file read-only.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory file (an upload); `label` names it in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBuffer(std::string bytes,
                                                                     std::string label);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& label() const { return label_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorView* Find(std::string_view name) const;

  // Converts a float tensor to fp32 after checking its shape equals `expected_shape`.
  absl::StatusOr<std::vector<float>> ReadFloat(std::string_view name,
                                               std::span<const int64_t> expected_shape) const;
  absl::Status ReadFloatInto(const TensorView& tensor, std::span<const int64_t> expected_shape,
                             std::span<float> out) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string label_;
  const uint8_t* data_ = nullptr;  // whole file
  size_t size_ = 0;
  void* mapping_ = nullptr;  // munmap on destruction when set
  std::string owned_;        // FromBuffer storage
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face weight folder: model.safetensors, or shards listed by
// model.safetensors.index.json ("weight_map": tensor name -> shard file).
class SafetensorsFolder {
 public:
  static absl::StatusOr<SafetensorsFolder> Open(const std::string& dir);

  bool Has(std::string_view name) const;
  std::vector<std::string> TensorNames() const;
  const TensorView* Find(std::string_view name) const;
  absl::StatusOr<std::vector<float>> ReadFloat(std::string_view name,
                                               std::span<const int64_t> expected_shape) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t, std::less<>> owner_;  // tensor -> index in files_
};

}  // namespace loraserve
