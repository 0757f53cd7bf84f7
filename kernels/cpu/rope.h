// Rotary position embedding (CPU reference), Hugging Face "rotate_half"
// layout: dimension i pairs with i + rotary_dim/2 inside each head. The
// inverse frequencies come precomputed (they carry any rope scaling), so the
// same kernel serves LLaMA-2, LLaMA-3 scaling and linear scaling.
#pragma once

#include <cstdint>

namespace polar::kernels::cpu {

// Rotates the first rotary_dim dims of every head of every token in place.
// x: [num_tokens, num_heads, head_dim]; positions: [num_tokens];
// inv_freq: [rotary_dim / 2].
void ApplyRope(float* x, const int32_t* positions, int64_t num_tokens, int64_t num_heads,
               int64_t head_dim, int64_t rotary_dim, const float* inv_freq);

}  // namespace polar::kernels::cpu
