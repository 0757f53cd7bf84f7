// Conversion of stored weights (plain fp32/fp16/bf16 and GGML block
// quantizations) to fp32. The CPU backend and the loaders use this to bring any
// checkpoint to one dtype, and it is the reference the CUDA dequantizers are
// checked against, so results are bit-exact with GGML's dequantize_row_*
// (ggml-quants.c) and with python gguf.quants: every product and sum is done
// in fp32 in GGML's order, with no fused multiply-add.
//
// Type ids are GGML's (F32 = 0, F16 = 1, Q4_0 = 2, ..., BF16 = 30). Rows are a
// whole number of blocks; a block's byte layout is GGML's little-endian one.
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// GGML type ids this file understands.
enum GgmlType : uint32_t {
  kGgmlF32 = 0,
  kGgmlF16 = 1,
  kGgmlQ4_0 = 2,
  kGgmlQ4_1 = 3,
  kGgmlQ5_0 = 6,
  kGgmlQ5_1 = 7,
  kGgmlQ8_0 = 8,
  kGgmlQ2_K = 10,
  kGgmlQ3_K = 11,
  kGgmlQ4_K = 12,
  kGgmlQ5_K = 13,
  kGgmlQ6_K = 14,
  kGgmlBF16 = 30,
};

// Elements per block (1 for plain types) and bytes per block; both 0 for a
// type this file cannot dequantize.
int64_t GgmlBlockElements(uint32_t ggml_type);
int64_t GgmlBlockBytes(uint32_t ggml_type);

// Dequantizes n elements (n >= 0, a multiple of the type's block size) from
// `src` (n / block_elements blocks, no alignment needed) into dst[n]. Returns
// false, writing nothing, for an unknown type or an n that is not a whole
// number of blocks.
bool DequantizeRow(uint32_t ggml_type, const void* src, float* dst, int64_t n);

// Per-type entry points; `n` must be a multiple of the block size
// (32 for Q4_0..Q8_0, 256 for the K quants).
void DequantizeRowF32(const void* src, float* dst, int64_t n);
void DequantizeRowF16(const void* src, float* dst, int64_t n);
void DequantizeRowBF16(const void* src, float* dst, int64_t n);
void DequantizeRowQ4_0(const void* src, float* dst, int64_t n);
void DequantizeRowQ4_1(const void* src, float* dst, int64_t n);
void DequantizeRowQ5_0(const void* src, float* dst, int64_t n);
void DequantizeRowQ5_1(const void* src, float* dst, int64_t n);
void DequantizeRowQ8_0(const void* src, float* dst, int64_t n);
void DequantizeRowQ2_K(const void* src, float* dst, int64_t n);
void DequantizeRowQ3_K(const void* src, float* dst, int64_t n);
void DequantizeRowQ4_K(const void* src, float* dst, int64_t n);
void DequantizeRowQ5_K(const void* src, float* dst, int64_t n);
void DequantizeRowQ6_K(const void* src, float* dst, int64_t n);

}  // namespace polar::kernels::cpu
