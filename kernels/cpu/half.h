// Scalar conversions between fp32 and the two 16-bit float formats stored in
// checkpoints: IEEE half (fp16) and bfloat16. Header-only and bit-exact, so
// every kernel, loader and test converts the same way:
//  - Fp16ToFp32 / Bf16ToFp32 are exact (every 16-bit value, subnormals, inf and
//    NaN payloads included).
//  - Fp32ToFp16 rounds to nearest even like numpy's astype(float16) and the
//    F16C instruction; overflow gives inf, NaN stays NaN (quiet).
//  - Fp32ToBf16 rounds to nearest even and quiets NaN, as GGML's
//    ggml_compute_fp32_to_bf16 does.
// Plain bit manipulation rather than intrinsics so the header compiles for any
// target and in device-free tests.
#pragma once

#include <cstdint>
#include <cstring>

namespace polar::kernels::cpu {

inline float BitsToFp32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t Fp32ToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

inline float Fp16ToFp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) {  // inf or NaN: keep the payload
    return BitsToFp32(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent != 0) {  // normal: rebias 15 -> 127
    return BitsToFp32(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
  if (mantissa == 0) return BitsToFp32(sign);  // signed zero
  // Subnormal half: value = mantissa * 2^-24; normalise it for fp32.
  uint32_t e = 113;  // exponent of 2^-14 in fp32 bias
  while ((mantissa & 0x400u) == 0) {
    mantissa <<= 1;
    --e;
  }
  return BitsToFp32(sign | (e << 23) | ((mantissa & 0x3ffu) << 13));
}

inline uint16_t Fp32ToFp16(float f) {
  const uint32_t x = Fp32ToBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: keep the top payload bits, force quiet
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520: inf (also inf itself)
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (abs < 0x38800000u) {  // below 2^-14: half subnormal or zero
    if (abs < 0x33000000u) return sign;  // below 2^-25: rounds to zero (ties to even 0)
    // Shift the full 24-bit significand so that bit 0 is 2^-24, then round
    // half to even on the bits shifted out.
    const uint32_t exponent = abs >> 23;  // 102..112
    const uint32_t significand = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t half = significand >> shift;
    const uint32_t rest = significand & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  // Normal: rebias and round the 13 dropped mantissa bits to nearest even; a
  // carry out of the mantissa correctly bumps the exponent.
  uint32_t half = ((abs - 0x38000000u) >> 13);
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

inline float Bf16ToFp32(uint16_t b) { return BitsToFp32(static_cast<uint32_t>(b) << 16); }

inline uint16_t Fp32ToBf16(float f) {
  const uint32_t x = Fp32ToBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate and force quiet
    return static_cast<uint16_t>((x >> 16) | 0x40u);
  }
  return static_cast<uint16_t>((x + (0x7fffu + ((x >> 16) & 1u))) >> 16);
}

}  // namespace polar::kernels::cpu
