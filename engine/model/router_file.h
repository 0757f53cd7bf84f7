// Reading a Polar routers file: a safetensors file marked by one string
// metadata key, with its sizes as positive integers in the metadata and F32
// weights per layer (head_routers.h and mlp_sparsity.h describe the two
// formats). One reader, so both loaders check the marker, parse sizes and
// read weights the same way, with errors that name the file.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model/safetensors_file.h"

namespace polar {

class RouterFileReader {
 public:
  // Opens `path` and checks that it has the `marker` metadata key; `kind`
  // names the format in the error for a missing key ("head-routers").
  static absl::StatusOr<RouterFileReader> Open(const std::string& path, const std::string& marker, std::string kind);

  const SafetensorsFile& file() const { return *file_; }
  // INVALID_ARGUMENT "<path>: <what>".
  absl::Status Error(absl::string_view what) const;
  // The metadata value of `key`; missing, the file is not of this kind.
  absl::StatusOr<std::string> Get(const std::string& key) const;
  // Each key's value, which must be an integer > 0, into its destination.
  absl::Status GetPositive(std::initializer_list<std::pair<const char*, int64_t*>> fields) const;
  // Tensor `name`, which must have `shape`, as F32 values. When the file
  // cannot give the tensor (absent, unreadable dtype), the error is
  // `error_prefix` followed by the reason.
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name, const std::vector<int64_t>& shape,
                                             absl::string_view error_prefix = "") const;

 private:
  RouterFileReader(std::shared_ptr<const SafetensorsFile> file, std::string path, std::string kind)
      : file_(std::move(file)), path_(std::move(path)), kind_(std::move(kind)) {}

  std::shared_ptr<const SafetensorsFile> file_;
  std::string path_;
  std::string kind_;
};

}  // namespace polar
