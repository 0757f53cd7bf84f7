// libFuzzer target for the GGUF reader: any byte string must either parse or
// give an error, never crash, read out of bounds or allocate without bound.
// A file that parses must keep its promises: every listed tensor has a view
// inside the input, and small ones convert to fp32 (the dequantizer then
// reads exactly the bytes the view covers, so ASan checks the bounds).
//
// Seeds: tests/fuzz/corpus/gguf (tests/fuzz/make_gguf_seeds.py). Run e.g.
//   build-fuzz/bin/gguf_fuzzer -runs=1000000 fuzz-corpus/gguf tests/fuzz/corpus/gguf
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <variant>

#include "engine/model/gguf_file.h"
#include "engine/model/host_tensor.h"

namespace {

// Element budget for ToF32 per tensor, so one input cannot take long.
constexpr int64_t kMaxConvertedElements = 1 << 16;

[[noreturn]] void Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "gguf_fuzzer: %s: %s\n", what.c_str(), std::string(status.message()).c_str());
  std::abort();
}

// Reads every metadata value through the typed getters; kind mismatches are
// errors, never crashes.
void TouchMetadata(const polar::GgufFile& file) {
  for (const std::string& key : file.metadata_keys()) {
    const polar::GgufValue* value = file.Find(key);
    if (value == nullptr) Fail("listed key has no value: " + key, absl::OkStatus());
    (void)file.GetInt(key);
    (void)file.GetFloat(key);
    (void)file.GetBool(key);
    (void)file.GetString(key);
    (void)file.GetStringArray(key);
    (void)file.GetIntArray(key);
    (void)file.GetFloatArray(key);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = polar::GgufFile::FromBuffer(std::span<const uint8_t>(data, size), "fuzz-input");
  if (!file.ok()) return 0;
  TouchMetadata(**file);
  for (const polar::GgufTensorInfo& info : (*file)->tensors()) {
    auto tensor = (*file)->Tensor(info.name);
    if (!tensor.ok()) Fail("listed tensor has no view: " + info.name, tensor.status());
    if (tensor->nbytes > 0 &&
        (tensor->data < data || tensor->data + tensor->nbytes > data + size)) {
      Fail("tensor view outside the input: " + info.name, absl::OkStatus());
    }
    const int64_t elements = tensor->NumElements();
    if (elements < 0) Fail("parsed tensor with an invalid shape: " + info.name, absl::OkStatus());
    if (elements <= kMaxConvertedElements) {
      auto values = polar::ToF32(*tensor);
      if (!values.ok()) Fail("parsed tensor does not convert: " + info.name, values.status());
      if (static_cast<int64_t>(values->size()) != elements) {
        Fail("wrong element count: " + info.name, absl::OkStatus());
      }
    }
  }
  return 0;
}
