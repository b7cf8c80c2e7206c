// The UploadAdapter stream as a state machine with no transport: a header first, then file
// chunks in order, under a byte limit. The gRPC reactor (admin_service.cc) feeds it one message
// at a time; unit tests and the fuzzer (tests/fuzz/upload_stream_fuzz.cc) drive it directly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace loraserve::server {

// The fields of v1::UploadHeader that the stream checks, without the proto.
struct UploadHeaderFields {
  std::string adapter_id;
  std::string sha256;
  bool peft_format = true;   // ADAPTER_FORMAT_UNSPECIFIED or ADAPTER_FORMAT_PEFT
  uint64_t total_bytes = 0;  // 0 = unknown
};

// Not thread-safe: one per upload call (gRPC serialises a call's reads). The first error is
// final: the call ends with it, and every later message gets it again.
class UploadAssembler {
 public:
  explicit UploadAssembler(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  absl::Status AddHeader(const UploadHeaderFields& header);
  absl::Status AddChunk(const std::string& file_name, uint64_t offset, std::string_view data);
  // A message that carries neither a header nor a chunk.
  absl::Status AddEmpty();
  // The client half-closed: OK when a header arrived and nothing failed.
  absl::Status Finish() const;

  // Set once AddHeader has been called (even when it failed).
  const std::optional<UploadHeaderFields>& header() const { return header_; }
  // File name -> the bytes received for it, in order.
  const std::map<std::string, std::string>& files() const { return files_; }
  uint64_t received_bytes() const { return received_; }

 private:
  absl::Status Check(absl::Status status);
  absl::Status TooLarge(uint64_t bytes) const;

  const uint64_t max_bytes_;
  std::optional<UploadHeaderFields> header_;
  std::map<std::string, std::string> files_;
  uint64_t received_ = 0;  // bytes of every chunk accepted so far
  absl::Status failed_;    // the first error, returned for every message after it
};

}  // namespace loraserve::server
