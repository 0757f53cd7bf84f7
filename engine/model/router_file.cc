// See router_file.h.
#include "engine/model/router_file.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/model/host_tensor.h"

namespace polar {

absl::StatusOr<RouterFileReader> RouterFileReader::Open(const std::string& path, const std::string& marker,
                                                        std::string kind) {
  absl::StatusOr<std::shared_ptr<const SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  RouterFileReader reader(*std::move(file), path, std::move(kind));
  if (absl::StatusOr<std::string> found = reader.Get(marker); !found.ok()) return found.status();
  return reader;
}

absl::Status RouterFileReader::Error(absl::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat(path_, ": ", what));
}

absl::StatusOr<std::string> RouterFileReader::Get(const std::string& key) const {
  const auto& meta = file_->metadata();
  auto it = meta.find(key);
  if (it == meta.end()) return Error(absl::StrCat("not a Polar ", kind_, " file (no \"", key, "\" metadata)"));
  return it->second;
}

absl::Status RouterFileReader::GetPositive(std::initializer_list<std::pair<const char*, int64_t*>> fields) const {
  for (auto [key, dst] : fields) {
    absl::StatusOr<std::string> text = Get(key);
    if (!text.ok()) return text.status();
    if (!absl::SimpleAtoi(*text, dst) || *dst <= 0) return Error(absl::StrCat(key, " \"", *text, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> RouterFileReader::ReadF32(const std::string& name,
                                                             const std::vector<int64_t>& shape,
                                                             absl::string_view error_prefix) const {
  absl::StatusOr<HostTensor> t = file_->Tensor(name);
  if (!t.ok()) return Error(absl::StrCat(error_prefix, t.status().message()));
  if (t->shape != shape) return Error(absl::StrCat(name, " has shape ", t->ShapeString()));
  return ToF32(*t);
}

}  // namespace polar
