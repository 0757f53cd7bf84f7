// A named, typed view of weight bytes in host memory: memory-mapped from a
// checkpoint file, or owned (synthetic weights, converted tensors). Loaders
// produce these; backends convert them to their own layout and dtype once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/dtype.h"

namespace polar {

struct HostTensor {
  std::string name;
  DType dtype = DType::kF32;
  // Outermost dimension first, as PyTorch prints it; the last one is contiguous.
  // A Linear weight is [out_features, in_features].
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  // Keeps `data` valid: the file mapping or the owned buffer.
  std::shared_ptr<const void> keep_alive;

  int64_t NumElements() const;
  std::string ShapeString() const;  // "[576, 1536]"
};

// A tensor of fp32 values that owns its storage.
HostTensor MakeOwnedF32(std::string name, std::vector<int64_t> shape, std::vector<float> values);

// Dequantizes/converts any supported dtype to fp32 (row-major, same shape).
// Errors name the tensor when the byte size does not match the shape.
absl::StatusOr<std::vector<float>> ToF32(const HostTensor& tensor);

}  // namespace polar
