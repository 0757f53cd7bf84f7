// The paged KV cache's bookkeeping, shared by every backend: a pool of
// fixed-size blocks and, per sequence, the list of blocks holding its keys and
// values (its block table). The backend owns the memory; this only hands out
// block ids.
#pragma once

#include <cstdint>
#include <vector>

namespace polar {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // Takes `n` blocks, all or none; false when fewer are free.
  bool Allocate(int64_t n, std::vector<int32_t>& out);
  void Free(const std::vector<int32_t>& blocks);

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;  // a stack: recently freed blocks are reused first
};

// One sequence's block table and length.
class SequenceKv {
 public:
  explicit SequenceKv(int64_t block_size) : block_size_(block_size) {}
  int64_t length() const { return length_; }
  const std::vector<int32_t>& blocks() const { return blocks_; }
  // Makes room for `new_length` tokens, allocating blocks as needed; false
  // (and nothing taken) if the pool cannot supply them.
  bool Reserve(BlockAllocator& allocator, int64_t new_length);
  void set_length(int64_t length) { length_ = length; }
  // The cache slot (block * block_size + offset) of a position < capacity.
  int64_t Slot(int64_t position) const {
    return static_cast<int64_t>(blocks_[position / block_size_]) * block_size_ + position % block_size_;
  }
  void Release(BlockAllocator& allocator);

 private:
  int64_t block_size_;
  int64_t length_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace polar
