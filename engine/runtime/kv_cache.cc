// See kv_cache.h.
#include "engine/runtime/kv_cache.h"

namespace polar {

BlockAllocator::BlockAllocator(int64_t num_blocks) : num_blocks_(num_blocks) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

bool BlockAllocator::Allocate(int64_t n, std::vector<int32_t>& out) {
  if (n > num_free()) return false;
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void BlockAllocator::Free(const std::vector<int32_t>& blocks) {
  free_.insert(free_.end(), blocks.rbegin(), blocks.rend());
}

bool SequenceKv::Reserve(BlockAllocator& allocator, int64_t new_length) {
  const int64_t needed = (new_length + block_size_ - 1) / block_size_;
  const int64_t have = static_cast<int64_t>(blocks_.size());
  return needed <= have || allocator.Allocate(needed - have, blocks_);
}

void SequenceKv::Release(BlockAllocator& allocator) {
  allocator.Free(blocks_);
  blocks_.clear();
  length_ = 0;
}

}  // namespace polar
