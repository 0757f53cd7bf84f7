// See backend.h: StepBatch housekeeping shared by all backends.
#include "absl/strings/str_format.h"
#include "engine/backend/backend.h"

namespace polar {

void StepBatch::Clear() {
  token_ids.clear();
  positions.clear();
  kv_slots.clear();
  q_indptr.clear();
  context_lens.clear();
  block_indptr.clear();
  block_ids.clear();
  logit_rows.clear();
  density.clear();
}

absl::Status StepBatch::Validate(const KvCacheLayout& kv) const {
  const int64_t n = num_tokens();
  const int64_t s = num_seqs();
  if (positions.size() != token_ids.size() || kv_slots.size() != token_ids.size()) {
    return absl::InternalError("step batch: token, position and slot counts differ");
  }
  if (static_cast<int64_t>(q_indptr.size()) != s + 1 ||
      static_cast<int64_t>(block_indptr.size()) != s + 1 || q_indptr.front() != 0 ||
      q_indptr.back() != n || block_indptr.front() != 0 ||
      block_indptr.back() != static_cast<int32_t>(block_ids.size())) {
    return absl::InternalError("step batch: malformed indptr arrays");
  }
  for (int64_t i = 0; i < s; ++i) {
    const int64_t q_len = q_indptr[i + 1] - q_indptr[i];
    const int64_t blocks = block_indptr[i + 1] - block_indptr[i];
    if (q_len < 0 || context_lens[i] < q_len || context_lens[i] > blocks * kv.block_size) {
      return absl::InternalError(absl::StrFormat(
          "step batch: sequence %d has %d new tokens, context %d, %d blocks", i, q_len,
          context_lens[i], blocks));
    }
  }
  for (int32_t b : block_ids) {
    if (b < 0 || b >= kv.num_blocks) return absl::InternalError("step batch: block id out of range");
  }
  for (int64_t slot : kv_slots) {
    if (slot < 0 || slot >= kv.num_blocks * kv.block_size) {
      return absl::InternalError("step batch: KV slot out of range");
    }
  }
  if (!density.empty() && static_cast<int64_t>(density.size()) != s) {
    return absl::InternalError("step batch: density count differs from the sequence count");
  }
  for (float d : density) {
    if (!(d > 0.0f && d <= 1.0f)) return absl::InternalError(absl::StrFormat("step batch: density %g", d));
  }
  for (int32_t r : logit_rows) {
    if (r < 0 || r >= n) return absl::InternalError("step batch: logit row out of range");
  }
  return absl::OkStatus();
}

}  // namespace polar
