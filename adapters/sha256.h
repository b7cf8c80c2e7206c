// SHA-256 (OpenSSL EVP) for adapter content identity: the store records a digest per file and
// uploads may name the digest they expect. Digests are lowercase hex.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loraserve {

// Incremental hasher, for streaming copies that hash while they write.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  // Finishes the digest; the hasher must not be used afterwards.
  std::string HexDigest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string Sha256Hex(std::string_view bytes);
// Hashes a file in fixed-size chunks (adapters can be hundreds of MiB).
absl::StatusOr<std::string> Sha256File(const std::string& path);
// True for 64 lowercase or uppercase hex digits.
bool IsSha256Hex(std::string_view text);

}  // namespace loraserve
