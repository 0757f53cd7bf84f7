// What the gpu/ tests share: skipping where no CUDA device exists (CI and
// development machines build and run them harmlessly), device memory that
// frees itself, and rounding to the 16-bit types the kernels read.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/half.h"

// In the namespace of the kernels under test, where the tests themselves live.
namespace polar::kernels::cuda {

inline bool HaveCudaDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define SKIP_WITHOUT_GPU()                                                                   \
  if (!::polar::kernels::cuda::HaveCudaDevice())                                             \
  GTEST_SKIP() << "no CUDA device here: this test runs on the GPU machine (ctest -L gpu)"

// Device memory that frees itself (get() is null where cudaMalloc failed).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&ptr_, std::max<size_t>(bytes, 256)) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <typename T>
  static DeviceBuffer From(const std::vector<T>& host) {
    DeviceBuffer b(host.size() * sizeof(T));
    if (b.ptr_ != nullptr && !host.empty()) cudaMemcpy(b.ptr_, host.data(), b.bytes_, cudaMemcpyHostToDevice);
    return b;
  }
  template <typename T>
  std::vector<T> To(size_t n) const {
    std::vector<T> host(n);
    if (n > 0) EXPECT_EQ(cudaMemcpy(host.data(), ptr_, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// fp32 to and from the 16-bit type of a kernel's dtype enum (MlpDtype,
// AttentionDtype, RouterDtype: each kFp16 or kBf16), rounded as the CPU
// references see it.
template <typename Dtype>
uint16_t ToBits(float x, Dtype dtype) {
  return dtype == Dtype::kFp16 ? cpu::Fp32ToFp16(x) : cpu::Fp32ToBf16(x);
}
template <typename Dtype>
float FromBits(uint16_t x, Dtype dtype) {
  return dtype == Dtype::kFp16 ? cpu::Fp16ToFp32(x) : cpu::Bf16ToFp32(x);
}
template <typename Dtype>
const char* DtypeName(Dtype dtype) {
  return dtype == Dtype::kFp16 ? "fp16" : "bf16";
}

}  // namespace polar::kernels::cuda
