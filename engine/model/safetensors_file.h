// Reader and writer for the safetensors format (8-byte header length, JSON
// header with dtype/shape/data_offsets per tensor, raw little-endian data),
// and for sharded checkpoints described by model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/host_tensor.h"

namespace polar {

class SafetensorsFile {
 public:
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::string& path);
  // `bytes` must outlive the result; `source` names the input in errors.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> FromBuffer(
      std::span<const uint8_t> bytes, std::string source);

  const std::string& source() const { return source_; }
  std::vector<std::string> TensorNames() const;  // sorted
  // Views the tensor (F32, F16, BF16 supported; others are an error naming the tensor).
  absl::StatusOr<HostTensor> Tensor(const std::string& name) const;
  const absl::flat_hash_map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;  // byte range inside the data section
    // Non-empty when the tensor is stored in a dtype Polar cannot read (I8,
    // F64, ...): the file still opens, and Tensor() names it in its error.
    std::string unsupported_dtype;
  };
  SafetensorsFile() = default;
  std::string source_;
  absl::flat_hash_map<std::string, Entry> entries_;
  absl::flat_hash_map<std::string, std::string> metadata_;
  std::span<const uint8_t> data_;
  std::shared_ptr<const void> mapping_;
  std::weak_ptr<const SafetensorsFile> self_;
};

// Writes tensors (F32/F16/BF16) to one safetensors file, with string
// `metadata` in the header's __metadata__ (besides "format": "pt").
absl::Status WriteSafetensors(const std::string& path, const std::vector<HostTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// All tensors of a Hugging Face model directory: model.safetensors, or the
// shards listed by model.safetensors.index.json. Errors name the shard.
absl::StatusOr<absl::flat_hash_map<std::string, HostTensor>> ReadSafetensorsDir(const std::string& dir);

}  // namespace polar
