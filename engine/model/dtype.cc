// Names and block geometry of the stored weight types (dtype.h). The numbers
// come from the CPU dequantizer so the loader and the kernels cannot disagree
// about a block's size.
#include "engine/model/dtype.h"

#include "kernels/cpu/dequantize.h"

namespace polar {

std::string_view DTypeName(DType type) {
  switch (type) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kQ4_0: return "Q4_0";
    case DType::kQ4_1: return "Q4_1";
    case DType::kQ5_0: return "Q5_0";
    case DType::kQ5_1: return "Q5_1";
    case DType::kQ8_0: return "Q8_0";
    case DType::kQ2_K: return "Q2_K";
    case DType::kQ3_K: return "Q3_K";
    case DType::kQ4_K: return "Q4_K";
    case DType::kQ5_K: return "Q5_K";
    case DType::kQ6_K: return "Q6_K";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
  }
  return "unknown";
}

bool IsSupportedDType(uint32_t ggml_type) { return kernels::cpu::GgmlBlockElements(ggml_type) > 0; }

int64_t DTypeBlockElements(DType type) {
  return kernels::cpu::GgmlBlockElements(static_cast<uint32_t>(type));
}

int64_t DTypeBlockBytes(DType type) { return kernels::cpu::GgmlBlockBytes(static_cast<uint32_t>(type)); }

}  // namespace polar
