// libFuzzer target for the safetensors reader: parse arbitrary bytes as a
// safetensors file, then view every tensor and convert it to fp32, so the
// header checks, the offset/size validation and the conversion all see
// hostile input. Any crash, sanitizer report or leak is a bug.
//   build: CC=clang CXX=clang++ cmake -DPOLAR_BUILD_FUZZERS=ON ...; ninja safetensors_fuzzer
//   run:   safetensors_fuzzer -runs=1000000 tests/fuzz/corpus/safetensors
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/model/safetensors_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = polar::SafetensorsFile::FromBuffer(std::span<const uint8_t>(data, size), "fuzz-input");
  if (!file.ok()) return 0;
  for (const std::string& name : (*file)->TensorNames()) {
    auto tensor = (*file)->Tensor(name);
    if (!tensor.ok()) continue;  // an unreadable dtype: a clean error is fine
    auto values = polar::ToF32(*tensor);
    // Every tensor that passed validation must convert, and hold exactly
    // product(shape) values.
    if (!values.ok() || static_cast<int64_t>(values->size()) != tensor->NumElements()) __builtin_trap();
    // Read every value so a bad pointer would show up under ASan.
    float sum = 0.0f;
    for (float v : *values) sum += v;
    volatile float sink = sum;
    (void)sink;
  }
  return 0;
}
