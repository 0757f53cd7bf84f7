// Reader for GGUF v2/v3 files (llama.cpp's model format): header, typed
// metadata, tensor table, alignment and memory-mapped tensor data. Every size
// and offset read from the file is checked before use, so a truncated or
// corrupt file yields a Status naming the file and the key or tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/model/host_tensor.h"

namespace polar {

// One metadata value. Arrays keep their element kind.
using GgufValue = std::variant<uint64_t, int64_t, double, bool, std::string,
                               std::vector<int64_t>,      // any integer array
                               std::vector<double>,       // any float array
                               std::vector<std::string>,  // string array
                               std::vector<bool>>;

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<int64_t> ne;  // GGML order: ne[0] is the contiguous dimension
  uint64_t offset = 0;      // relative to the start of the data section
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Maps the file read-only.
  static absl::StatusOr<std::shared_ptr<const GgufFile>> Open(const std::string& path);
  // Parses bytes already in memory (used by tests and the fuzzer); `bytes` must
  // outlive the result. `source` names the input in errors.
  static absl::StatusOr<std::shared_ptr<const GgufFile>> FromBuffer(std::span<const uint8_t> bytes,
                                                                    std::string source);

  const std::string& source() const { return source_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  bool Has(std::string_view key) const;
  const GgufValue* Find(std::string_view key) const;
  // Typed getters; errors name the file and the key (missing or wrong kind).
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;    // any integer kind
  absl::StatusOr<double> GetFloat(std::string_view key) const;   // float or integer
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  absl::StatusOr<std::vector<double>> GetFloatArray(std::string_view key) const;
  const std::vector<std::string>& metadata_keys() const { return keys_; }  // file order

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;
  // A view of one tensor, shape in outermost-first order (reversed ne); it
  // keeps this file alive.
  absl::StatusOr<HostTensor> Tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  // Shared by Open and FromBuffer: parses `bytes`, which `mapping` (may be
  // null) keeps alive.
  static absl::StatusOr<std::shared_ptr<const GgufFile>> Parse(std::span<const uint8_t> bytes,
                                                               std::string source,
                                                               std::shared_ptr<const void> mapping);
  std::string source_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::string> keys_;
  absl::flat_hash_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
  std::span<const uint8_t> bytes_;       // the whole file
  std::span<const uint8_t> data_;        // the data section
  std::shared_ptr<const void> mapping_;  // owns `bytes_` when opened from a path
  std::weak_ptr<const GgufFile> self_;   // lets Tensor() keep the file alive
};

}  // namespace polar
