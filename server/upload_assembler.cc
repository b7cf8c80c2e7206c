// Error texts name the proto field at fault (header.*, chunk.*), since the client wrote those.
#include "server/upload_assembler.h"

#include "absl/strings/str_cat.h"
#include "adapters/adapter_store.h"

namespace loraserve::server {

absl::Status UploadAssembler::Check(absl::Status status) {
  if (!status.ok() && failed_.ok()) failed_ = status;
  return status;
}

absl::Status UploadAssembler::TooLarge(uint64_t bytes) const {
  return absl::ResourceExhaustedError(absl::StrCat("upload of ", bytes, " bytes exceeds the ",
                                                   max_bytes_, "-byte limit (--max-upload-bytes)"));
}

absl::Status UploadAssembler::AddHeader(const UploadHeaderFields& header) {
  if (!failed_.ok()) return failed_;
  if (header_.has_value()) {
    return Check(absl::InvalidArgumentError("header: sent twice; send it once, first"));
  }
  header_ = header;
  if (!header.peft_format) {
    return Check(
        absl::InvalidArgumentError("header.format: only ADAPTER_FORMAT_PEFT is supported"));
  }
  if (absl::Status s = ValidateAdapterId(header.adapter_id); !s.ok()) {
    return Check(absl::InvalidArgumentError(absl::StrCat("header.", s.message())));
  }
  if (header.total_bytes > max_bytes_) return Check(TooLarge(header.total_bytes));
  return absl::OkStatus();
}

absl::Status UploadAssembler::AddChunk(const std::string& file_name, uint64_t offset,
                                       std::string_view data) {
  if (!failed_.ok()) return failed_;
  if (!header_.has_value()) {
    return Check(
        absl::InvalidArgumentError("header: the first message of an upload must be the header"));
  }
  if (file_name.empty()) {
    return Check(absl::InvalidArgumentError("chunk.file_name: must not be empty"));
  }
  std::string& file = files_[file_name];
  if (offset != file.size()) {
    return Check(absl::InvalidArgumentError(
        absl::StrCat("chunk.offset: ", offset, " for ", file_name, " but ", file.size(),
                     " bytes were received; send chunks in order")));
  }
  received_ += data.size();
  if (received_ > max_bytes_) return Check(TooLarge(received_));
  file.append(data);
  return absl::OkStatus();
}

absl::Status UploadAssembler::AddEmpty() {
  if (!failed_.ok()) return failed_;
  if (!header_.has_value()) {
    return Check(
        absl::InvalidArgumentError("header: the first message of an upload must be the header"));
  }
  return Check(absl::InvalidArgumentError("message: empty upload message"));
}

absl::Status UploadAssembler::Finish() const {
  if (!failed_.ok()) return failed_;
  if (!header_.has_value()) return absl::InvalidArgumentError("header: the upload had no header");
  return absl::OkStatus();
}

}  // namespace loraserve::server
