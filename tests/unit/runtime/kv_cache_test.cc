// Block allocator and per-sequence block tables: all-or-nothing allocation,
// slot arithmetic, and release returning every block.
#include "engine/runtime/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace polar {
namespace {

TEST(KvCacheTest, ReserveGrowsByBlocksAndReleases) {
  BlockAllocator allocator(5);
  SequenceKv a(4), b(4);
  ASSERT_TRUE(a.Reserve(allocator, 1));
  EXPECT_EQ(a.blocks().size(), 1u);
  ASSERT_TRUE(a.Reserve(allocator, 4));
  EXPECT_EQ(a.blocks().size(), 1u);
  ASSERT_TRUE(a.Reserve(allocator, 9));
  EXPECT_EQ(a.blocks().size(), 3u);
  EXPECT_EQ(allocator.num_free(), 2);
  // b needs 3 blocks, only 2 are free: nothing is taken.
  EXPECT_FALSE(b.Reserve(allocator, 12));
  EXPECT_TRUE(b.blocks().empty());
  EXPECT_EQ(allocator.num_free(), 2);
  ASSERT_TRUE(b.Reserve(allocator, 8));
  std::set<int32_t> all(a.blocks().begin(), a.blocks().end());
  all.insert(b.blocks().begin(), b.blocks().end());
  EXPECT_EQ(all.size(), 5u) << "blocks are distinct";
  for (int64_t pos = 0; pos < 9; ++pos) {
    EXPECT_EQ(a.Slot(pos), a.blocks()[pos / 4] * 4 + pos % 4);
  }
  a.Release(allocator);
  EXPECT_EQ(allocator.num_free(), 3);
  EXPECT_EQ(a.length(), 0);
  b.Release(allocator);
  EXPECT_EQ(allocator.num_free(), 5);
}

}  // namespace
}  // namespace polar
