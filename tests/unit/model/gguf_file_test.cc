// Tests of the GGUF reader, HostTensor and DType helpers.
//
// - The real default model is read and compared with python gguf's view of it
//   (tests/data/gguf/default_model.txt, written by
//   tests/reference/make_dequant_goldens.py): header, every metadata key in
//   order, the whole tensor table, dequantized rows and whole-tensor sums.
// - Small synthetic files, written in-test by GgufBuilder, cover every value
//   kind and every corruption path: truncation at each byte, bad magic and
//   versions, bad alignment, tensors out of bounds / misaligned / overlapping,
//   unsupported types, duplicates, forged counts and sizes.
#include "engine/model/gguf_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/dtype.h"
#include "engine/model/host_tensor.h"
#include "kernels/cpu/dequantize.h"

namespace polar {
namespace {

using ::testing::HasSubstr;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// GGUF metadata value types.
enum : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6,
  kBool = 7, kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Little-endian byte appender.
struct Bytes {
  std::vector<uint8_t> v;
  template <typename T>
  Bytes& Put(T value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    v.insert(v.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    v.insert(v.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& Raw(const std::vector<uint8_t>& raw) {
    v.insert(v.end(), raw.begin(), raw.end());
    return *this;
  }
};

struct TensorSpec {
  TensorSpec(std::string name, uint32_t type, std::vector<uint64_t> ne, std::vector<uint8_t> data,
             std::optional<uint64_t> offset = std::nullopt)
      : name(std::move(name)), type(type), ne(std::move(ne)), data(std::move(data)), offset(offset) {}
  std::string name;
  uint32_t type = 0;
  std::vector<uint64_t> ne;
  std::vector<uint8_t> data;
  std::optional<uint64_t> offset;  // replaces the computed offset in the table
};

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Writes small GGUF files, valid or deliberately broken.
class GgufBuilder {
 public:
  uint32_t magic = 0x46554747;
  uint32_t version = 3;
  uint64_t alignment = 32;  // used for the layout; add general.alignment to declare it
  std::optional<uint64_t> n_kv;       // forged counts
  std::optional<uint64_t> n_tensors;

  template <typename T>
  GgufBuilder& Kv(const std::string& key, uint32_t type, T value) {
    Bytes b;
    b.Str(key).Put<uint32_t>(type).Put(value);
    kvs_.push_back(b.v);
    return *this;
  }
  GgufBuilder& KvString(const std::string& key, const std::string& value) {
    Bytes b;
    b.Str(key).Put<uint32_t>(kString).Str(value);
    kvs_.push_back(b.v);
    return *this;
  }
  template <typename T>
  GgufBuilder& KvArray(const std::string& key, uint32_t element_type, const std::vector<T>& values) {
    Bytes b;
    b.Str(key).Put<uint32_t>(kArray).Put<uint32_t>(element_type).Put<uint64_t>(values.size());
    for (const T& value : values) b.Put(value);
    kvs_.push_back(b.v);
    return *this;
  }
  GgufBuilder& KvStringArray(const std::string& key, const std::vector<std::string>& values) {
    Bytes b;
    b.Str(key).Put<uint32_t>(kArray).Put<uint32_t>(kString).Put<uint64_t>(values.size());
    for (const std::string& value : values) b.Str(value);
    kvs_.push_back(b.v);
    return *this;
  }
  // Key, type and value bytes exactly as given.
  GgufBuilder& KvRaw(const std::vector<uint8_t>& entry) {
    kvs_.push_back(entry);
    return *this;
  }
  GgufBuilder& Tensor(TensorSpec spec) {
    tensors_.push_back(std::move(spec));
    return *this;
  }

  std::vector<uint8_t> Build() const {
    Bytes out;
    out.Put(magic).Put(version);
    out.Put<uint64_t>(n_tensors.value_or(tensors_.size())).Put<uint64_t>(n_kv.value_or(kvs_.size()));
    for (const auto& kv : kvs_) out.Raw(kv);
    std::vector<uint64_t> positions;
    uint64_t next = 0;
    for (const TensorSpec& t : tensors_) {
      next = AlignUp(next, alignment);
      positions.push_back(next);
      next += t.data.size();
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorSpec& t = tensors_[i];
      out.Str(t.name).Put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t ne : t.ne) out.Put(ne);
      out.Put(t.type).Put<uint64_t>(t.offset.value_or(positions[i]));
    }
    if (!tensors_.empty()) {
      out.v.resize(AlignUp(out.v.size(), alignment), 0);
      const size_t data_start = out.v.size();
      for (size_t i = 0; i < tensors_.size(); ++i) {
        out.v.resize(data_start + positions[i], 0);
        out.Raw(tensors_[i].data);
      }
    }
    return out.v;
  }

 private:
  std::vector<std::vector<uint8_t>> kvs_;
  std::vector<TensorSpec> tensors_;
};

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(n);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> values(n);
  for (auto& v : values) v = normal(rng);
  return values;
}

std::vector<uint8_t> AsBytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// Tensors of the small valid file: name, GGML type, ne and random contents.
std::vector<TensorSpec> ValidTensors() {
  return {
      {"f32.weight", 0, {8, 3}, AsBytes(RandomFloats(24, 1))},
      {"f16.weight", 1, {16}, RandomBytes(32, 2)},
      {"q8_0.weight", 8, {64, 2}, RandomBytes(4 * 34, 3)},
      {"q4_k.weight", 12, {256, 1, 1}, RandomBytes(144, 4)},
      {"bf16.weight", 30, {4, 2, 1, 1}, RandomBytes(16, 5)},
  };
}

// A small valid v3 file with every value kind and several tensor types.
GgufBuilder ValidBuilder() {
  GgufBuilder b;
  b.KvString("general.architecture", "llama")
      .Kv<uint8_t>("v.u8", kU8, 200)
      .Kv<int8_t>("v.i8", kI8, -100)
      .Kv<uint16_t>("v.u16", kU16, 60000)
      .Kv<int16_t>("v.i16", kI16, -30000)
      .Kv<uint32_t>("v.u32", kU32, 4000000000u)
      .Kv<int32_t>("v.i32", kI32, -2000000000)
      .Kv<float>("v.f32", kF32, 1.5f)
      .Kv<uint8_t>("v.bool", kBool, 1)
      .KvString("v.string", "h\xc3\xa9llo w\xc3\xb6rld")
      .Kv<uint64_t>("v.u64", kU64, (uint64_t{1} << 63) + 5)
      .Kv<int64_t>("v.i64", kI64, -(int64_t{1} << 62))
      .Kv<double>("v.f64", kF64, -2.25e300)
      .KvArray<uint8_t>("a.u8", kU8, {1, 2, 255})
      .KvArray<int32_t>("a.i32", kI32, {-1, 0, 7})
      .KvArray<float>("a.f32", kF32, {0.5f, -1.0f})
      .KvArray<uint8_t>("a.bool", kBool, {1, 0, 1})
      .KvStringArray("a.string", {"a", "", "ccc"})
      .KvArray<uint64_t>("a.empty", kU64, {});
  for (TensorSpec& t : ValidTensors()) b.Tensor(std::move(t));
  return b;
}

absl::StatusOr<std::shared_ptr<const GgufFile>> Parse(const std::vector<uint8_t>& bytes,
                                                      const std::string& source = "test.gguf") {
  return GgufFile::FromBuffer(std::span<const uint8_t>(bytes.data(), bytes.size()), source);
}

// Parses `bytes` expecting failure; returns the error message.
std::string ParseError(const std::vector<uint8_t>& bytes) {
  auto file = Parse(bytes);
  EXPECT_FALSE(file.ok()) << "a broken file parsed";
  if (file.ok()) return "";
  EXPECT_THAT(Message(file.status()), HasSubstr("test.gguf")) << "errors name the source";
  return Message(file.status());
}

// ---------------------------------------------------------------------------
// Valid synthetic files.

TEST(GgufFileTest, ParsesEveryValueKind) {
  const std::vector<uint8_t> bytes = ValidBuilder().Build();
  auto file_or = Parse(bytes);
  ASSERT_TRUE(file_or.ok()) << file_or.status();
  const GgufFile& file = **file_or;
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 32u);
  EXPECT_EQ(file.source(), "test.gguf");
  EXPECT_THAT(file.metadata_keys(),
              ::testing::ElementsAre("general.architecture", "v.u8", "v.i8", "v.u16", "v.i16", "v.u32", "v.i32",
                                     "v.f32", "v.bool", "v.string", "v.u64", "v.i64", "v.f64", "a.u8", "a.i32",
                                     "a.f32", "a.bool", "a.string", "a.empty"));
  EXPECT_EQ(*file.GetString("general.architecture"), "llama");
  EXPECT_EQ(*file.GetInt("v.u8"), 200);
  EXPECT_EQ(*file.GetInt("v.i8"), -100);
  EXPECT_EQ(*file.GetInt("v.u16"), 60000);
  EXPECT_EQ(*file.GetInt("v.i16"), -30000);
  EXPECT_EQ(*file.GetInt("v.u32"), 4000000000);
  EXPECT_EQ(*file.GetInt("v.i32"), -2000000000);
  EXPECT_EQ(*file.GetFloat("v.f32"), 1.5);
  EXPECT_EQ(*file.GetBool("v.bool"), true);
  EXPECT_EQ(*file.GetString("v.string"), "h\xc3\xa9llo w\xc3\xb6rld");
  ASSERT_NE(file.Find("v.u64"), nullptr);
  EXPECT_EQ(std::get<uint64_t>(*file.Find("v.u64")), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(file.GetInt("v.u64").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*file.GetInt("v.i64"), -(int64_t{1} << 62));
  EXPECT_EQ(*file.GetFloat("v.f64"), -2.25e300);
  EXPECT_EQ(*file.GetFloat("v.u32"), 4e9);  // integers read as floats
  EXPECT_THAT(*file.GetIntArray("a.u8"), ::testing::ElementsAre(1, 2, 255));
  EXPECT_THAT(*file.GetIntArray("a.i32"), ::testing::ElementsAre(-1, 0, 7));
  EXPECT_THAT(*file.GetFloatArray("a.f32"), ::testing::ElementsAre(0.5, -1.0));
  EXPECT_THAT(*file.GetFloatArray("a.i32"), ::testing::ElementsAre(-1.0, 0.0, 7.0));
  ASSERT_NE(file.Find("a.bool"), nullptr);
  EXPECT_THAT(std::get<std::vector<bool>>(*file.Find("a.bool")), ::testing::ElementsAre(true, false, true));
  EXPECT_THAT(*file.GetStringArray("a.string"), ::testing::ElementsAre("a", "", "ccc"));
  EXPECT_TRUE(file.GetIntArray("a.empty")->empty());
  EXPECT_TRUE(file.Has("v.i8"));
  EXPECT_FALSE(file.Has("v.missing"));
}

TEST(GgufFileTest, GettersNameTheKeyOnErrors) {
  const std::vector<uint8_t> bytes = ValidBuilder().Build();
  auto file = *Parse(bytes);
  absl::Status status = file->GetInt("v.string").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("'v.string'"));
  EXPECT_THAT(Message(status), HasSubstr("test.gguf"));
  status = file->GetString("no.such.key").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(status), HasSubstr("'no.such.key'"));
  EXPECT_FALSE(file->GetBool("v.u8").ok());
  EXPECT_FALSE(file->GetFloat("v.string").ok());
  EXPECT_FALSE(file->GetIntArray("a.f32").ok());
  EXPECT_FALSE(file->GetStringArray("a.i32").ok());
  EXPECT_FALSE(file->GetFloatArray("a.string").ok());
  EXPECT_EQ(file->FindTensor("nope"), nullptr);
  status = file->Tensor("nope").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(status), HasSubstr("'nope'"));
}

// Every tensor: table entry, view, and fp32 values equal to dequantizing its
// bytes directly.
void CheckValidTensors(const GgufFile& file) {
  const std::vector<TensorSpec> specs = ValidTensors();
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    SCOPED_TRACE(spec.name);
    const GgufTensorInfo& info = file.tensors()[i];
    EXPECT_EQ(info.name, spec.name);
    EXPECT_EQ(info.ggml_type, spec.type);
    EXPECT_EQ(info.ne, std::vector<int64_t>(spec.ne.begin(), spec.ne.end()));
    EXPECT_EQ(info.nbytes, spec.data.size());
    EXPECT_EQ(info.offset % file.alignment(), 0u);
    ASSERT_EQ(file.FindTensor(spec.name), &info);

    auto tensor = file.Tensor(spec.name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->name, spec.name);
    EXPECT_EQ(static_cast<uint32_t>(tensor->dtype), spec.type);
    EXPECT_EQ(tensor->shape, std::vector<int64_t>(spec.ne.rbegin(), spec.ne.rend()));
    ASSERT_EQ(tensor->nbytes, static_cast<int64_t>(spec.data.size()));
    EXPECT_EQ(std::memcmp(tensor->data, spec.data.data(), spec.data.size()), 0);
    EXPECT_NE(tensor->keep_alive, nullptr);

    auto values = ToF32(*tensor);
    ASSERT_TRUE(values.ok()) << values.status();
    std::vector<float> want(values->size());
    ASSERT_TRUE(kernels::cpu::DequantizeRow(spec.type, spec.data.data(), want.data(),
                                            static_cast<int64_t>(want.size())));
    ASSERT_EQ(values->size(), want.size());
    EXPECT_EQ(std::memcmp(values->data(), want.data(), want.size() * 4), 0);
  }
  // The F32 tensor comes back exactly.
  EXPECT_EQ(*ToF32(*file.Tensor("f32.weight")), RandomFloats(24, 1));
}

TEST(GgufFileTest, TensorsViewTheirBytes) {
  const std::vector<uint8_t> bytes = ValidBuilder().Build();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  CheckValidTensors(**file);
}

TEST(GgufFileTest, OpensAMappedFileThatOutlivesItsHandle) {
  const std::string path = ::testing::TempDir() + "/polar_gguf_file_test.gguf";
  const std::vector<uint8_t> bytes = ValidBuilder().Build();
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->source(), path);
  CheckValidTensors(**file);
  // A tensor keeps the mapping alive after the last handle to the file goes.
  HostTensor tensor = *(*file)->Tensor("f32.weight");
  file = absl::UnknownError("dropped");
  std::remove(path.c_str());
  EXPECT_EQ(*ToF32(tensor), RandomFloats(24, 1));
}

TEST(GgufFileTest, OpenReportsMissingAndUnreadableFiles) {
  auto missing = GgufFile::Open("/nonexistent/dir/model.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), HasSubstr("/nonexistent/dir/model.gguf"));
  EXPECT_FALSE(GgufFile::Open(::testing::TempDir()).ok());  // a directory
  const std::string empty = ::testing::TempDir() + "/polar_empty.gguf";
  { std::ofstream out(empty); }
  auto status = GgufFile::Open(empty).status();
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(Message(status), HasSubstr(empty));
  std::remove(empty.c_str());
}

TEST(GgufFileTest, AcceptsVersion2) {
  GgufBuilder b = ValidBuilder();
  b.version = 2;
  const std::vector<uint8_t> bytes = b.Build();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
  CheckValidTensors(**file);
}

TEST(GgufFileTest, HonoursDeclaredAlignment) {
  GgufBuilder b = ValidBuilder();
  b.alignment = 64;
  b.Kv<uint32_t>("general.alignment", kU32, 64);
  const std::vector<uint8_t> bytes = b.Build();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->alignment(), 64u);
  CheckValidTensors(**file);
}

TEST(GgufFileTest, FileWithoutTensorsMayEndAfterTheMetadata) {
  GgufBuilder b;
  b.KvString("general.architecture", "llama");
  const std::vector<uint8_t> bytes = b.Build();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(GgufFileTest, ZeroSizedTensorIsAllowed) {
  GgufBuilder b;
  b.Tensor({"empty", 0, {0, 4}, {}});
  b.Tensor({"full", 0, {2}, AsBytes({1.0f, 2.0f})});
  const std::vector<uint8_t> bytes = b.Build();
  auto file = Parse(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto empty = (*file)->Tensor("empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->NumElements(), 0);
  EXPECT_TRUE(ToF32(*empty)->empty());
  EXPECT_EQ(*ToF32(*(*file)->Tensor("full")), std::vector<float>({1.0f, 2.0f}));
}

// ---------------------------------------------------------------------------
// Corrupt files.

TEST(GgufFileTest, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = ValidBuilder().Build();
  ASSERT_TRUE(Parse(bytes).ok());
  int mentions_truncated = 0;
  int mentions_data = 0;
  for (size_t length = 0; length < bytes.size(); ++length) {
    // An exact-size copy, so a sanitizer build flags any read past the end.
    const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(length));
    auto file = GgufFile::FromBuffer(std::span<const uint8_t>(prefix.data(), prefix.size()), "cut.gguf");
    ASSERT_FALSE(file.ok()) << "prefix of " << length << " of " << bytes.size() << " bytes parsed";
    ASSERT_THAT(Message(file.status()), HasSubstr("cut.gguf"));
    mentions_truncated += Message(file.status()).find("truncated") != std::string::npos;
    mentions_data += Message(file.status()).find("outside the data section") != std::string::npos;
  }
  // Cuts in the header/metadata/table report truncation, cuts in the data
  // section report the tensor that no longer fits.
  EXPECT_GT(mentions_truncated, 100);
  EXPECT_GT(mentions_data, 100);
}

TEST(GgufFileTest, RejectsBadMagic) {
  GgufBuilder b = ValidBuilder();
  b.magic = 0x4C4C5546;  // "FULL"
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("not a GGUF file"));
  EXPECT_THAT(ParseError({'G', 'G'}), HasSubstr("truncated"));
  EXPECT_FALSE(Parse({}).ok());
}

TEST(GgufFileTest, RejectsVersion1AndUnknownVersions) {
  GgufBuilder b = ValidBuilder();
  b.version = 1;
  auto v1 = Parse(b.Build());
  ASSERT_FALSE(v1.ok());
  EXPECT_EQ(v1.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(v1.status()), HasSubstr("v1"));
  b.version = 4;
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("version 4"));
  b.version = 0x03000000;  // a big-endian v3 file read little-endian
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("big-endian"));
}

TEST(GgufFileTest, RejectsBadAlignment) {
  for (uint32_t alignment : {0u, 3u, 48u, 1u << 31}) {
    GgufBuilder b = ValidBuilder();
    b.Kv<uint32_t>("general.alignment", kU32, alignment);
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("general.alignment")) << alignment;
  }
  GgufBuilder negative = ValidBuilder();
  negative.Kv<int32_t>("general.alignment", kI32, -32);
  EXPECT_THAT(ParseError(negative.Build()), HasSubstr("general.alignment"));
  GgufBuilder text = ValidBuilder();
  text.KvString("general.alignment", "32");
  EXPECT_THAT(ParseError(text.Build()), HasSubstr("general.alignment"));
}

TEST(GgufFileTest, RejectsTensorsOutsideTheData) {
  {
    GgufBuilder b;
    b.Tensor({"a", 0, {8}, AsBytes(RandomFloats(8, 1))});
    b.Tensor({"far", 0, {8}, AsBytes(RandomFloats(8, 2)), uint64_t{1} << 40});
    const std::string error = ParseError(b.Build());
    EXPECT_THAT(error, HasSubstr("'far'"));
    EXPECT_THAT(error, HasSubstr("outside the data section"));
  }
  {
    // The table promises more elements than the file holds.
    GgufBuilder b;
    b.Tensor({"short", 0, {64}, AsBytes(RandomFloats(8, 1))});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'short'"));
  }
  {
    // Offset near 2^64: offset + size must not wrap around.
    GgufBuilder b;
    b.Tensor({"wrap", 0, {8}, AsBytes(RandomFloats(8, 1)), ~uint64_t{0} - 31});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'wrap'"));
  }
}

TEST(GgufFileTest, RejectsMisalignedAndOverlappingTensors) {
  {
    GgufBuilder b;
    b.Tensor({"a", 0, {16}, AsBytes(RandomFloats(16, 1))});
    b.Tensor({"odd", 0, {8}, AsBytes(RandomFloats(8, 2)), 4});
    const std::string error = ParseError(b.Build());
    EXPECT_THAT(error, HasSubstr("'odd'"));
    EXPECT_THAT(error, HasSubstr("alignment"));
  }
  {
    GgufBuilder b;
    b.Tensor({"a", 0, {16}, AsBytes(RandomFloats(16, 1))});
    b.Tensor({"b", 0, {16}, AsBytes(RandomFloats(16, 2)), 32});  // a spans [0, 64)
    const std::string error = ParseError(b.Build());
    EXPECT_THAT(error, HasSubstr("overlaps"));
    EXPECT_THAT(error, HasSubstr("'a'"));
    EXPECT_THAT(error, HasSubstr("'b'"));
  }
}

TEST(GgufFileTest, RejectsUnsupportedTensorTypes) {
  for (uint32_t type : {4u, 9u, 16u, 20u, 29u, 31u, 12345u}) {
    GgufBuilder b;
    b.Tensor({"blk.0.exotic", type, {256}, RandomBytes(256, 1)});
    auto file = Parse(b.Build());
    ASSERT_FALSE(file.ok()) << type;
    EXPECT_THAT(Message(file.status()), HasSubstr("'blk.0.exotic'"));
    EXPECT_THAT(Message(file.status()), HasSubstr("type id " + std::to_string(type)));
  }
}

TEST(GgufFileTest, RejectsDuplicates) {
  GgufBuilder tensors = ValidBuilder();
  tensors.Tensor({"f16.weight", 1, {16}, RandomBytes(32, 9)});
  EXPECT_THAT(ParseError(tensors.Build()), HasSubstr("duplicate tensor name"));
  GgufBuilder keys = ValidBuilder();
  keys.Kv<uint32_t>("v.u8", kU32, 1);
  const std::string error = ParseError(keys.Build());
  EXPECT_THAT(error, HasSubstr("duplicate key"));
  EXPECT_THAT(error, HasSubstr("'v.u8'"));
}

TEST(GgufFileTest, RejectsBadShapes) {
  {
    GgufBuilder b;
    b.Tensor({"five_d", 0, {1, 1, 1, 1, 1}, AsBytes({1.0f})});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'five_d'"));
  }
  {
    GgufBuilder b;
    b.Tensor({"huge_dim", 0, {uint64_t{1} << 63}, {}});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'huge_dim'"));
  }
  {
    GgufBuilder b;
    b.Tensor({"overflow", 0, {uint64_t{1} << 32, uint64_t{1} << 32}, {}});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("overflow"));
  }
  {
    // Overflow hidden behind a zero dimension is still an overflow.
    GgufBuilder b;
    b.Tensor({"zero_then_big", 0, {0, uint64_t{1} << 40, uint64_t{1} << 40}, {}});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'zero_then_big'"));
  }
  {
    GgufBuilder b;  // F32 bytes overflow although the element count fits
    b.Tensor({"bytes_overflow", 0, {uint64_t{1} << 62}, {}});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'bytes_overflow'"));
  }
  {
    GgufBuilder b;  // 48 is not a whole number of Q4_0 blocks
    b.Tensor({"partial_block", 2, {48}, RandomBytes(27, 1)});
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("block size"));
  }
}

TEST(GgufFileTest, RejectsForgedCountsAndLengthsWithoutAllocating) {
  {
    GgufBuilder b = ValidBuilder();
    b.n_kv = uint64_t{1} << 60;
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("metadata entries"));
  }
  {
    GgufBuilder b = ValidBuilder();
    b.n_tensors = uint64_t{1} << 60;
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("tensor entries"));
  }
  {
    // More entries than present: runs off the end of the table.
    GgufBuilder b = ValidBuilder();
    b.n_tensors = 7;
    EXPECT_FALSE(Parse(b.Build()).ok());
  }
  {
    Bytes entry;  // a key whose length is 2^60 (then enough bytes for the count check)
    entry.Put<uint64_t>(uint64_t{1} << 60).Put<uint64_t>(0).Put<uint64_t>(0);
    GgufBuilder b;
    b.KvRaw(entry.v);
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("truncated"));
  }
  {
    Bytes entry;  // a string value whose length is 2^62
    entry.Str("k").Put<uint32_t>(kString).Put<uint64_t>(uint64_t{1} << 62);
    GgufBuilder b;
    b.KvRaw(entry.v);
    EXPECT_THAT(ParseError(b.Build()), HasSubstr("'k'"));
  }
  for (uint32_t element_type : {kU8, kString, kF64, kBool}) {
    Bytes entry;  // an array claiming 2^61 elements
    entry.Str("big").Put<uint32_t>(kArray).Put<uint32_t>(element_type).Put<uint64_t>(uint64_t{1} << 61);
    GgufBuilder b;
    b.KvRaw(entry.v);
    const std::string error = ParseError(b.Build());
    EXPECT_THAT(error, HasSubstr("'big'"));
    EXPECT_THAT(error, HasSubstr("does not fit"));
  }
}

TEST(GgufFileTest, RejectsBadValues) {
  const auto error_for = [](const Bytes& entry) {
    GgufBuilder b;
    b.KvString("first", "ok");
    b.KvRaw(entry.v);
    return ParseError(b.Build());
  };
  Bytes nested;
  nested.Str("nested").Put<uint32_t>(kArray).Put<uint32_t>(kArray).Put<uint64_t>(1);
  nested.Put<uint32_t>(kU8).Put<uint64_t>(1).Put<uint8_t>(1);
  EXPECT_THAT(error_for(nested), HasSubstr("nested arrays"));
  Bytes bad_type;
  bad_type.Str("bad_type").Put<uint32_t>(13).Put<uint64_t>(0);
  EXPECT_THAT(error_for(bad_type), HasSubstr("invalid value type 13"));
  Bytes bad_element;
  bad_element.Str("bad_element").Put<uint32_t>(kArray).Put<uint32_t>(99).Put<uint64_t>(0);
  EXPECT_THAT(error_for(bad_element), HasSubstr("'bad_element'"));
  Bytes bad_bool;
  bad_bool.Str("bad_bool").Put<uint32_t>(kBool).Put<uint8_t>(2);
  EXPECT_THAT(error_for(bad_bool), HasSubstr("'bad_bool'"));
  Bytes bad_bool_array;
  bad_bool_array.Str("bools").Put<uint32_t>(kArray).Put<uint32_t>(kBool).Put<uint64_t>(2);
  bad_bool_array.Put<uint8_t>(1).Put<uint8_t>(7);
  EXPECT_THAT(error_for(bad_bool_array), HasSubstr("element 1"));
  Bytes big_u64;
  big_u64.Str("ids").Put<uint32_t>(kArray).Put<uint32_t>(kU64).Put<uint64_t>(2);
  big_u64.Put<uint64_t>(1).Put<uint64_t>(~uint64_t{0});
  EXPECT_THAT(error_for(big_u64), HasSubstr("'ids'"));
}

TEST(GgufFileTest, RandomByteFlipsNeverCrash) {
  // A small in-test fuzzer for the normal build (the libFuzzer target goes
  // much further): corrupt 1-4 bytes at a time; a file that still parses must
  // give every tensor a consistent view that converts to fp32.
  const std::vector<uint8_t> bytes = ValidBuilder().Build();
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> mutated = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) mutated[rng() % mutated.size()] = static_cast<uint8_t>(rng());
    auto file = Parse(mutated);
    if (!file.ok()) continue;
    ++parsed;
    for (const GgufTensorInfo& info : (*file)->tensors()) {
      auto tensor = (*file)->Tensor(info.name);
      ASSERT_TRUE(tensor.ok()) << tensor.status();
      if (tensor->NumElements() <= (1 << 16)) {
        ASSERT_TRUE(ToF32(*tensor).ok()) << info.name;
      }
    }
  }
  EXPECT_GT(parsed, 0) << "flips in tensor data leave the file valid";
}

// ---------------------------------------------------------------------------
// DType and HostTensor.

TEST(DTypeTest, NamesAndBlockGeometry) {
  struct Row {
    DType type;
    const char* name;
    int64_t elements;
    int64_t bytes;
  };
  const Row rows[] = {
      {DType::kF32, "F32", 1, 4},       {DType::kF16, "F16", 1, 2},         {DType::kBF16, "BF16", 1, 2},
      {DType::kQ4_0, "Q4_0", 32, 18},   {DType::kQ4_1, "Q4_1", 32, 20},     {DType::kQ5_0, "Q5_0", 32, 22},
      {DType::kQ5_1, "Q5_1", 32, 24},   {DType::kQ8_0, "Q8_0", 32, 34},     {DType::kQ2_K, "Q2_K", 256, 84},
      {DType::kQ3_K, "Q3_K", 256, 110}, {DType::kQ4_K, "Q4_K", 256, 144},   {DType::kQ5_K, "Q5_K", 256, 176},
      {DType::kQ6_K, "Q6_K", 256, 210},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(DTypeName(row.type), row.name);
    EXPECT_TRUE(IsSupportedDType(static_cast<uint32_t>(row.type))) << row.name;
    EXPECT_EQ(DTypeBlockElements(row.type), row.elements) << row.name;
    EXPECT_EQ(DTypeBlockBytes(row.type), row.bytes) << row.name;
  }
  EXPECT_EQ(DTypeName(static_cast<DType>(5)), "unknown");
  for (uint32_t id : {4u, 5u, 9u, 15u, 16u, 19u, 20u, 29u, 31u, 100u}) EXPECT_FALSE(IsSupportedDType(id)) << id;
}

TEST(HostTensorTest, ShapeHelpersAndOwnedTensors) {
  const std::vector<float> values = RandomFloats(6, 11);
  const HostTensor tensor = MakeOwnedF32("w", {2, 3}, values);
  EXPECT_EQ(tensor.name, "w");
  EXPECT_EQ(tensor.dtype, DType::kF32);
  EXPECT_EQ(tensor.NumElements(), 6);
  EXPECT_EQ(tensor.ShapeString(), "[2, 3]");
  EXPECT_EQ(tensor.nbytes, 24);
  ASSERT_NE(tensor.keep_alive, nullptr);
  EXPECT_EQ(*ToF32(tensor), values);

  HostTensor shape;
  EXPECT_EQ(shape.NumElements(), 1);  // rank 0
  EXPECT_EQ(shape.ShapeString(), "[]");
  shape.shape = {-1, 4};
  EXPECT_EQ(shape.NumElements(), -1);
  shape.shape = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_EQ(shape.NumElements(), -1);
  shape.shape = {int64_t{1} << 40, int64_t{1} << 40, 0};
  EXPECT_EQ(shape.NumElements(), 0);
}

TEST(HostTensorTest, ToF32RejectsInconsistentTensors) {
  HostTensor tensor = MakeOwnedF32("blk.3.bad", {4, 8}, RandomFloats(32, 3));
  HostTensor wrong_size = tensor;
  wrong_size.nbytes -= 4;
  auto status = ToF32(wrong_size).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), HasSubstr("'blk.3.bad'"));

  HostTensor partial_block = tensor;  // 8 floats are not a Q4_0 block
  partial_block.dtype = DType::kQ4_0;
  EXPECT_THAT(Message(ToF32(partial_block).status()), HasSubstr("block size"));

  HostTensor unknown = tensor;
  unknown.dtype = static_cast<DType>(5);
  EXPECT_THAT(Message(ToF32(unknown).status()), HasSubstr("unsupported"));

  HostTensor negative = tensor;
  negative.shape = {-4, -8};
  EXPECT_FALSE(ToF32(negative).ok());

  HostTensor no_data = tensor;
  no_data.data = nullptr;
  EXPECT_FALSE(ToF32(no_data).ok());
}

TEST(HostTensorDeathTest, MakeOwnedF32ChecksTheValueCount) {
  EXPECT_DEATH(MakeOwnedF32("w", {2, 3}, std::vector<float>(5, 1.0f)), "5 values for shape \\[2, 3\\]");
}

// ---------------------------------------------------------------------------
// The real default model against python gguf's view of it.

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  if (hex == "-") return out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::string HexString(const std::string& hex) {
  const std::vector<uint8_t> bytes = FromHex(hex);
  return std::string(bytes.begin(), bytes.end());
}

class DefaultModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(POLAR_DEFAULT_MODEL)) {
      GTEST_SKIP() << "default model " << POLAR_DEFAULT_MODEL
                   << " is absent; fetch it into .cache/models/ to run this test";
    }
    auto file = GgufFile::Open(POLAR_DEFAULT_MODEL);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = *file;
  }
  std::shared_ptr<const GgufFile> file_;
};

TEST_F(DefaultModelTest, KnownFacts) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(file_->tensors().size(), 272u);
  EXPECT_EQ(*file_->GetInt("llama.block_count"), 30);
  EXPECT_EQ(*file_->GetString("general.architecture"), "llama");
  EXPECT_EQ(file_->GetStringArray("tokenizer.ggml.tokens")->size(), 49152u);
  auto q = file_->Tensor("blk.0.attn_q.weight");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->shape, std::vector<int64_t>({576, 576}));
  EXPECT_EQ(q->dtype, DType::kQ4_1);
  auto embedding = file_->Tensor("token_embd.weight");
  ASSERT_TRUE(embedding.ok()) << embedding.status();
  EXPECT_EQ(embedding->shape, std::vector<int64_t>({49152, 576}));
  EXPECT_EQ(embedding->ShapeString(), "[49152, 576]");
  EXPECT_EQ(embedding->dtype, DType::kQ8_0);
}

TEST_F(DefaultModelTest, MatchesPythonGguf) {
  std::ifstream golden(std::string(POLAR_TEST_DATA_DIR) + "/gguf/default_model.txt");
  ASSERT_TRUE(golden.good()) << "run tests/reference/make_dequant_goldens.py";
  std::vector<std::string> keys;
  size_t tensor_index = 0;
  int rows_checked = 0;
  int sums_checked = 0;
  std::string line;
  while (std::getline(golden, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string record;
    in >> record;
    SCOPED_TRACE(line.substr(0, 120));
    if (record == "version") {
      uint32_t version;
      in >> version;
      EXPECT_EQ(file_->version(), version);
    } else if (record == "alignment") {
      uint64_t alignment;
      in >> alignment;
      EXPECT_EQ(file_->alignment(), alignment);
    } else if (record == "kv") {
      std::string key, kind;
      in >> key >> kind;
      keys.push_back(key);
      const GgufValue* value = file_->Find(key);
      ASSERT_NE(value, nullptr);
      if (kind == "uint") {
        uint64_t want;
        in >> want;
        EXPECT_EQ(std::get<uint64_t>(*value), want);
      } else if (kind == "int") {
        int64_t want;
        in >> want;
        EXPECT_EQ(std::get<int64_t>(*value), want);
      } else if (kind == "float") {
        std::string hex;
        in >> hex;
        EXPECT_EQ(std::get<double>(*value), std::strtod(hex.c_str(), nullptr));
      } else if (kind == "bool") {
        int want;
        in >> want;
        EXPECT_EQ(std::get<bool>(*value), want == 1);
      } else if (kind == "string") {
        std::string hex;
        in >> hex;
        EXPECT_EQ(std::get<std::string>(*value), HexString(hex));
      } else if (kind.rfind("array-", 0) == 0) {
        size_t count;
        std::string first, last;
        in >> count >> first >> last;
        if (kind == "array-string") {
          const auto& array = std::get<std::vector<std::string>>(*value);
          ASSERT_EQ(array.size(), count);
          EXPECT_EQ(array.front(), HexString(first));
          EXPECT_EQ(array.back(), HexString(last));
        } else if (kind == "array-int" || kind == "array-uint") {
          const auto& array = std::get<std::vector<int64_t>>(*value);
          ASSERT_EQ(array.size(), count);
          EXPECT_EQ(array.front(), std::stoll(first));
          EXPECT_EQ(array.back(), std::stoll(last));
        } else {
          ADD_FAILURE() << "unexpected kind " << kind;
        }
      } else {
        ADD_FAILURE() << "unexpected kind " << kind;
      }
    } else if (record == "tensor") {
      std::string name;
      uint32_t type, n_dims;
      in >> name >> type >> n_dims;
      std::vector<int64_t> ne(n_dims);
      for (auto& d : ne) in >> d;
      uint64_t offset, nbytes;
      in >> offset >> nbytes;
      ASSERT_LT(tensor_index, file_->tensors().size());
      const GgufTensorInfo& info = file_->tensors()[tensor_index++];
      EXPECT_EQ(info.name, name);
      EXPECT_EQ(info.ggml_type, type);
      EXPECT_EQ(info.ne, ne);
      EXPECT_EQ(info.offset, offset);
      EXPECT_EQ(info.nbytes, nbytes);
    } else if (record == "row") {
      std::string name;
      int64_t row;
      size_t count;
      in >> name >> row >> count;
      auto tensor = file_->Tensor(name);
      ASSERT_TRUE(tensor.ok()) << tensor.status();
      auto values = ToF32(*tensor);
      ASSERT_TRUE(values.ok()) << values.status();
      const int64_t row_length = tensor->shape.back();
      for (size_t i = 0; i < count; ++i) {
        std::string hex;
        in >> hex;
        const auto want = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
        uint32_t got;
        std::memcpy(&got, &(*values)[row * row_length + i], 4);
        ASSERT_EQ(got, want) << name << " row " << row << " element " << i;
      }
      ++rows_checked;
    } else if (record == "sum") {
      std::string name, hex;
      size_t count;
      in >> name >> count >> hex;
      auto values = ToF32(*file_->Tensor(name));
      ASSERT_TRUE(values.ok()) << values.status();
      ASSERT_EQ(values->size(), count);
      double sum = 0.0;
      for (float v : *values) sum += v;  // sequential, as the generator sums
      EXPECT_EQ(sum, std::strtod(hex.c_str(), nullptr)) << name;
      ++sums_checked;
    } else {
      ADD_FAILURE() << "unknown record " << record;
    }
  }
  EXPECT_EQ(file_->metadata_keys(), keys);
  EXPECT_EQ(tensor_index, file_->tensors().size());
  EXPECT_EQ(rows_checked, 3);
  EXPECT_EQ(sums_checked, 3);
}

}  // namespace
}  // namespace polar
