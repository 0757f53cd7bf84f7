// HostTensor helpers: shape arithmetic, owned fp32 tensors and conversion of
// any stored dtype to fp32 through the CPU dequantizer. Conversion re-checks
// that the byte size matches shape and dtype, because a HostTensor may come
// from any loader (or a test) and a mismatch must be an error, not an
// out-of-bounds read.
#include "engine/model/host_tensor.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/dequantize.h"

namespace polar {
namespace {

// Below this many elements the OpenMP fork costs more than it saves.
constexpr int64_t kParallelMinElements = 1 << 16;

// Debian's abseil has its own string_view type; convert for StrCat.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

int64_t HostTensor::NumElements() const {
  // -1 for a negative size or a product past int64. Zero sizes are checked
  // first so the answer does not depend on the order of the dimensions.
  bool empty = false;
  for (int64_t dim : shape) {
    if (dim < 0) return -1;
    empty |= dim == 0;
  }
  if (empty) return 0;
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(count, dim, &count)) return -1;
  }
  return count;
}

std::string HostTensor::ShapeString() const { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

HostTensor MakeOwnedF32(std::string name, std::vector<int64_t> shape, std::vector<float> values) {
  HostTensor tensor;
  tensor.name = std::move(name);
  tensor.dtype = DType::kF32;
  tensor.shape = std::move(shape);
  if (tensor.NumElements() != static_cast<int64_t>(values.size())) {
    // A caller bug, not bad input: the values were built for another shape.
    std::fprintf(stderr, "MakeOwnedF32(%s): %zu values for shape %s\n", tensor.name.c_str(),
                 values.size(), tensor.ShapeString().c_str());
    std::abort();
  }
  auto storage = std::make_shared<const std::vector<float>>(std::move(values));
  tensor.data = reinterpret_cast<const uint8_t*>(storage->data());
  tensor.nbytes = static_cast<int64_t>(storage->size() * sizeof(float));
  tensor.keep_alive = std::move(storage);
  return tensor;
}

absl::StatusOr<std::vector<float>> ToF32(const HostTensor& tensor) {
  const auto type = static_cast<uint32_t>(tensor.dtype);
  const auto error = [&](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' (",
                                                   Sv(DTypeName(tensor.dtype)), " ", tensor.ShapeString(),
                                                   "): ", Sv(what)));
  };
  if (!IsSupportedDType(type)) return error(absl::StrCat("unsupported dtype id ", type));
  const int64_t elements = tensor.NumElements();
  if (elements < 0) return error("invalid shape");
  // A rank-0 tensor is a single row of one element.
  const int64_t row_length = tensor.shape.empty() ? 1 : tensor.shape.back();
  const int64_t block_elements = DTypeBlockElements(tensor.dtype);
  if (row_length % block_elements != 0) {
    return error(absl::StrCat("row length ", row_length, " is not a multiple of the block size ",
                              block_elements));
  }
  int64_t expected_bytes = 0;
  if (__builtin_mul_overflow(elements / block_elements, DTypeBlockBytes(tensor.dtype), &expected_bytes)) {
    return error("byte size overflows");
  }
  if (tensor.nbytes != expected_bytes) {
    return error(absl::StrCat("holds ", tensor.nbytes, " bytes, shape and dtype need ", expected_bytes));
  }
  if (tensor.data == nullptr && expected_bytes > 0) return error("has no data");

  std::vector<float> values(static_cast<size_t>(elements));
  if (elements == 0) return values;
  const int64_t rows = elements / row_length;
  const int64_t row_bytes = row_length / block_elements * DTypeBlockBytes(tensor.dtype);
  const uint8_t* src = tensor.data;  // [rows, row_bytes]
  float* dst = values.data();        // [rows, row_length]
#pragma omp parallel for schedule(static) if (elements >= kParallelMinElements)
  for (int64_t row = 0; row < rows; ++row) {
    kernels::cpu::DequantizeRow(type, src + row * row_bytes, dst + row * row_length, row_length);
  }
  return values;
}

}  // namespace polar
