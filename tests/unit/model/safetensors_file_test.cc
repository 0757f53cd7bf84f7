// Tests of the safetensors reader/writer: round trips in every readable dtype,
// files written by the Python reference implementation (seed corpus, produced
// by tests/reference/make_safetensors_seeds.py), sharded directories, and
// every corruption path, whose errors must name the file and the tensor.
#include "engine/model/safetensors_file.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/half.h"

namespace polar {
namespace {

using ::testing::HasSubstr;

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/safetensors_test_" + std::to_string(::getpid()) + "_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// An owned tensor of random values in `dtype`, kept alive by the tensor itself.
HostTensor RandomTensor(const std::string& name, DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  HostTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const int64_t n = t.NumElements();
  const int64_t width = dtype == DType::kF32 ? 4 : 2;
  auto bytes = std::make_shared<std::vector<uint8_t>>(n * width);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float v = normal(rng);
    if (dtype == DType::kF32) {
      std::memcpy(bytes->data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kF16 ? kernels::cpu::Fp32ToFp16(v) : kernels::cpu::Fp32ToBf16(v);
      std::memcpy(bytes->data() + 2 * i, &h, 2);
    }
  }
  t.nbytes = static_cast<int64_t>(bytes->size());
  t.data = bytes->empty() ? nullptr : bytes->data();
  t.keep_alive = bytes;
  return t;
}

std::vector<uint8_t> Bytes(const HostTensor& t) { return std::vector<uint8_t>(t.data, t.data + t.nbytes); }

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A safetensors image from a header text and a data section.
std::vector<uint8_t> Image(const std::string& header, const std::vector<uint8_t>& data,
                           uint64_t length_field = UINT64_MAX) {
  const uint64_t n = length_field == UINT64_MAX ? header.size() : length_field;
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  for (char c : header) out.push_back(static_cast<uint8_t>(c));  // (insert() trips a GCC 12 false warning)
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

absl::Status ParseError(const std::vector<uint8_t>& image) {
  auto file = SafetensorsFile::FromBuffer(image, "bad.safetensors");
  return file.ok() ? absl::OkStatus() : file.status();
}

TEST(SafetensorsTest, RoundTripEveryDtype) {
  const std::string dir = TempDir("roundtrip");
  const std::vector<HostTensor> tensors = {
      RandomTensor("b.weight", DType::kF32, {3, 5}, 1),  RandomTensor("a.half", DType::kF16, {7}, 2),
      RandomTensor("c.bf16", DType::kBF16, {2, 3, 4}, 3), RandomTensor("scalar", DType::kF32, {}, 4),
      RandomTensor("empty", DType::kF32, {0, 4}, 5),
  };
  const std::string path = dir + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->TensorNames(), ::testing::ElementsAre("a.half", "b.weight", "c.bf16", "empty", "scalar"));
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const HostTensor& expected : tensors) {
    auto t = (*file)->Tensor(expected.name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->dtype, expected.dtype) << expected.name;
    EXPECT_EQ(t->shape, expected.shape) << expected.name;
    EXPECT_EQ(Bytes(*t), Bytes(expected)) << expected.name;
    const uintptr_t width = expected.dtype == DType::kF32 ? 4 : 2;
    if (t->nbytes > 0) EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % width, 0u) << expected.name;
  }

  // The header is padded with spaces so the data section starts 8-aligned.
  const std::vector<uint8_t> raw = ReadFile(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | raw[i];
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(raw[8], '{');
  int64_t data_bytes = 0;
  for (const HostTensor& t : tensors) data_bytes += t.nbytes;
  EXPECT_EQ(raw.size(), 8 + header_len + data_bytes);

  // FromBuffer over the same bytes sees the same tensors.
  auto in_memory = SafetensorsFile::FromBuffer(raw, "memory");
  ASSERT_TRUE(in_memory.ok()) << in_memory.status();
  auto t = (*in_memory)->Tensor("c.bf16");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(Bytes(*t), Bytes(tensors[2]));
}

TEST(SafetensorsTest, TensorOutlivesFileHandle) {
  const std::string dir = TempDir("keepalive");
  const HostTensor w = RandomTensor("w", DType::kF32, {64, 64}, 7);
  ASSERT_TRUE(WriteSafetensors(dir + "/x.safetensors", {w}).ok());
  HostTensor view;
  {
    auto file = SafetensorsFile::Open(dir + "/x.safetensors");
    ASSERT_TRUE(file.ok());
    view = *(*file)->Tensor("w");
  }
  EXPECT_EQ(Bytes(view), Bytes(w));  // the mapping lives as long as the view
}

// Files written by Python's safetensors (seed corpus); values follow the formula
// in tests/reference/make_safetensors_seeds.py, exactly representable in every dtype.
TEST(SafetensorsTest, ReadsFilesWrittenByThePythonReference) {
  const std::string corpus = std::string(POLAR_TEST_DATA_DIR) + "/../fuzz/corpus/safetensors/";
  for (const char* name : {"python_f32.safetensors", "python_f16.safetensors", "python_bf16.safetensors"}) {
    auto file = SafetensorsFile::Open(corpus + name);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_THAT((*file)->TensorNames(), ::testing::ElementsAre("bias", "weight"));
    for (const auto& [tensor_name, k] : {std::pair<std::string, int>{"weight", 0}, {"bias", 5}}) {
      auto t = (*file)->Tensor(tensor_name);
      ASSERT_TRUE(t.ok()) << t.status();
      auto values = ToF32(*t);
      ASSERT_TRUE(values.ok()) << values.status();
      ASSERT_EQ(values->size(), tensor_name == "weight" ? 12u : 4u);
      for (size_t i = 0; i < values->size(); ++i) {
        const float expected = static_cast<float>(static_cast<int>((i * 7 + k) % 23) - 11) / 8.0f;
        EXPECT_EQ((*values)[i], expected) << name << " " << tensor_name << "[" << i << "]";
      }
    }
  }
}

TEST(SafetensorsTest, UnpaddedHeaderStillGivesAlignedCorrectData) {
  // A header of odd length puts the data section at an odd address.
  const float values[3] = {1.5f, -2.25f, 3.0f};
  std::vector<uint8_t> data(12);
  std::memcpy(data.data(), values, 12);
  auto image = Image(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data);
  ASSERT_NE((image.size() - 12) % 4, 0u);  // misaligned by construction
  auto file = SafetensorsFile::FromBuffer(image, "odd.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  auto t = (*file)->Tensor("t");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 4, 0u);
  auto f32 = ToF32(*t);
  ASSERT_TRUE(f32.ok());
  EXPECT_THAT(*f32, ::testing::ElementsAre(1.5f, -2.25f, 3.0f));
}

TEST(SafetensorsTest, EveryTruncationIsAnError) {
  const std::string dir = TempDir("truncate");
  ASSERT_TRUE(WriteSafetensors(dir + "/m.safetensors",
                               {RandomTensor("layer.weight", DType::kF16, {4, 3}, 11),
                                RandomTensor("layer.bias", DType::kF32, {4}, 12)})
                  .ok());
  const std::vector<uint8_t> full = ReadFile(dir + "/m.safetensors");
  ASSERT_TRUE(SafetensorsFile::FromBuffer(full, "m.safetensors").ok());
  for (size_t len = 0; len < full.size(); ++len) {
    std::vector<uint8_t> prefix(full.begin(), full.begin() + len);
    auto file = SafetensorsFile::FromBuffer(prefix, "m.safetensors");
    ASSERT_FALSE(file.ok()) << "prefix of " << len << " bytes parsed";
    EXPECT_THAT(file.status().message(), HasSubstr("m.safetensors")) << len;
    // Cut inside the data section: the error names a tensor whose bytes are gone.
    if (len >= 8 + 8 && len > full.size() - 24) {
      EXPECT_THAT(file.status().message(), HasSubstr("tensor 'layer.")) << len;
    }
  }
}

TEST(SafetensorsTest, HeaderLengthErrors) {
  const std::string header = R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const std::vector<uint8_t> data(4, 0);
  EXPECT_TRUE(ParseError(Image(header, data)).ok());
  for (uint64_t length : {uint64_t{UINT64_MAX - 1}, uint64_t{1} << 63, uint64_t{header.size() + 5}}) {
    auto status = ParseError(Image(header, data, length));
    EXPECT_FALSE(status.ok()) << length;
    EXPECT_THAT(status.message(), HasSubstr("header length")) << length;
    EXPECT_THAT(status.message(), HasSubstr("bad.safetensors"));
  }
  EXPECT_THAT(ParseError({1, 2, 3}).message(), HasSubstr("too short"));
}

TEST(SafetensorsTest, MalformedHeaders) {
  const std::vector<uint8_t> data(16, 0);
  struct Case {
    std::string header;
    std::string message;
  };
  const Case cases[] = {
      {R"({"t":{"dtype":"F32")", "not valid JSON"},
      {R"([1, 2])", "not a JSON object"},
      {"", "not valid JSON"},
      {R"({"t":[1]})", "tensor 't': header entry is not a JSON object"},
      {R"({"t":{"shape":[1],"data_offsets":[0,4]}})", "tensor 't': missing string 'dtype'"},
      {R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", "tensor 't': missing array 'shape'"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "tensor 't': 'data_offsets' is not"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", "tensor 't': 'data_offsets' is not"},
      {R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "tensor 't': shape [-1] has a bad dimension"},
      {R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "tensor 't': shape [1.5] has a bad"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "tensor 't': bad data_offsets"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0.0,4]}})", "tensor 't': bad data_offsets"},
      {R"({"t":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}})", "tensor 't': unknown dtype 'Q9'"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", "tensor 't': data_offsets [8, 4] end before"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}})", "tensor 't': data_offsets [16, 20] run past"},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "tensor 't': data_offsets [0, 4] hold 4 bytes"},
      {R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,4]}})", "needs 8"},
      {R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "tensor 't': shape"},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"u":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       "overlaps"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       "tensor 'b' (bytes 4..12) overlaps tensor 'a'"},
      {R"({"__metadata__":{"format":7}})", "__metadata__ value of 'format' is not a string"},
      {R"({"__metadata__":[1]})", "__metadata__ is not a JSON object"},
      {R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "empty name"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ParseError(Image(c.header, data));
    EXPECT_FALSE(status.ok()) << c.header;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << status;
    EXPECT_THAT(status.message(), HasSubstr("bad.safetensors")) << c.header;
  }
}

TEST(SafetensorsTest, UnsupportedDtypeOpensButTensorIsAnError) {
  std::vector<uint8_t> data(4 + 16, 0);
  const float one = 1.0f;
  std::memcpy(data.data(), &one, 4);
  const std::vector<uint8_t> image = Image(R"({"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                           R"("ids":{"dtype":"I64","shape":[2],"data_offsets":[4,20]}})",
                                           data);
  auto file = SafetensorsFile::FromBuffer(image, "mixed.safetensors");  // views `image`
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->Tensor("ok").ok());
  auto ids = (*file)->Tensor("ids");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(ids.status().message(), HasSubstr("mixed.safetensors: tensor 'ids' has dtype I64"));
  // Sizes of unreadable dtypes are still checked at open.
  auto bad = SafetensorsFile::FromBuffer(Image(R"({"ids":{"dtype":"I64","shape":[3],"data_offsets":[0,16]}})", data),
                                         "mixed.safetensors");
  EXPECT_FALSE(bad.ok());
  auto missing = (*file)->Tensor("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("'nope'"));
}

TEST(SafetensorsTest, OpenErrors) {
  const std::string dir = TempDir("open");
  auto missing = SafetensorsFile::Open(dir + "/none.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("none.safetensors"));
  std::ofstream(dir + "/empty.safetensors").close();
  auto empty = SafetensorsFile::Open(dir + "/empty.safetensors");
  EXPECT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("empty.safetensors"));
  EXPECT_FALSE(SafetensorsFile::Open(dir).ok());  // a directory
}

TEST(SafetensorsTest, WriterRejectsWhatItCannotWrite) {
  const std::string dir = TempDir("writer");
  HostTensor quantized = RandomTensor("q", DType::kF32, {32}, 1);
  quantized.dtype = DType::kQ4_1;
  quantized.nbytes = 20;
  auto status = WriteSafetensors(dir + "/a.safetensors", {quantized});
  EXPECT_THAT(status.message(), HasSubstr("tensor 'q'"));
  EXPECT_THAT(status.message(), HasSubstr("Q4_1"));

  HostTensor short_data = RandomTensor("s", DType::kF32, {4}, 2);
  short_data.nbytes = 12;
  EXPECT_THAT(WriteSafetensors(dir + "/a.safetensors", {short_data}).message(), HasSubstr("needs 16"));

  const HostTensor t = RandomTensor("t", DType::kF32, {4}, 3);
  EXPECT_THAT(WriteSafetensors(dir + "/a.safetensors", {t, t}).message(), HasSubstr("twice"));
  EXPECT_FALSE(WriteSafetensors(dir + "/no/such/dir/a.safetensors", {t}).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.safetensors"));
}

// A sharded directory as transformers' save_pretrained writes it.
class ShardedDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    a_ = RandomTensor("model.a", DType::kBF16, {8, 4}, 21);
    b_ = RandomTensor("model.b", DType::kBF16, {8}, 22);
    c_ = RandomTensor("model.c", DType::kF32, {3, 3}, 23);
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00001-of-00002.safetensors", {a_, b_}).ok());
    ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00002-of-00002.safetensors", {c_}).ok());
  }
  void WriteIndex(const std::string& weight_map) {
    std::ofstream(dir_ + "/model.safetensors.index.json")
        << R"({"metadata": {"total_size": 116}, "weight_map": )" << weight_map << "}";
  }
  std::string dir_;
  HostTensor a_, b_, c_;
};

TEST_F(ShardedDirTest, ReadsEveryShard) {
  WriteIndex(R"({"model.a": "model-00001-of-00002.safetensors", "model.b": "model-00001-of-00002.safetensors",
                 "model.c": "model-00002-of-00002.safetensors"})");
  auto tensors = ReadSafetensorsDir(dir_);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_EQ(tensors->size(), 3u);
  EXPECT_EQ(Bytes(tensors->at("model.a")), Bytes(a_));
  EXPECT_EQ(Bytes(tensors->at("model.b")), Bytes(b_));
  EXPECT_EQ(Bytes(tensors->at("model.c")), Bytes(c_));
  EXPECT_EQ(tensors->at("model.c").shape, (std::vector<int64_t>{3, 3}));
}

TEST_F(ShardedDirTest, MissingShardIsNamed) {
  WriteIndex(R"({"model.a": "model-00001-of-00002.safetensors", "model.c": "model-00009-of-00009.safetensors"})");
  auto tensors = ReadSafetensorsDir(dir_);
  ASSERT_FALSE(tensors.ok());
  EXPECT_THAT(tensors.status().message(), HasSubstr("shard 'model-00009-of-00009.safetensors'"));
  EXPECT_THAT(tensors.status().message(), HasSubstr("model.c"));
}

TEST_F(ShardedDirTest, ListedTensorAbsentFromItsShardIsNamed) {
  WriteIndex(R"({"model.a": "model-00001-of-00002.safetensors", "model.z": "model-00002-of-00002.safetensors"})");
  auto tensors = ReadSafetensorsDir(dir_);
  ASSERT_FALSE(tensors.ok());
  EXPECT_THAT(tensors.status().message(), HasSubstr("tensor 'model.z'"));
  EXPECT_THAT(tensors.status().message(), HasSubstr("model-00002-of-00002.safetensors"));
}

TEST_F(ShardedDirTest, BadIndexes) {
  WriteIndex(R"({"model.a": "../model-00001-of-00002.safetensors"})");
  EXPECT_THAT(ReadSafetensorsDir(dir_).status().message(), HasSubstr("bad shard name"));
  WriteIndex(R"({"model.a": 3})");
  EXPECT_THAT(ReadSafetensorsDir(dir_).status().message(), HasSubstr("tensor 'model.a'"));
  WriteIndex(R"([])");
  EXPECT_THAT(ReadSafetensorsDir(dir_).status().message(), HasSubstr("weight_map"));
  std::ofstream(dir_ + "/model.safetensors.index.json") << "{not json";
  EXPECT_THAT(ReadSafetensorsDir(dir_).status().message(), HasSubstr("model.safetensors.index.json"));
  // The same tensor in two shards.
  ASSERT_TRUE(WriteSafetensors(dir_ + "/model-00002-of-00002.safetensors", {c_, a_}).ok());
  WriteIndex(R"({"model.a": "model-00001-of-00002.safetensors", "model.c": "model-00002-of-00002.safetensors"})");
  EXPECT_THAT(ReadSafetensorsDir(dir_).status().message(), HasSubstr("'model.a' also appears in another shard"));
}

TEST(SafetensorsDirTest, SingleFileAndEmptyDirectory) {
  const std::string dir = TempDir("single");
  auto none = ReadSafetensorsDir(dir);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr(dir));
  const HostTensor w = RandomTensor("w", DType::kF16, {5, 2}, 31);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", {w}).ok());
  auto tensors = ReadSafetensorsDir(dir);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  EXPECT_EQ(Bytes(tensors->at("w")), Bytes(w));
}

}  // namespace
}  // namespace polar
