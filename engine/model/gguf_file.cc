// GGUF v2/v3 reader (see gguf_file.h). Layout, all little-endian:
//
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x       (string key | u32 value_type | value)
//   n_tensors x  (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset)
//   padding to `general.alignment` (default 32)
//   data section: each tensor at data_start + offset (offset a multiple of the alignment)
//
// where a string is u64 length + bytes and an array value is u32 element_type +
// u64 count + elements. The file is untrusted: every read goes through a
// bounds-checked cursor, counts are limited by the bytes that remain before
// anything is allocated, and element counts and byte sizes are computed with
// overflow checks, so no header can make the reader crash, read out of bounds
// or allocate far more than the file's size.
#include "engine/model/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace polar {
namespace {

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

// Debian's abseil keeps its own string_view type (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0), so std::string_view must be converted before StrCat or a map lookup.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
// Larger alignments make no sense for tensor data and would only let a
// corrupt header push the data section start past any file.
constexpr uint64_t kMaxAlignment = uint64_t{1} << 24;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

// Metadata value types (GGUF spec).
enum ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// Smallest encoded size of one element of each type; bounds array counts by
// the bytes left so that a forged count cannot trigger a huge allocation.
uint64_t MinEncodedSize(uint32_t type) {
  switch (type) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    case kString: return 8;  // the length prefix
    default: return 0;
  }
}

// Smallest metadata entry: empty key (8) + type (4) + a 1-byte value.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
// Smallest tensor entry: empty name (8) + n_dims (4) + type (4) + offset (8).
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;

// A bounds-checked little-endian cursor over the file. Reads fail (returning
// false and leaving the output untouched) instead of running past the end;
// Error() then describes where the input stopped.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> bytes) : bytes_(bytes) {}

  uint64_t position() const { return position_; }
  uint64_t remaining() const { return bytes_.size() - position_; }

  bool Bytes(void* out, uint64_t n) {
    if (n > remaining()) {
      wanted_ = n;
      return false;
    }
    if (n > 0) std::memcpy(out, bytes_.data() + position_, n);
    position_ += n;
    return true;
  }
  template <typename T>
  bool Scalar(T* out) {
    return Bytes(out, sizeof(T));
  }
  bool String(std::string* out) {
    uint64_t length = 0;
    const uint64_t start = position_;
    if (!Scalar(&length)) return false;
    if (length > remaining()) {
      position_ = start;
      wanted_ = 8 + length;
      return false;
    }
    out->assign(reinterpret_cast<const char*>(bytes_.data() + position_), length);
    position_ += length;
    return true;
  }

  // Why the last read failed.
  std::string Error() const {
    return absl::StrCat("truncated: need ", wanted_, " bytes at offset ", position_, ", the input has ",
                        bytes_.size());
  }

 private:
  std::span<const uint8_t> bytes_;
  uint64_t position_ = 0;
  uint64_t wanted_ = 0;
};

const char* ValueTypeName(uint32_t type) {
  static constexpr const char* kNames[] = {"uint8", "int8",   "uint16", "int16", "uint32", "int32", "float32",
                                           "bool",  "string", "array",  "uint64", "int64", "float64"};
  return type < std::size(kNames) ? kNames[type] : "invalid";
}

// What a GgufValue holds, for error messages.
const char* KindName(const GgufValue& value) {
  static constexpr const char* kNames[] = {"unsigned integer", "integer",      "float",
                                           "bool",             "string",       "integer array",
                                           "float array",      "string array", "bool array"};
  return kNames[value.index()];
}

// Decodes one scalar of `type` (not string or array) into a GgufValue.
bool ReadScalar(Cursor& cursor, uint32_t type, GgufValue* out, std::string* error) {
  switch (type) {
    case kU8: { uint8_t v; if (!cursor.Scalar(&v)) break; *out = uint64_t{v}; return true; }
    case kU16: { uint16_t v; if (!cursor.Scalar(&v)) break; *out = uint64_t{v}; return true; }
    case kU32: { uint32_t v; if (!cursor.Scalar(&v)) break; *out = uint64_t{v}; return true; }
    case kU64: { uint64_t v; if (!cursor.Scalar(&v)) break; *out = v; return true; }
    case kI8: { int8_t v; if (!cursor.Scalar(&v)) break; *out = int64_t{v}; return true; }
    case kI16: { int16_t v; if (!cursor.Scalar(&v)) break; *out = int64_t{v}; return true; }
    case kI32: { int32_t v; if (!cursor.Scalar(&v)) break; *out = int64_t{v}; return true; }
    case kI64: { int64_t v; if (!cursor.Scalar(&v)) break; *out = v; return true; }
    case kF32: { float v; if (!cursor.Scalar(&v)) break; *out = double{v}; return true; }
    case kF64: { double v; if (!cursor.Scalar(&v)) break; *out = v; return true; }
    case kBool: {
      uint8_t v;
      if (!cursor.Scalar(&v)) break;
      if (v > 1) {
        *error = absl::StrCat("bool value ", v, " is neither 0 nor 1");
        return false;
      }
      *out = v == 1;
      return true;
    }
    default:
      *error = absl::StrCat("invalid value type ", type);
      return false;
  }
  *error = cursor.Error();
  return false;
}

// Reads `count` elements of `element_type` into the array kind of GgufValue
// that holds them. The caller has already bounded `count` by the bytes left.
bool ReadArray(Cursor& cursor, uint32_t element_type, uint64_t count, GgufValue* out, std::string* error) {
  switch (element_type) {
    case kString: {
      std::vector<std::string> values(count);
      for (uint64_t i = 0; i < count; ++i) {
        if (!cursor.String(&values[i])) {
          *error = absl::StrCat("string element ", i, ": ", cursor.Error());
          return false;
        }
      }
      *out = std::move(values);
      return true;
    }
    case kBool: {
      std::vector<bool> values(count);
      for (uint64_t i = 0; i < count; ++i) {
        GgufValue element;
        if (!ReadScalar(cursor, element_type, &element, error)) {
          *error = absl::StrCat("element ", i, ": ", *error);
          return false;
        }
        values[i] = std::get<bool>(element);
      }
      *out = std::move(values);
      return true;
    }
    case kF32:
    case kF64: {
      std::vector<double> values(count);
      for (uint64_t i = 0; i < count; ++i) {
        GgufValue element;
        if (!ReadScalar(cursor, element_type, &element, error)) {
          *error = absl::StrCat("element ", i, ": ", *error);
          return false;
        }
        values[i] = std::get<double>(element);
      }
      *out = std::move(values);
      return true;
    }
    case kU8: case kI8: case kU16: case kI16: case kU32: case kI32: case kU64: case kI64: {
      std::vector<int64_t> values(count);
      for (uint64_t i = 0; i < count; ++i) {
        GgufValue element;
        if (!ReadScalar(cursor, element_type, &element, error)) {
          *error = absl::StrCat("element ", i, ": ", *error);
          return false;
        }
        if (const auto* u = std::get_if<uint64_t>(&element)) {
          if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            *error = absl::StrCat("element ", i, ": uint64 value ", *u, " does not fit in int64");
            return false;
          }
          values[i] = static_cast<int64_t>(*u);
        } else {
          values[i] = std::get<int64_t>(element);
        }
      }
      *out = std::move(values);
      return true;
    }
    case kArray:
      *error = "nested arrays are not supported";
      return false;
    default:
      *error = absl::StrCat("invalid array element type ", element_type);
      return false;
  }
}

// Reads one metadata value of `type`; on failure `error` says why.
bool ReadValue(Cursor& cursor, uint32_t type, GgufValue* out, std::string* error) {
  if (type == kString) {
    std::string value;
    if (!cursor.String(&value)) {
      *error = cursor.Error();
      return false;
    }
    *out = std::move(value);
    return true;
  }
  if (type != kArray) return ReadScalar(cursor, type, out, error);

  uint32_t element_type = 0;
  uint64_t count = 0;
  if (!cursor.Scalar(&element_type) || !cursor.Scalar(&count)) {
    *error = cursor.Error();
    return false;
  }
  if (element_type == kArray) {
    *error = "nested arrays are not supported";
    return false;
  }
  const uint64_t min_size = MinEncodedSize(element_type);
  if (min_size == 0) {
    *error = absl::StrCat("invalid array element type ", element_type);
    return false;
  }
  if (count > cursor.remaining() / min_size) {
    *error = absl::StrCat("array of ", count, " ", ValueTypeName(element_type), " elements at offset ",
                          cursor.position(), " does not fit in the ", cursor.remaining(), " bytes left");
    return false;
  }
  return ReadArray(cursor, element_type, count, out, error);
}

// Product of non-negative `factors` into *out; false when the product of the
// non-zero factors overflows int64, so that the verdict does not depend on the
// order (HostTensor::NumElements multiplies the dimensions the other way round).
bool CheckedProduct(std::span<const int64_t> factors, int64_t* out) {
  int64_t product = 1;
  bool empty = false;
  for (int64_t factor : factors) {
    if (factor == 0) {
      empty = true;
    } else if (__builtin_mul_overflow(product, factor, &product)) {
      return false;
    }
  }
  *out = empty ? 0 : product;
  return true;
}

// Owns a read-only mapping of a whole file.
struct FileMapping {
  void* address = nullptr;
  size_t size = 0;
  ~FileMapping() {
    if (address != nullptr) munmap(address, size);
  }
};

}  // namespace

absl::StatusOr<std::shared_ptr<const GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    const std::string message = absl::StrCat(path, ": cannot open: ", std::strerror(error));
    return error == ENOENT ? absl::NotFoundError(message) : absl::FailedPreconditionError(message);
  }
  struct stat info;
  if (fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": cannot stat: ", std::strerror(error)));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  if (info.st_size == 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty file, not a GGUF"));
  }
  auto mapping = std::make_shared<FileMapping>();
  mapping->size = static_cast<size_t>(info.st_size);
  void* address = mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int error = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (address == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot map: ", std::strerror(error)));
  }
  mapping->address = address;
  std::span<const uint8_t> bytes(static_cast<const uint8_t*>(address), mapping->size);
  return Parse(bytes, path, std::move(mapping));
}

absl::StatusOr<std::shared_ptr<const GgufFile>> GgufFile::FromBuffer(std::span<const uint8_t> bytes,
                                                                     std::string source) {
  return Parse(bytes, std::move(source), nullptr);
}

absl::StatusOr<std::shared_ptr<const GgufFile>> GgufFile::Parse(std::span<const uint8_t> bytes,
                                                                std::string source,
                                                                std::shared_ptr<const void> mapping) {
  std::shared_ptr<GgufFile> file(new GgufFile());
  file->source_ = std::move(source);
  file->bytes_ = bytes;
  file->mapping_ = std::move(mapping);
  const std::string& src = file->source_;
  const auto invalid = [&src](std::string_view where, std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", Sv(where), ": ", Sv(what)));
  };
  Cursor cursor(bytes);

  // Header.
  uint32_t magic = 0;
  if (!cursor.Scalar(&magic)) return invalid("header", cursor.Error());
  if (magic != kGgufMagic) {
    return invalid("header", absl::StrCat("not a GGUF file (magic 0x", absl::Hex(magic, absl::kZeroPad8),
                                          ", want 0x", absl::Hex(kGgufMagic, absl::kZeroPad8), ")"));
  }
  if (!cursor.Scalar(&file->version_)) return invalid("header", cursor.Error());
  if (file->version_ == 1) {
    return absl::UnimplementedError(absl::StrCat(src, ": header: GGUF v1 is not supported (only v2 and v3)"));
  }
  if (file->version_ != 2 && file->version_ != 3) {
    const bool byte_swapped = (file->version_ & 0xffff) == 0 && (file->version_ >> 24) <= 3;
    return absl::UnimplementedError(absl::StrCat(
        src, ": header: unsupported GGUF version ", file->version_,
        byte_swapped ? " (a big-endian GGUF? only little-endian files are supported)" : " (want 2 or 3)"));
  }
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  if (!cursor.Scalar(&n_tensors) || !cursor.Scalar(&n_kv)) return invalid("header", cursor.Error());
  if (n_kv > cursor.remaining() / kMinKvBytes) {
    return invalid("header", absl::StrCat(n_kv, " metadata entries cannot fit in ", cursor.remaining(), " bytes"));
  }
  if (n_tensors > cursor.remaining() / kMinTensorInfoBytes) {
    return invalid("header",
                   absl::StrCat(n_tensors, " tensor entries cannot fit in ", cursor.remaining(), " bytes"));
  }

  // Metadata.
  file->keys_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    if (!cursor.String(&key)) return invalid(absl::StrCat("metadata entry ", i, " key"), cursor.Error());
    const std::string where = absl::StrCat("metadata key '", key, "'");
    uint32_t type = 0;
    if (!cursor.Scalar(&type)) return invalid(where, cursor.Error());
    GgufValue value;
    std::string error;
    if (!ReadValue(cursor, type, &value, &error)) {
      return invalid(where, absl::StrCat(ValueTypeName(type), " value: ", error));
    }
    if (file->metadata_.contains(key)) return invalid(where, "duplicate key");
    file->metadata_.emplace(key, std::move(value));
    file->keys_.push_back(std::move(key));
  }

  if (const GgufValue* value = file->Find("general.alignment")) {
    const auto* u = std::get_if<uint64_t>(value);
    const auto* s = std::get_if<int64_t>(value);
    if (u == nullptr && s == nullptr) {
      return invalid("metadata key 'general.alignment'", absl::StrCat("is a ", KindName(*value), ", want an integer"));
    }
    const uint64_t alignment = u != nullptr ? *u : static_cast<uint64_t>(*s);
    if ((s != nullptr && *s <= 0) || !std::has_single_bit(alignment) || alignment > kMaxAlignment) {
      return invalid("metadata key 'general.alignment'",
                     absl::StrCat("alignment ", u != nullptr ? absl::StrCat(*u) : absl::StrCat(*s),
                                  " is not a power of two in [1, ", kMaxAlignment, "]"));
    }
    file->alignment_ = alignment;
  } else {
    file->alignment_ = kDefaultAlignment;
  }

  // Tensor table.
  file->tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo info;
    if (!cursor.String(&info.name)) return invalid(absl::StrCat("tensor entry ", i, " name"), cursor.Error());
    const std::string where = absl::StrCat("tensor '", info.name, "'");
    uint32_t n_dims = 0;
    if (!cursor.Scalar(&n_dims)) return invalid(where, cursor.Error());
    if (n_dims > kMaxDims) return invalid(where, absl::StrCat(n_dims, " dimensions, at most ", kMaxDims));
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      if (!cursor.Scalar(&ne)) return invalid(where, cursor.Error());
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return invalid(where, absl::StrCat("dimension ", d, " has size ", ne));
      }
      info.ne.push_back(static_cast<int64_t>(ne));
    }
    if (!cursor.Scalar(&info.ggml_type) || !cursor.Scalar(&info.offset)) return invalid(where, cursor.Error());
    if (!IsSupportedDType(info.ggml_type)) {
      return absl::UnimplementedError(
          absl::StrCat(src, ": ", where, ": unsupported ggml type id ", info.ggml_type));
    }
    const auto dtype = static_cast<DType>(info.ggml_type);
    int64_t elements = 0;
    if (!CheckedProduct(info.ne, &elements)) return invalid(where, "element count overflows int64");
    const int64_t row_length = info.ne.empty() ? 1 : info.ne[0];
    const int64_t block_elements = DTypeBlockElements(dtype);
    if (row_length % block_elements != 0) {
      return invalid(where, absl::StrCat("row length ", row_length, " is not a multiple of the ", Sv(DTypeName(dtype)),
                                         " block size ", block_elements));
    }
    int64_t nbytes = 0;
    if (__builtin_mul_overflow(elements / block_elements, DTypeBlockBytes(dtype), &nbytes)) {
      return invalid(where, "byte size overflows int64");
    }
    info.nbytes = static_cast<uint64_t>(nbytes);
    if (file->tensor_index_.contains(info.name)) return invalid(where, "duplicate tensor name");
    file->tensor_index_.emplace(info.name, file->tensors_.size());
    file->tensors_.push_back(std::move(info));
  }

  // Data section: starts at the first aligned offset after the tensor table.
  // A file without tensor data may end before it.
  const uint64_t table_end = cursor.position();
  const uint64_t data_start = (table_end + file->alignment_ - 1) / file->alignment_ * file->alignment_;
  file->data_ = data_start < bytes.size() ? bytes.subspan(data_start) : std::span<const uint8_t>();
  const uint64_t data_size = file->data_.size();

  std::vector<std::pair<uint64_t, uint64_t>> extents;  // (offset, end) of non-empty tensors
  extents.reserve(file->tensors_.size());
  for (const GgufTensorInfo& info : file->tensors_) {
    const std::string where = absl::StrCat("tensor '", info.name, "'");
    if (info.offset % file->alignment_ != 0) {
      return invalid(where, absl::StrCat("data offset ", info.offset, " is not a multiple of the alignment ",
                                         file->alignment_));
    }
    if (info.offset > data_size || info.nbytes > data_size - info.offset) {
      return invalid(where, absl::StrCat("data [", info.offset, ", +", info.nbytes,
                                         ") lies outside the data section of ", data_size, " bytes (file offset ",
                                         data_start, ")"));
    }
    if (info.nbytes > 0) extents.emplace_back(info.offset, info.offset + info.nbytes);
  }
  std::sort(extents.begin(), extents.end());
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i].first < extents[i - 1].second) {
      // Name both tensors: find them by their offsets.
      std::string first, second;
      for (const GgufTensorInfo& info : file->tensors_) {
        if (info.nbytes == 0) continue;
        if (info.offset == extents[i - 1].first && first.empty()) {
          first = info.name;
        } else if (info.offset == extents[i].first && second.empty()) {
          second = info.name;
        }
      }
      return invalid(absl::StrCat("tensor '", second, "'"),
                     absl::StrCat("data at offset ", extents[i].first, " overlaps tensor '", first, "'"));
    }
  }

  file->self_ = file;
  return std::shared_ptr<const GgufFile>(std::move(file));
}

bool GgufFile::Has(std::string_view key) const { return metadata_.contains(Sv(key)); }

const GgufValue* GgufFile::Find(std::string_view key) const {
  const auto it = metadata_.find(Sv(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

absl::Status MissingKey(const std::string& source, std::string_view key) {
  return absl::NotFoundError(absl::StrCat(source, ": metadata key '", Sv(key), "' is missing"));
}

absl::Status WrongKind(const std::string& source, std::string_view key, const GgufValue& value,
                       std::string_view want) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": metadata key '", Sv(key), "' is a ", KindName(value), ", want ", Sv(want)));
}

}  // namespace

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* s = std::get_if<int64_t>(value)) return *s;
  if (const auto* u = std::get_if<uint64_t>(value)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::OutOfRangeError(
          absl::StrCat(source_, ": metadata key '", Sv(key), "': value ", *u, " does not fit in int64"));
    }
    return static_cast<int64_t>(*u);
  }
  return WrongKind(source_, key, *value, "an integer");
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* f = std::get_if<double>(value)) return *f;
  if (const auto* s = std::get_if<int64_t>(value)) return static_cast<double>(*s);
  if (const auto* u = std::get_if<uint64_t>(value)) return static_cast<double>(*u);
  return WrongKind(source_, key, *value, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* b = std::get_if<bool>(value)) return *b;
  return WrongKind(source_, key, *value, "a bool");
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* s = std::get_if<std::string>(value)) return *s;
  return WrongKind(source_, key, *value, "a string");
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* a = std::get_if<std::vector<std::string>>(value)) return *a;
  return WrongKind(source_, key, *value, "a string array");
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* a = std::get_if<std::vector<int64_t>>(value)) return *a;
  return WrongKind(source_, key, *value, "an integer array");
}

absl::StatusOr<std::vector<double>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* value = Find(key);
  if (value == nullptr) return MissingKey(source_, key);
  if (const auto* a = std::get_if<std::vector<double>>(value)) return *a;
  if (const auto* a = std::get_if<std::vector<int64_t>>(value)) return std::vector<double>(a->begin(), a->end());
  return WrongKind(source_, key, *value, "a number array");
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  const auto it = tensor_index_.find(Sv(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<HostTensor> GgufFile::Tensor(std::string_view name) const {
  const GgufTensorInfo* info = FindTensor(name);
  if (info == nullptr) return absl::NotFoundError(absl::StrCat(source_, ": no tensor named '", Sv(name), "'"));
  HostTensor tensor;
  tensor.name = info->name;
  tensor.dtype = static_cast<DType>(info->ggml_type);
  tensor.shape.assign(info->ne.rbegin(), info->ne.rend());
  // Offsets and sizes were checked against the data section when parsing.
  tensor.data = data_.data() + info->offset;
  tensor.nbytes = static_cast<int64_t>(info->nbytes);
  tensor.keep_alive = self_.lock();
  return tensor;
}

}  // namespace polar
