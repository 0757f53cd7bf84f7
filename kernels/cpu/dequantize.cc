// Reference dequantization of GGML block formats to fp32 (see dequantize.h).
//
// Block layouts (little-endian, packed, no padding; d/dmin/m are fp16):
//   Q4_0 (32 elems, 18 B): d, qs[16]            x = (nibble - 8) * d
//   Q4_1 (32 elems, 20 B): d, m, qs[16]         x = nibble * d + m
//   Q5_0 (32 elems, 22 B): d, qh[4], qs[16]     x = (nibble | hbit << 4) - 16) * d
//   Q5_1 (32 elems, 24 B): d, m, qh[4], qs[16]  x = (nibble | hbit << 4) * d + m
//   Q8_0 (32 elems, 34 B): d, qs[32] (int8)     x = q * d
// In the 32-element formats byte j holds element j (low nibble) and element
// j + 16 (high nibble); bit j of qh is the fifth bit of element j.
//   Q2_K (256, 84 B):  scales[16], qs[64], d, dmin
//   Q3_K (256, 110 B): hmask[32], qs[64], scales[12], d
//   Q4_K (256, 144 B): d, dmin, scales[12], qs[128]
//   Q5_K (256, 176 B): d, dmin, scales[12], qh[32], qs[128]
//   Q6_K (256, 210 B): ql[128], qh[64], scales[16] (int8), d
// The K formats split a block into sub-blocks with their own 4/6/8-bit scales;
// the element order inside a block follows GGML's dequantize_row_* loops.
//
// Bit-exactness: GGML and python gguf.quants evaluate e.g. d * q + m as a
// rounded product and then a rounded sum, in a fixed order (Q6_K's
// (d * scale) * q is not d * (scale * q)); the loops below keep that order.
// Today's products are exact in fp32 (an fp16 scale times small integers), so
// a fused multiply-add would not change them, but contraction is switched off
// for this file anyway so that stays true for any format added later.
#include "kernels/cpu/dequantize.h"

#include <cstring>

#include "kernels/cpu/half.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace polar::kernels::cpu {
namespace {

constexpr int kQK = 32;    // elements per block of the Q4_0..Q8_0 formats
constexpr int kQKK = 256;  // elements per block of the K formats

// Reads an fp16 stored at any alignment.
inline float LoadF16(const uint8_t* p) {
  return Fp16ToFp32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

inline uint32_t LoadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// Q4_K/Q5_K pack eight 6-bit scales and eight 6-bit mins into 12 bytes: the
// first four of each sit in the low 6 bits of bytes 0-3 (scales) and 4-7
// (mins); the last four are split between bytes 8-11 (low 4 bits) and the top
// 2 bits of bytes 0-7.
inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace

int64_t GgmlBlockElements(uint32_t ggml_type) {
  switch (ggml_type) {
    case kGgmlF32:
    case kGgmlF16:
    case kGgmlBF16:
      return 1;
    case kGgmlQ4_0:
    case kGgmlQ4_1:
    case kGgmlQ5_0:
    case kGgmlQ5_1:
    case kGgmlQ8_0:
      return kQK;
    case kGgmlQ2_K:
    case kGgmlQ3_K:
    case kGgmlQ4_K:
    case kGgmlQ5_K:
    case kGgmlQ6_K:
      return kQKK;
    default:
      return 0;
  }
}

int64_t GgmlBlockBytes(uint32_t ggml_type) {
  switch (ggml_type) {
    case kGgmlF32: return 4;
    case kGgmlF16: return 2;
    case kGgmlBF16: return 2;
    case kGgmlQ4_0: return 2 + kQK / 2;
    case kGgmlQ4_1: return 4 + kQK / 2;
    case kGgmlQ5_0: return 6 + kQK / 2;
    case kGgmlQ5_1: return 8 + kQK / 2;
    case kGgmlQ8_0: return 2 + kQK;
    case kGgmlQ2_K: return kQKK / 16 + kQKK / 4 + 4;
    case kGgmlQ3_K: return kQKK / 8 + kQKK / 4 + 12 + 2;
    case kGgmlQ4_K: return 4 + 12 + kQKK / 2;
    case kGgmlQ5_K: return 4 + 12 + kQKK / 8 + kQKK / 2;
    case kGgmlQ6_K: return kQKK / 2 + kQKK / 4 + kQKK / 16 + 2;
    default: return 0;
  }
}

void DequantizeRowF32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantizeRowF16(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint8_t*>(src);  // [n] fp16
  for (int64_t i = 0; i < n; ++i) dst[i] = LoadF16(x + 2 * i);
}

void DequantizeRowBF16(const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint8_t*>(src);  // [n] bf16
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = Bf16ToFp32(static_cast<uint16_t>(x[2 * i] | (x[2 * i + 1] << 8)));
  }
}

void DequantizeRowQ4_0(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b, block += 18, dst += kQK) {
    const float d = LoadF16(block);
    const uint8_t* qs = block + 2;  // [16]
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = static_cast<float>((qs[j] & 0x0F) - 8) * d;
      dst[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantizeRowQ4_1(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b, block += 20, dst += kQK) {
    const float d = LoadF16(block);
    const float m = LoadF16(block + 2);
    const uint8_t* qs = block + 4;  // [16]
    for (int j = 0; j < kQK / 2; ++j) {
      dst[j] = static_cast<float>(qs[j] & 0x0F) * d + m;
      dst[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

void DequantizeRowQ5_0(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b, block += 22, dst += kQK) {
    const float d = LoadF16(block);
    const uint32_t qh = LoadU32(block + 2);
    const uint8_t* qs = block + 6;  // [16]
    for (int j = 0; j < kQK / 2; ++j) {
      const int high0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int high1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      dst[j] = static_cast<float>(((qs[j] & 0x0F) | high0) - 16) * d;
      dst[j + kQK / 2] = static_cast<float>(((qs[j] >> 4) | high1) - 16) * d;
    }
  }
}

void DequantizeRowQ5_1(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b, block += 24, dst += kQK) {
    const float d = LoadF16(block);
    const float m = LoadF16(block + 2);
    const uint32_t qh = LoadU32(block + 4);
    const uint8_t* qs = block + 8;  // [16]
    for (int j = 0; j < kQK / 2; ++j) {
      const int high0 = static_cast<int>((qh >> j) & 1u) << 4;
      const int high1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
      dst[j] = static_cast<float>((qs[j] & 0x0F) | high0) * d + m;
      dst[j + kQK / 2] = static_cast<float>((qs[j] >> 4) | high1) * d + m;
    }
  }
}

void DequantizeRowQ8_0(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQK; ++b, block += 34, dst += kQK) {
    const float d = LoadF16(block);
    const uint8_t* qs = block + 2;  // [32] int8
    for (int j = 0; j < kQK; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(qs[j])) * d;
  }
}

void DequantizeRowQ2_K(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b, block += 84) {
    const uint8_t* scales = block;    // [16]: low nibble scale, high nibble min
    const uint8_t* q = block + 16;    // [64]: four 2-bit values per byte
    const float d = LoadF16(block + 80);
    const float dmin = LoadF16(block + 82);
    int is = 0;
    // Each 128-element half reads 32 bytes four times, two bits at a time;
    // each 16-element run has its own scale byte.
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = scales[is++];
          const float dl = d * static_cast<float>(sc & 0xF);
          const float ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) {
            *dst++ = dl * static_cast<float>((q[l + 16 * part] >> shift) & 3) - ml;
          }
        }
      }
    }
  }
}

void DequantizeRowQ3_K(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b, block += 110) {
    const uint8_t* hmask = block;     // [32]: third bit, one bit-plane per 32 elements
    const uint8_t* q = block + 32;    // [64]: low two bits
    const uint8_t* packed = block + 96;  // [12]: sixteen 6-bit scales
    const float d = LoadF16(block + 108);
    // Scale i has its low 4 bits in bytes 0-7 (i < 8: low nibble of byte i,
    // else high nibble of byte i - 8) and its top 2 bits in bytes 8-11
    // (byte 8 + i % 4, bits 2 * (i / 4)); stored with a +32 bias.
    int scales[16];
    for (int i = 0; i < 16; ++i) {
      const int low = i < 8 ? (packed[i] & 0xF) : (packed[i - 8] >> 4);
      const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
      scales[i] = (low | (high << 4)) - 32;
    }
    int is = 0;
    uint8_t m = 1;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d * static_cast<float>(scales[is++]);
          for (int l = 16 * part; l < 16 * part + 16; ++l) {
            // The stored bit is set when the value is NOT offset by -4.
            const int value = ((q[l] >> shift) & 3) - ((hmask[l] & m) ? 0 : 4);
            *dst++ = dl * static_cast<float>(value);
          }
        }
      }
    }
  }
}

void DequantizeRowQ4_K(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b, block += 144) {
    const float d = LoadF16(block);
    const float dmin = LoadF16(block + 2);
    const uint8_t* scales = block + 4;  // [12]
    const uint8_t* q = block + 16;      // [128]
    // 64 elements per step: 32 low nibbles, then the 32 high nibbles of the
    // same bytes, each half with its own scale and min.
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      ScaleMinK4(is, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      ScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *dst++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    }
  }
}

void DequantizeRowQ5_K(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b, block += 176) {
    const float d = LoadF16(block);
    const float dmin = LoadF16(block + 2);
    const uint8_t* scales = block + 4;  // [12]
    const uint8_t* qh = block + 16;     // [32]: fifth bits, bit-plane per 32 elements
    const uint8_t* ql = block + 48;     // [128]
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32) {
      uint8_t sc, m;
      ScaleMinK4(is, scales, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      ScaleMinK4(is + 1, scales, &sc, &m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        *dst++ = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *dst++ = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
      }
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void DequantizeRowQ6_K(const void* src, float* dst, int64_t n) {
  const auto* block = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kQKK; ++b, block += 210) {
    const uint8_t* ql = block;                                         // [128]: low 4 bits
    const uint8_t* qh = block + 128;                                   // [64]: high 2 bits
    const auto* sc = reinterpret_cast<const int8_t*>(block + 192);  // [16]
    const float d = LoadF16(block + 208);
    // Each 128-element half: 64 ql bytes (two nibbles each) and 32 qh bytes
    // (four 2-bit fields each) give four runs of 32; scales change every 16.
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        dst[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        dst[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        dst[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        dst[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

bool DequantizeRow(uint32_t ggml_type, const void* src, float* dst, int64_t n) {
  const int64_t block = GgmlBlockElements(ggml_type);
  if (block == 0 || n < 0 || n % block != 0) return false;
  if (n == 0) return true;
  switch (ggml_type) {
    case kGgmlF32: DequantizeRowF32(src, dst, n); return true;
    case kGgmlF16: DequantizeRowF16(src, dst, n); return true;
    case kGgmlBF16: DequantizeRowBF16(src, dst, n); return true;
    case kGgmlQ4_0: DequantizeRowQ4_0(src, dst, n); return true;
    case kGgmlQ4_1: DequantizeRowQ4_1(src, dst, n); return true;
    case kGgmlQ5_0: DequantizeRowQ5_0(src, dst, n); return true;
    case kGgmlQ5_1: DequantizeRowQ5_1(src, dst, n); return true;
    case kGgmlQ8_0: DequantizeRowQ8_0(src, dst, n); return true;
    case kGgmlQ2_K: DequantizeRowQ2_K(src, dst, n); return true;
    case kGgmlQ3_K: DequantizeRowQ3_K(src, dst, n); return true;
    case kGgmlQ4_K: DequantizeRowQ4_K(src, dst, n); return true;
    case kGgmlQ5_K: DequantizeRowQ5_K(src, dst, n); return true;
    case kGgmlQ6_K: DequantizeRowQ6_K(src, dst, n); return true;
    default: return false;
  }
}

}  // namespace polar::kernels::cpu
