// Validation order follows the file: size, header length, JSON, per-tensor fields, then the
// layout of the data section as a whole (bounds and overlaps).
#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace loraserve {
namespace {

using json = nlohmann::json;

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) munmap(mapping_, size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat: ", strerror(errno)));
  }
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* mapping = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", strerror(errno)));
    }
    file->mapping_ = mapping;
    file->data_ = static_cast<const uint8_t*>(mapping);
  }
  ::close(fd);
  if (absl::Status status = file->Parse(); !status.ok()) return status;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBuffer(std::string bytes,
                                                                             std::string label) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->label_ = std::move(label);
  file->owned_ = std::move(bytes);
  file->data_ = reinterpret_cast<const uint8_t*>(file->owned_.data());
  file->size_ = file->owned_.size();
  if (absl::Status status = file->Parse(); !status.ok()) return status;
  return file;
}

absl::Status SafetensorsFile::Parse() {
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", parts...));
  };
  if (size_ < 8) return error("file is ", size_, " bytes, shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data_[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return error("header length ", header_len, " exceeds the limit of ",
                 kMaxSafetensorsHeaderBytes, " bytes");
  }
  if (header_len > size_ - 8) {
    return error("header length ", header_len, " runs past the end of the file (", size_,
                 " bytes): the file is truncated or not safetensors");
  }
  const std::string_view header(reinterpret_cast<const char*>(data_ + 8), header_len);
  json root = json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return error("header is not valid JSON");
  if (!root.is_object()) return error("header is not a JSON object");

  const uint8_t* base = data_ + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;
  struct Extent {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Extent> extents;
  for (auto& item : root.items()) {
    // Named variables, not a structured binding: clang 14 (the fuzz build) cannot capture one.
    const std::string& name = item.key();
    const json& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return error("__metadata__ is not an object");
      for (auto& [key, value] : entry.items()) {
        if (!value.is_string()) return error("__metadata__ value for '", key, "' is not a string");
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    auto tensor_error = [&](auto&&... parts) { return error("tensor '", name, "': ", parts...); };
    if (!entry.is_object()) return tensor_error("entry is not an object");
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return tensor_error("missing dtype");
    const std::optional<DType> dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype) return tensor_error("unknown dtype '", dtype_it->get<std::string>(), "'");
    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) return tensor_error("missing shape");
    TensorView view;
    view.name = name;
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& dim : *shape_it) {
      if (!dim.is_number_unsigned()) return tensor_error("shape has a non-integer or negative dim");
      const uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / d) {
        return tensor_error("shape ", shape_it->dump(), " overflows");
      }
      numel *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return tensor_error("data_offsets must be two non-negative integers");
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end) return tensor_error("data_offsets [", begin, ", ", end, "] are reversed");
    if (end > data_size) {
      return tensor_error("data_offsets end ", end, " is beyond the data section (", data_size,
                          " bytes): the file is truncated or corrupt");
    }
    const uint64_t expected = numel * DTypeSize(*dtype);
    if (end - begin != expected) {
      return tensor_error("shape ", ShapeString(view.shape), " of ", DTypeName(*dtype), " needs ",
                          expected, " bytes but data_offsets span ", end - begin);
    }
    view.bytes = std::span<const uint8_t>(base + begin, end - begin);
    tensors_.push_back(std::move(view));
    extents.push_back({begin, end, nullptr});
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    extents[i].name = &tensors_[i].name;
    index_[tensors_[i].name] = i;
  }
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].begin < extents[i - 1].end) {
      return error("tensors '", *extents[i - 1].name, "' and '", *extents[i].name,
                   "' have overlapping data_offsets");
    }
  }
  return absl::OkStatus();
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsFile::ReadFloatInto(const TensorView& tensor,
                                            std::span<const int64_t> expected_shape,
                                            std::span<float> out) const {
  if (!std::equal(tensor.shape.begin(), tensor.shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": tensor '", tensor.name,
                                                   "' has shape ", ShapeString(tensor.shape),
                                                   ", expected ", ShapeString(expected_shape)));
  }
  if (!IsFloatDType(tensor.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": tensor '", tensor.name,
                                                   "' has dtype ", DTypeName(tensor.dtype),
                                                   ", expected a float type (F32, F16, BF16)"));
  }
  if (out.size() != static_cast<size_t>(tensor.numel())) {
    return absl::InternalError(absl::StrCat("output buffer for '", tensor.name, "' has wrong size"));
  }
  ToFloat(tensor.dtype, tensor.bytes.data(), out.size(), out.data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloat(
    std::string_view name, std::span<const int64_t> expected_shape) const {
  const TensorView* tensor = Find(name);
  if (tensor == nullptr) {
    return absl::NotFoundError(absl::StrCat(label_, ": missing tensor '", std::string(name), "'"));
  }
  std::vector<float> out(static_cast<size_t>(tensor->numel()));
  if (absl::Status s = ReadFloatInto(*tensor, expected_shape, out); !s.ok()) return s;
  return out;
}

absl::StatusOr<SafetensorsFolder> SafetensorsFolder::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsFolder folder;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index_path)) {
    std::ifstream in(index_path);
    json index = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path.string(), ": not valid JSON with a \"weight_map\" object"));
    }
    for (auto& [tensor, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": weight_map entry '", tensor, "' is not a string"));
      }
      const std::string shard_name = shard.get<std::string>();
      if (shard_name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": shard name '",
                                                       shard_name, "' must be a plain file name"));
      }
      weight_map[tensor] = shard_name;
      if (std::find(shard_names.begin(), shard_names.end(), shard_name) == shard_names.end()) {
        shard_names.push_back(shard_name);
      }
    }
  } else if (fs::exists(fs::path(dir) / "model.safetensors")) {
    shard_names.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors or model.safetensors.index.json (is this a Hugging Face "
             "model folder?)"));
  }
  std::map<std::string, size_t> shard_index;
  for (const std::string& name : shard_names) {
    auto file = SafetensorsFile::Open((fs::path(dir) / name).string());
    if (!file.ok()) return file.status();
    shard_index[name] = folder.files_.size();
    folder.files_.push_back(std::move(*file));
  }
  for (size_t i = 0; i < folder.files_.size(); ++i) {
    for (const TensorView& t : folder.files_[i]->tensors()) {
      if (folder.owner_.count(t.name) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": tensor '", t.name, "' appears in more than one shard"));
      }
      folder.owner_[t.name] = i;
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    auto it = folder.owner_.find(tensor);
    if (it == folder.owner_.end() || it->second != shard_index[shard]) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": index says tensor '", tensor, "' is in ", shard, " but it is not there"));
    }
  }
  return folder;
}

bool SafetensorsFolder::Has(std::string_view name) const { return owner_.count(name) != 0; }

std::vector<std::string> SafetensorsFolder::TensorNames() const {
  std::vector<std::string> names;
  for (const auto& [name, owner] : owner_) names.push_back(name);
  return names;
}

const TensorView* SafetensorsFolder::Find(std::string_view name) const {
  auto it = owner_.find(name);
  return it == owner_.end() ? nullptr : files_[it->second]->Find(name);
}

absl::StatusOr<std::vector<float>> SafetensorsFolder::ReadFloat(
    std::string_view name, std::span<const int64_t> expected_shape) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) {
    return absl::NotFoundError(absl::StrCat("model is missing tensor '", std::string(name), "'"));
  }
  return files_[it->second]->ReadFloat(name, expected_shape);
}

}  // namespace loraserve
