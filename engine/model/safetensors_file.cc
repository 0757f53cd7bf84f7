// Safetensors reader and writer.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON mapping each
// tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative
// to the data section right after the header) plus an optional
// "__metadata__" string map, then the raw little-endian tensor bytes.
//
// Every number read from the header is checked before it is used: the header
// must fit the file, each tensor's byte range must lie inside the data section,
// hold exactly product(shape) * element size bytes, and not overlap another
// tensor. Holes between tensors and trailing bytes are tolerated (harmless).
//
// Dtype policy: F32, F16 and BF16 are readable. The other dtypes of the format
// (BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F64, F8_E4M3, F8_E5M2) are
// still size-checked at open, so the file opens, but Tensor() on one of them is
// an error naming the tensor and its dtype; that way a checkpoint carrying an
// unrelated integer buffer does not fail unless that tensor is actually used.
// A dtype string the format does not define is an error at open, because its
// size cannot be checked.
#include "engine/model/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/text_file.h"
#include "nlohmann/json.hpp"

namespace polar {
namespace {

using Json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we, which
// also bounds the work a hostile header can cause.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Element size of every dtype the format defines; 0 for an unknown string.
int64_t ElementBytes(const std::string& dtype) {
  static const std::map<std::string, int64_t, std::less<>> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},     {"U32", 4},     {"F32", 4},
      {"I64", 8},  {"U64", 8}, {"F64", 8},
  };
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

// The dtypes Polar reads, by their safetensors names.
bool ReadableDType(const std::string& name, DType* dtype) {
  if (name == "F32") *dtype = DType::kF32;
  else if (name == "F16") *dtype = DType::kF16;
  else if (name == "BF16") *dtype = DType::kBF16;
  else return false;
  return true;
}

const char* SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    default: return nullptr;
  }
}

int64_t ReadableElementBytes(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    default: return 0;
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A JSON value as a non-negative integer below 2^62 (so sums and products of
// two of them can be overflow-checked in int64 arithmetic).
bool AsSize(const Json& value, uint64_t* out) {
  if (!value.is_number_integer()) return false;
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
  } else {
    const int64_t v = value.get<int64_t>();
    if (v < 0) return false;
    *out = static_cast<uint64_t>(v);
  }
  return *out < (1ull << 62);
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  std::shared_ptr<const void> mapping;
  std::span<const uint8_t> bytes;
  if (size > 0) {  // mmap of 0 bytes fails; an empty file is rejected by the parser
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
    }
    mapping = std::shared_ptr<const void>(addr, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
    bytes = std::span<const uint8_t>(static_cast<const uint8_t*>(addr), size);
  }
  ::close(fd);
  auto file = FromBuffer(bytes, path);
  if (!file.ok()) return file.status();
  // FromBuffer built a fresh object nobody else shares yet: attach the mapping.
  std::const_pointer_cast<SafetensorsFile>(*file)->mapping_ = std::move(mapping);
  return file;
}

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::FromBuffer(
    std::span<const uint8_t> bytes, std::string source) {
  const auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  if (bytes.size() < 8) {
    return error(absl::StrCat("file is ", bytes.size(), " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > bytes.size() - 8) {
    return error(absl::StrCat("header length ", header_len, " exceeds the ", bytes.size() - 8,
                              " bytes after the length field (truncated or not safetensors)"));
  }
  if (header_len > kMaxHeaderBytes) {
    return error(absl::StrCat("header length ", header_len, " exceeds the ", kMaxHeaderBytes, "-byte limit"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  const Json header = Json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return error("header is not valid JSON");
  if (!header.is_object()) return error("header is not a JSON object");

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = source;  // `error` above keeps using `source`
  file->data_ = bytes.subspan(8 + header_len);
  const uint64_t data_size = file->data_.size();

  struct Range {
    uint64_t begin, end;
    std::string name;  // a copy: flat_hash_map moves its keys on rehash
  };
  std::vector<Range> ranges;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();  // not a structured binding: lambdas capture it
    const Json& value = item.value();
    if (name == "__metadata__") {
      if (value.is_null()) continue;
      if (!value.is_object()) return error("__metadata__ is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) return error(absl::StrCat("__metadata__ value of '", key, "' is not a string"));
        file->metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    const auto tensor_error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(file->source_, ": tensor '", name, "': ", what));
    };
    if (name.empty()) return error("a tensor has an empty name");
    if (!value.is_object()) return tensor_error("header entry is not a JSON object");
    const auto dtype_it = value.find("dtype");
    const auto shape_it = value.find("shape");
    const auto offsets_it = value.find("data_offsets");
    if (dtype_it == value.end() || !dtype_it->is_string()) return tensor_error("missing string 'dtype'");
    if (shape_it == value.end() || !shape_it->is_array()) return tensor_error("missing array 'shape'");
    if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return tensor_error("'data_offsets' is not an array of two integers");
    }
    const std::string dtype_name = dtype_it->get<std::string>();
    const int64_t element_bytes = ElementBytes(dtype_name);
    if (element_bytes == 0) return tensor_error(absl::StrCat("unknown dtype '", dtype_name, "'"));

    Entry entry;
    if (!ReadableDType(dtype_name, &entry.dtype)) {
      entry.dtype = DType::kF32;  // placeholder; never exposed
      entry.unsupported_dtype = dtype_name;
    }
    int64_t elements = 1;
    for (const Json& dim : *shape_it) {
      uint64_t d = 0;
      if (!AsSize(dim, &d)) return tensor_error(absl::StrCat("shape ", shape_it->dump(), " has a bad dimension"));
      entry.shape.push_back(static_cast<int64_t>(d));
      if (__builtin_mul_overflow(elements, static_cast<int64_t>(d), &elements)) {
        return tensor_error(absl::StrCat("shape ", shape_it->dump(), " overflows"));
      }
    }
    int64_t expected_bytes = 0;
    if (__builtin_mul_overflow(elements, element_bytes, &expected_bytes)) {
      return tensor_error(absl::StrCat("shape ", ShapeString(entry.shape), " overflows"));
    }
    if (!AsSize((*offsets_it)[0], &entry.begin) || !AsSize((*offsets_it)[1], &entry.end)) {
      return tensor_error(absl::StrCat("bad data_offsets ", offsets_it->dump()));
    }
    if (entry.begin > entry.end) {
      return tensor_error(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end, "] end before they begin"));
    }
    if (entry.end > data_size) {
      return tensor_error(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end,
                                       "] run past the end of the data section (", data_size,
                                       " bytes; file truncated?)"));
    }
    if (entry.end - entry.begin != static_cast<uint64_t>(expected_bytes)) {
      return tensor_error(absl::StrCat("data_offsets [", entry.begin, ", ", entry.end, "] hold ",
                                       entry.end - entry.begin, " bytes, but ", dtype_name, " ",
                                       ShapeString(entry.shape), " needs ", expected_bytes));
    }
    auto [it, inserted] = file->entries_.emplace(name, std::move(entry));
    if (!inserted) return tensor_error("listed twice");
    if (it->second.end > it->second.begin) ranges.push_back({it->second.begin, it->second.end, name});
  }

  // Two tensors sharing bytes would alias silently: reject.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.name < b.name;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return error(absl::StrCat("tensor '", ranges[i].name, "' (bytes ", ranges[i].begin, "..", ranges[i].end,
                                ") overlaps tensor '", ranges[i - 1].name, "' (bytes ", ranges[i - 1].begin,
                                "..", ranges[i - 1].end, ")"));
    }
  }
  file->self_ = file;
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

std::vector<std::string> SafetensorsFile::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<HostTensor> SafetensorsFile::Tensor(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return absl::NotFoundError(absl::StrCat(source_, ": no tensor '", name, "'"));
  const Entry& entry = it->second;
  if (!entry.unsupported_dtype.empty()) {
    return absl::UnimplementedError(absl::StrCat(source_, ": tensor '", name, "' has dtype ",
                                                 entry.unsupported_dtype,
                                                 "; Polar reads F32, F16 and BF16 safetensors"));
  }
  HostTensor tensor;
  tensor.name = name;
  tensor.dtype = entry.dtype;
  tensor.shape = entry.shape;
  tensor.nbytes = static_cast<int64_t>(entry.end - entry.begin);
  const uint8_t* src = data_.data() + entry.begin;
  const auto element_bytes = static_cast<uintptr_t>(ReadableElementBytes(entry.dtype));
  if (tensor.nbytes > 0 && reinterpret_cast<uintptr_t>(src) % element_bytes != 0) {
    // A writer that does not pad its header leaves the data misaligned; copy
    // such a tensor so every consumer may read it as a typed array.
    auto copy = std::make_shared<std::vector<float>>((tensor.nbytes + 3) / 4);
    std::memcpy(copy->data(), src, tensor.nbytes);
    tensor.data = reinterpret_cast<const uint8_t*>(copy->data());
    tensor.keep_alive = std::move(copy);
  } else {
    tensor.data = tensor.nbytes > 0 ? src : nullptr;
    tensor.keep_alive = self_.lock();
  }
  return tensor;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<HostTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  header["__metadata__"] = {{"format", "pt"}};  // transformers checks this key
  for (const auto& [key, value] : metadata) header["__metadata__"][key] = value;
  uint64_t offset = 0;
  for (const HostTensor& t : tensors) {
    const auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": cannot write tensor '", t.name, "': ", what));
    };
    const char* dtype = SafetensorsDTypeName(t.dtype);
    if (dtype == nullptr) {
      return error(absl::StrCat("dtype ", std::string(DTypeName(t.dtype)), " (safetensors holds F32, F16, BF16 here)"));
    }
    if (t.name.empty() || t.name == "__metadata__") return error("reserved or empty name");
    if (header.contains(t.name)) return error("name given twice");
    const int64_t elements = t.NumElements();
    int64_t expected_bytes = 0;
    if (elements < 0 || __builtin_mul_overflow(elements, ReadableElementBytes(t.dtype), &expected_bytes)) {
      return error(absl::StrCat("bad shape ", ShapeString(t.shape)));
    }
    if (t.nbytes != expected_bytes) {
      return error(absl::StrCat("holds ", t.nbytes, " bytes, ", dtype, " ", ShapeString(t.shape), " needs ",
                                expected_bytes));
    }
    if (t.nbytes > 0 && t.data == nullptr) return error("has no data");
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {  // a tensor name that is not valid UTF-8
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot encode the header: ", e.what()));
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the
  // reference writer does (readers may then map tensors in place).
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string tmp_path = path + ".tmp";
  std::FILE* out = std::fopen(tmp_path.c_str(), "wb");
  if (out == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(tmp_path, ": cannot create: ", std::strerror(errno)));
  }
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
  bool ok = std::fwrite(length, 1, 8, out) == 8 && std::fwrite(text.data(), 1, text.size(), out) == text.size();
  for (const HostTensor& t : tensors) {
    if (!ok) break;
    if (t.nbytes > 0) ok = std::fwrite(t.data, 1, t.nbytes, out) == static_cast<size_t>(t.nbytes);
  }
  const int write_errno = errno;
  ok = (std::fclose(out) == 0) && ok;
  if (!ok) {
    std::remove(tmp_path.c_str());
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(write_errno)));
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp_path.c_str());
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot rename into place: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::flat_hash_map<std::string, HostTensor>> ReadSafetensorsDir(const std::string& dir) {
  absl::flat_hash_map<std::string, HostTensor> tensors;
  // Adds every tensor of one file; a name seen in an earlier shard is an error.
  const auto add_all = [&](const SafetensorsFile& file) -> absl::Status {
    for (const std::string& name : file.TensorNames()) {
      auto tensor = file.Tensor(name);
      if (!tensor.ok()) return tensor.status();
      if (!tensors.emplace(name, *std::move(tensor)).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(file.source(), ": tensor '", name, "' also appears in another shard"));
      }
    }
    return absl::OkStatus();
  };

  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  const std::string single_path = JoinPath(dir, "model.safetensors");
  std::error_code ec;
  if (std::filesystem::exists(index_path, ec)) {
    auto text = ReadTextFile(index_path);
    if (!text.ok()) return text.status();
    const Json index = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
    }
    const auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": no 'weight_map' object"));
    }
    // shard file -> tensors the index puts there (ordered, for stable errors).
    std::map<std::string, std::vector<std::string>> shards;
    for (const auto& [name, shard] : map_it->items()) {
      if (!shard.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry of tensor '", name, "' is not a file name"));
      }
      const std::string shard_name = shard.get<std::string>();
      // Shards live next to the index; refuse names that would leave the directory.
      if (shard_name.empty() || shard_name == "." || shard_name == ".." ||
          shard_name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": tensor '", name, "' maps to bad shard name '", shard_name, "'"));
      }
      shards[shard_name].push_back(name);
    }
    if (shards.empty()) return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map is empty"));
    for (const auto& [shard_name, names] : shards) {
      const std::string shard_path = JoinPath(dir, shard_name);
      auto file = SafetensorsFile::Open(shard_path);
      if (!file.ok()) {
        return absl::Status(file.status().code(),
                            absl::StrCat("shard '", shard_name, "' (listed in ", index_path, " for tensor '",
                                         names.front(), "'): ", file.status().message()));
      }
      const std::vector<std::string> held = (*file)->TensorNames();  // sorted
      for (const std::string& name : names) {
        if (!std::binary_search(held.begin(), held.end(), name)) {
          return absl::NotFoundError(absl::StrCat(index_path, " puts tensor '", name, "' in shard '", shard_name,
                                                  "', but ", shard_path, " does not hold it"));
        }
      }
      if (auto status = add_all(**file); !status.ok()) return status;
    }
    return tensors;
  }
  if (std::filesystem::exists(single_path, ec)) {
    auto file = SafetensorsFile::Open(single_path);
    if (!file.ok()) return file.status();
    if (auto status = add_all(**file); !status.ok()) return status;
    return tensors;
  }
  return absl::NotFoundError(
      absl::StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json is there"));
}

}  // namespace polar
