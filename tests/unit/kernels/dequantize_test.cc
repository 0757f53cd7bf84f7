// Checks kernels/cpu dequantization and half conversions bit for bit against
// golden files written by tests/reference/make_dequant_goldens.py from python
// gguf (an independent implementation of GGML's reference dequantizers), and
// checks that bad arguments are refused without writing anything.
#include "kernels/cpu/dequantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kernels/cpu/half.h"

namespace polar::kernels::cpu {
namespace {

const std::string kDataDir = std::string(POLAR_TEST_DATA_DIR) + "/dequant/";

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <typename T>
T Load(const std::vector<uint8_t>& bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// One "POLARDQ1" golden file: quantized bytes and their expected fp32 values.
struct Golden {
  uint32_t type = 0;
  std::vector<uint8_t> data;
  std::vector<float> expected;
};

Golden ReadGolden(const std::string& name) {
  const std::vector<uint8_t> bytes = ReadFile(kDataDir + name + ".bin");
  Golden golden;
  if (bytes.size() < 32 || std::memcmp(bytes.data(), "POLARDQ1", 8) != 0) {
    ADD_FAILURE() << "missing or malformed golden " << name << ".bin; run tests/reference/make_dequant_goldens.py";
    return golden;
  }
  golden.type = Load<uint32_t>(bytes, 8);
  const auto n = Load<uint64_t>(bytes, 16);
  const auto n_bytes = Load<uint64_t>(bytes, 24);
  if (bytes.size() != 32 + n_bytes + 4 * n) {
    ADD_FAILURE() << name << ".bin: size " << bytes.size() << " does not match its header";
    return golden;
  }
  golden.data.assign(bytes.begin() + 32, bytes.begin() + 32 + n_bytes);
  golden.expected.resize(n);
  std::memcpy(golden.expected.data(), bytes.data() + 32 + n_bytes, 4 * n);
  return golden;
}

// Index of the first element whose bits differ, or -1.
int64_t FirstBitMismatch(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (Fp32ToBits(got[i]) != Fp32ToBits(want[i])) return static_cast<int64_t>(i);
  }
  return -1;
}

struct TypeCase {
  const char* name;
  uint32_t type;
  int64_t block_elements;
  int64_t block_bytes;
  void (*fn)(const void*, float*, int64_t);
};

const TypeCase kCases[] = {
    {"f32", kGgmlF32, 1, 4, DequantizeRowF32},        {"f16", kGgmlF16, 1, 2, DequantizeRowF16},
    {"bf16", kGgmlBF16, 1, 2, DequantizeRowBF16},     {"q4_0", kGgmlQ4_0, 32, 18, DequantizeRowQ4_0},
    {"q4_1", kGgmlQ4_1, 32, 20, DequantizeRowQ4_1},   {"q5_0", kGgmlQ5_0, 32, 22, DequantizeRowQ5_0},
    {"q5_1", kGgmlQ5_1, 32, 24, DequantizeRowQ5_1},   {"q8_0", kGgmlQ8_0, 32, 34, DequantizeRowQ8_0},
    {"q2_k", kGgmlQ2_K, 256, 84, DequantizeRowQ2_K},  {"q3_k", kGgmlQ3_K, 256, 110, DequantizeRowQ3_K},
    {"q4_k", kGgmlQ4_K, 256, 144, DequantizeRowQ4_K}, {"q5_k", kGgmlQ5_K, 256, 176, DequantizeRowQ5_K},
    {"q6_k", kGgmlQ6_K, 256, 210, DequantizeRowQ6_K},
};

class DequantizeGoldenTest : public ::testing::TestWithParam<TypeCase> {};

TEST_P(DequantizeGoldenTest, MatchesPythonGgufBitForBit) {
  const TypeCase& c = GetParam();
  const Golden golden = ReadGolden(c.name);
  ASSERT_FALSE(golden.expected.empty());
  EXPECT_EQ(golden.type, c.type);
  EXPECT_EQ(GgmlBlockElements(c.type), c.block_elements);
  EXPECT_EQ(GgmlBlockBytes(c.type), c.block_bytes);
  const int64_t n = static_cast<int64_t>(golden.expected.size());
  ASSERT_EQ(n % c.block_elements, 0);
  ASSERT_EQ(static_cast<int64_t>(golden.data.size()), n / c.block_elements * c.block_bytes);

  // The golden must hold real data: most values non-zero and not all equal.
  int64_t non_zero = 0;
  for (float v : golden.expected) non_zero += v != 0.0f;
  EXPECT_GT(non_zero, n / 2);

  // Whole buffer through the dispatcher.
  std::vector<float> got(n, -12345.0f);
  ASSERT_TRUE(DequantizeRow(c.type, golden.data.data(), got.data(), n));
  int64_t bad = FirstBitMismatch(got, golden.expected);
  EXPECT_EQ(bad, -1) << c.name << " element " << bad << ": got " << got[bad] << ", python gguf "
                     << golden.expected[bad];

  // Block by block through the per-type function from an unaligned copy, so
  // block offsets and unaligned scale loads are exercised too.
  std::vector<uint8_t> shifted(golden.data.size() + 1);
  std::memcpy(shifted.data() + 1, golden.data.data(), golden.data.size());
  std::vector<float> by_block(n, -12345.0f);
  for (int64_t b = 0; b < n / c.block_elements; ++b) {
    c.fn(shifted.data() + 1 + b * c.block_bytes, by_block.data() + b * c.block_elements, c.block_elements);
  }
  bad = FirstBitMismatch(by_block, golden.expected);
  EXPECT_EQ(bad, -1) << c.name << " (block by block) element " << bad;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DequantizeGoldenTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(DequantizeRowTest, RefusesUnknownTypesAndPartialBlocksWithoutWriting) {
  std::vector<uint8_t> src(4096);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 37 + 11);
  std::vector<float> dst(512, 7.0f);
  for (uint32_t type : {4u, 5u, 9u, 15u, 16u, 20u, 23u, 29u, 31u, 39u, 1000u, 0xffffffffu}) {
    EXPECT_FALSE(DequantizeRow(type, src.data(), dst.data(), 32)) << "type " << type;
    EXPECT_EQ(GgmlBlockElements(type), 0) << "type " << type;
    EXPECT_EQ(GgmlBlockBytes(type), 0) << "type " << type;
  }
  EXPECT_FALSE(DequantizeRow(kGgmlQ4_0, src.data(), dst.data(), 31));
  EXPECT_FALSE(DequantizeRow(kGgmlQ4_0, src.data(), dst.data(), 48));
  EXPECT_FALSE(DequantizeRow(kGgmlQ6_K, src.data(), dst.data(), 32));
  EXPECT_FALSE(DequantizeRow(kGgmlF32, src.data(), dst.data(), -1));
  for (float v : dst) ASSERT_EQ(v, 7.0f);
  EXPECT_TRUE(DequantizeRow(kGgmlQ4_K, src.data(), dst.data(), 0));
  for (float v : dst) ASSERT_EQ(v, 7.0f);
}

TEST(HalfTest, Fp16RoundTripsExhaustively) {
  int64_t nan_count = 0;
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = Fp16ToFp32(static_cast<uint16_t>(h));
    const bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    if (is_nan) {
      ++nan_count;
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      // Payload kept, quiet bit forced on the way back.
      ASSERT_EQ(Fp32ToFp16(f), h | 0x200) << std::hex << h;
      continue;
    }
    ASSERT_EQ(Fp32ToFp16(f), h) << std::hex << h;
  }
  EXPECT_EQ(nan_count, 2 * 1023);
  // Known values: the smallest subnormal, the largest normal, one.
  EXPECT_EQ(Fp16ToFp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16ToFp32(0x7bff), 65504.0f);
  EXPECT_EQ(Fp16ToFp32(0x3c00), 1.0f);
}

TEST(HalfTest, Bf16RoundTripsExhaustively) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = Bf16ToFp32(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      ASSERT_EQ(Fp32ToBf16(f), b | 0x40) << std::hex << b;
    } else {
      ASSERT_EQ(Fp32ToBf16(f), b) << std::hex << b;
    }
  }
}

TEST(HalfTest, Fp32ToHalfMatchesNumpyAndGgml) {
  const std::vector<uint8_t> bytes = ReadFile(kDataDir + "fp32_to_half.bin");
  ASSERT_GE(bytes.size(), 16u);
  ASSERT_EQ(std::memcmp(bytes.data(), "POLARHF1", 8), 0);
  const auto n = Load<uint64_t>(bytes, 8);
  ASSERT_EQ(bytes.size(), 16 + 8 * n);
  ASSERT_GT(n, 1000u);
  int64_t ties = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const float in = Load<float>(bytes, 16 + 4 * i);
    const auto want_fp16 = Load<uint16_t>(bytes, 16 + 4 * n + 2 * i);
    const auto want_bf16 = Load<uint16_t>(bytes, 16 + 6 * n + 2 * i);
    ASSERT_EQ(Fp32ToFp16(in), want_fp16) << "input " << in << " (bits " << std::hex << Fp32ToBits(in) << ")";
    ASSERT_EQ(Fp32ToBf16(in), want_bf16) << "input " << in << " (bits " << std::hex << Fp32ToBits(in) << ")";
    ties += (Fp32ToBits(in) & 0x1fff) == 0x1000;
  }
  EXPECT_GT(ties, 0) << "the golden should contain exact fp16 rounding ties";
  // NaN stays NaN (left out of the golden, see the generator).
  const float nan = std::nanf("");
  EXPECT_TRUE(std::isnan(Fp16ToFp32(Fp32ToFp16(nan))));
  EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(nan))));
  EXPECT_TRUE(std::isnan(Fp16ToFp32(Fp32ToFp16(BitsToFp32(0x7f800001)))));  // signalling
  EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(BitsToFp32(0x7f800001)))));
}

}  // namespace
}  // namespace polar::kernels::cpu
