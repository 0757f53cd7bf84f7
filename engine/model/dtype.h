// Element types of stored weights: the plain floating types and the GGML block
// quantizations Polar can read. Values equal GGML's type ids so a GGUF tensor
// table maps with a cast after a range check.
#pragma once

#include <cstdint>
#include <string_view>

namespace polar {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kI32 = 26,  // indices (head selections); never a weight
  kBF16 = 30,
};

// "F32", "Q4_1", ... ; "unknown" for values outside the enum.
std::string_view DTypeName(DType type);

// True for the types this build can dequantize.
bool IsSupportedDType(uint32_t ggml_type);

// Elements per block (1 for plain types) and bytes per block.
int64_t DTypeBlockElements(DType type);
int64_t DTypeBlockBytes(DType type);

}  // namespace polar
