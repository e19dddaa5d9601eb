//===- FileSpoolTest.cpp - the temporary-file spool
//------------------------===//

#include "ds/support/FileSpool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

std::string fileBytes(int fd, uint64_t size) {
  std::string s(size, '\0');
  EXPECT_EQ(::pread(fd, s.data(), size, 0), static_cast<ssize_t>(size));
  return s;
}

TEST(FileSpool, AppendsAlignedReadsBackAndMaps) {
  absl::StatusOr<ds::FileSpool> spool = ds::FileSpool::create();
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ(spool->size(), 0u);
  absl::StatusOr<uint64_t> a = spool->append("abc", 3, 64);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 0u);
  std::vector<char> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>(i * 7 + 1);
  absl::StatusOr<uint64_t> b = spool->append(big.data(), big.size(), 64);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 64u); // zeros in between
  absl::StatusOr<uint64_t> c = spool->append("x", 1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, 64u + big.size());
  EXPECT_EQ(spool->size(), 64u + big.size() + 1);
  // Read back, across the 1 MiB chunks of the comparison.
  EXPECT_TRUE(spool->equals(*b, big.data(), big.size()));
  big[big.size() - 5] ^= 1;
  EXPECT_FALSE(spool->equals(*b, big.data(), big.size()));
  big[big.size() - 5] ^= 1;
  EXPECT_FALSE(spool->equals(*c, "xy", 2)); // past the end
  std::string bytes = fileBytes(spool->fd(), spool->size());
  EXPECT_EQ(bytes.substr(0, 3), "abc");
  EXPECT_EQ(bytes.substr(3, 61), std::string(61, '\0'));
  absl::StatusOr<std::shared_ptr<const uint8_t>> mapped = spool->map();
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  // The mapping outlives the spool.
  const uint64_t size = spool->size();
  *spool = ds::FileSpool();
  EXPECT_EQ(0, std::memcmp(mapped->get(), bytes.data(), size));
  EXPECT_EQ(0, std::memcmp(mapped->get() + 64, big.data(), big.size()));
}

TEST(FileSpool, ErrorsAreClearAndSticky) {
  absl::StatusOr<ds::FileSpool> none =
      ds::FileSpool::create("/nonexistent/ds-spool-dir");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.status().message())
                .find("cannot create a temporary file in /nonexistent"),
            std::string::npos)
      << none.status();
  ds::FileSpool empty;
  EXPECT_FALSE(empty.append("a", 1).ok());
  EXPECT_FALSE(empty.status().ok());
  EXPECT_FALSE(empty.append("b", 1).ok());
  EXPECT_EQ(empty.size(), 0u);
}

TEST(FileSpool, CopyAllCopiesFromAnOffset) {
  absl::StatusOr<ds::FileSpool> from = ds::FileSpool::create();
  absl::StatusOr<ds::FileSpool> to = ds::FileSpool::create();
  ASSERT_TRUE(from.ok() && to.ok());
  std::string text = "0123456789abcdef";
  ASSERT_TRUE(from->append(text.data(), text.size()).ok());
  ASSERT_TRUE(ds::writeAll(to->fd(), "<", 1));
  ASSERT_TRUE(ds::copyAll(from->fd(), to->fd(), 6, 4));
  EXPECT_EQ(fileBytes(to->fd(), 7), "<456789");
}

} // namespace
