//===- SafeTensorsTest.cpp - safetensors, .npy and dtype tests ------------===//
//
// Round trips through the writer and reader, one test per kind of bad file
// (each must fail with a message naming the file and tensor), sharded
// checkpoints, .npy files and the narrow-float conversions.
//
//===----------------------------------------------------------------------===//

#include "ds/support/SafeTensors.h"
#include "ds/support/HostTensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <string>
#include <thread>
#include <unistd.h>

using namespace ds;

namespace {

class TempDir {
public:
  TempDir() {
    char tmpl[] = "/tmp/ds-support-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string path;
};

TensorToWrite floats(const std::string &name, std::vector<int64_t> shape,
                     std::vector<float> values) {
  TensorToWrite t{name, DType::F32, std::move(shape), {}};
  t.bytes.resize(values.size() * 4);
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

/// A raw safetensors image from a header text and a data size.
std::string image(const std::string &header, size_t dataBytes) {
  std::string out;
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  return out + header + std::string(dataBytes, '\0');
}

std::string openError(const std::string &bytes) {
  auto file = SafeTensorsFile::fromBuffer(
      reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), "f.st");
  return file.ok() ? "" : std::string(file.status().message());
}

TEST(SafeTensors, RoundTrip) {
  TempDir dir;
  std::string path = dir.path + "/model.safetensors";
  TensorToWrite ids{"ids", DType::I64, {2}, std::vector<uint8_t>(16, 0)};
  ids.bytes[0] = 7;
  ASSERT_TRUE(writeSafeTensors(
                  path, {floats("a.weight", {2, 3}, {1, 2, 3, 4, 5, 6}), ids},
                  {{"format", "pt"}})
                  .ok());
  auto file = SafeTensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  const TensorView *a = (*file)->find("a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->floatAt(5), 6.0f);
  EXPECT_EQ((*file)->find("ids")->intAt(0), 7);
  EXPECT_EQ((*file)->find("missing"), nullptr);
}

TEST(SafeTensorsWriter, StreamsTensorsInOrder) {
  // Many tensors added one at a time (the caller frees each), read back in
  // the order added, byte for byte; nothing is left beside the file.
  TempDir dir;
  std::string path = dir.path + "/stream.safetensors";
  {
    SafeTensorsWriter writer(path);
    for (int i = 0; i < 300; ++i) {
      std::vector<float> v(static_cast<size_t>(i % 7 + 1));
      for (size_t j = 0; j < v.size(); ++j)
        v[j] = static_cast<float>(i * 10 + static_cast<int>(j));
      ASSERT_TRUE(writer
                      .add(floats("t" + std::to_string(i),
                                  {static_cast<int64_t>(v.size())}, v))
                      .ok());
    }
    EXPECT_EQ(writer.size(), 300u);
    ASSERT_TRUE(writer.finish({{"format", "ds-test"}}).ok());
  }
  auto file = SafeTensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "ds-test");
  uint64_t lastOffset = 0;
  for (int i = 0; i < 300; ++i) {
    const TensorView *t = (*file)->find("t" + std::to_string(i));
    ASSERT_NE(t, nullptr) << i;
    ASSERT_EQ(t->numElements(), i % 7 + 1);
    for (int64_t j = 0; j < t->numElements(); ++j)
      ASSERT_EQ(t->floatAt(j), static_cast<float>(i * 10 + j));
    EXPECT_GE(static_cast<uint64_t>(t->data - (*file)->find("t0")->data),
              lastOffset)
        << "tensor " << i << " is not after the one added before it";
    lastOffset = static_cast<uint64_t>(t->data - (*file)->find("t0")->data);
  }
  int entries = 0;
  if (DIR *d = opendir(dir.path.c_str())) {
    while (dirent *e = readdir(d))
      entries += e->d_name[0] != '.';
    closedir(d);
  }
  EXPECT_EQ(entries, 1) << "a spool or temporary file was left behind";
}

TEST(SafeTensorsWriter, ReservedTensorsAreWrittenInParts) {
  // A reserved tensor is written in parts, out of order and from several
  // threads, between tensors added whole; the file is as if it had been
  // added whole. A part outside its tensor makes finish() fail.
  TempDir dir;
  std::string path = dir.path + "/parts.safetensors";
  const int64_t n = 4096;
  {
    SafeTensorsWriter writer(path);
    ASSERT_TRUE(writer.add(floats("before", {2}, {1, 2})).ok());
    absl::StatusOr<size_t> big = writer.reserve("big", DType::F32, {n});
    ASSERT_TRUE(big.ok()) << big.status();
    ASSERT_TRUE(writer.add(floats("after", {1}, {3})).ok());
    std::vector<std::thread> threads;
    for (int part = 3; part >= 0; --part)
      threads.emplace_back([&, part] {
        std::vector<float> v(n / 4);
        for (int64_t i = 0; i < n / 4; ++i)
          v[i] = static_cast<float>(part * (n / 4) + i);
        EXPECT_TRUE(writer
                        .writeAt(*big, part * (n / 4) * sizeof(float), v.data(),
                                 v.size() * sizeof(float))
                        .ok());
      });
    for (std::thread &t : threads)
      t.join();
    ASSERT_TRUE(writer.finish().ok());
  }
  auto file = SafeTensorsFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView *big = (*file)->find("big");
  ASSERT_NE(big, nullptr);
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(big->floatAt(i), static_cast<float>(i)) << i;
  EXPECT_EQ((*file)->find("after")->floatAt(0), 3.0f);
  EXPECT_EQ((*file)->find("before")->floatAt(1), 2.0f);
  // Dropping pages of part of a mapped tensor keeps its values.
  big->releasePages(100, 2000);
  EXPECT_EQ(big->floatAt(1500), 1500.0f);

  std::string badPath = dir.path + "/outside.safetensors";
  {
    SafeTensorsWriter writer(badPath);
    absl::StatusOr<size_t> t = writer.reserve("t", DType::F32, {4});
    ASSERT_TRUE(t.ok());
    float x = 1.0f;
    EXPECT_FALSE(writer.writeAt(*t, 16, &x, sizeof(x)).ok());
    EXPECT_FALSE(writer.finish().ok());
  }
  {
    SafeTensorsWriter writer(badPath);
    ASSERT_TRUE(writer.reserve("t", DType::F32, {4}).ok());
    EXPECT_FALSE(writer.reserve("t", DType::F32, {1}).ok()); // given twice
    EXPECT_FALSE(writer.finish().ok());
  }
  EXPECT_NE(access(badPath.c_str(), F_OK), 0);
}

TEST(SafeTensorsWriter, AnErrorSticksAndNothingIsWritten) {
  TempDir dir;
  std::string path = dir.path + "/bad.safetensors";
  {
    SafeTensorsWriter writer(path);
    ASSERT_TRUE(writer.add(floats("a", {2}, {1, 2})).ok());
    absl::Status twice = writer.add(floats("a", {1}, {3}));
    EXPECT_NE(std::string(twice.message()).find("tensor 'a' given twice"),
              std::string::npos)
        << twice;
    TensorToWrite wrong{"b", DType::F32, {3}, std::vector<uint8_t>(8, 0)};
    EXPECT_FALSE(writer.add(wrong).ok());
    EXPECT_FALSE(writer.finish().ok());
  }
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "a failed writer left a file";
  // A directory that does not exist: a clear error naming the path.
  SafeTensorsWriter nowhere(dir.path + "/no/such/dir/x.safetensors");
  absl::Status st = nowhere.add(floats("a", {1}, {1}));
  EXPECT_NE(std::string(st.message()).find("x.safetensors: cannot create"),
            std::string::npos)
      << st;
}

TEST(SafeTensors, Truncated) {
  EXPECT_NE(openError("abc").find("f.st: truncated"), std::string::npos);
}

TEST(SafeTensors, HeaderLargerThanFile) {
  std::string bytes = image("{}", 0);
  bytes[0] = 100;
  EXPECT_NE(openError(bytes).find("header length 100 is larger than the file"),
            std::string::npos);
}

TEST(SafeTensors, MalformedJson) {
  EXPECT_NE(openError(image("{\"a\": ", 0)).find("not well-formed JSON"),
            std::string::npos);
}

TEST(SafeTensors, UnknownDType) {
  std::string h = R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})";
  EXPECT_NE(openError(image(h, 8)).find("tensor 'w': unsupported dtype 'C64'"),
            std::string::npos);
}

TEST(SafeTensors, SizeMismatch) {
  std::string h = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  EXPECT_NE(openError(image(h, 8)).find("tensor 'w': holds 8 bytes"),
            std::string::npos);
}

TEST(SafeTensors, OffsetsOutOfBounds) {
  std::string h = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  EXPECT_NE(openError(image(h, 8)).find("run past the end of the data"),
            std::string::npos);
}

TEST(SafeTensors, Overlapping) {
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_NE(openError(image(h, 12)).find("tensor 'b' overlaps"),
            std::string::npos);
}

TEST(SafeTensors, Hole) {
  std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_NE(openError(image(h, 8)).find("are not part of any tensor"),
            std::string::npos);
}

TEST(SafeTensors, DuplicateName) {
  std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_NE(openError(image(h, 8)).find("tensor 'a' appears twice"),
            std::string::npos);
}

TEST(SafeTensors, NegativeShape) {
  std::string h = R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})";
  EXPECT_NE(openError(image(h, 4)).find("non-negative integers"),
            std::string::npos);
}

TEST(SafeTensors, MissingFile) {
  auto f = SafeTensorsFile::open("/nonexistent/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("/nonexistent/x.safetensors"),
            std::string::npos);
}

TEST(Checkpoint, ShardedThroughIndex) {
  TempDir dir;
  ASSERT_TRUE(
      writeSafeTensors(dir.path + "/a.safetensors", {floats("x", {1}, {1})})
          .ok());
  ASSERT_TRUE(
      writeSafeTensors(dir.path + "/b.safetensors", {floats("y", {2}, {2, 3})})
          .ok());
  ASSERT_TRUE(
      writeFileAtomically(
          dir.path + "/model.safetensors.index.json",
          R"({"metadata":{},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})")
          .ok());
  auto ckpt = Checkpoint::open(dir.path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->find("y")->floatAt(1), 3.0f);
  EXPECT_EQ((*ckpt)->names(), (std::vector<std::string>{"x", "y"}));

  // The index names a tensor its shard does not hold.
  ASSERT_TRUE(writeFileAtomically(
                  dir.path + "/model.safetensors.index.json",
                  R"({"weight_map":{"x":"a.safetensors","z":"b.safetensors"}})")
                  .ok());
  auto bad = Checkpoint::open(dir.path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tensor 'z' is not in"),
            std::string::npos);
}

TEST(Checkpoint, DuplicateAcrossFiles) {
  TempDir dir;
  ASSERT_TRUE(
      writeSafeTensors(dir.path + "/a.safetensors", {floats("x", {1}, {1})})
          .ok());
  ASSERT_TRUE(
      writeSafeTensors(dir.path + "/b.safetensors", {floats("x", {1}, {2})})
          .ok());
  auto ckpt = Checkpoint::open(dir.path);
  ASSERT_FALSE(ckpt.ok());
  EXPECT_NE(ckpt.status().message().find("tensor 'x' is also in"),
            std::string::npos);
}

TEST(Npy, RoundTrip) {
  TempDir dir;
  HostTensor t = HostTensor::fromFloats({2, 2}, {1.5f, -2, 3, 4});
  ASSERT_TRUE(writeNpy(dir.path + "/t.npy", t).ok());
  auto back = readNpy(dir.path + "/t.npy");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, t.shape);
  EXPECT_EQ(back->toFloats(), t.toFloats());
  HostTensor ids = HostTensor::fromInts({3}, {1, 2, 3});
  ASSERT_TRUE(writeNpy(dir.path + "/i.npy", ids).ok());
  EXPECT_EQ(readNpy(dir.path + "/i.npy")->toInts(), ids.toInts());
}

TEST(DType, NarrowFloats) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, 3.14159f}) {
    EXPECT_NEAR(halfToFloat(floatToHalf(v)), v, std::fabs(v) * 1e-3 + 1e-7);
    EXPECT_NEAR(bf16ToFloat(floatToBF16(v)), v, std::fabs(v) * 1e-2 + 1e-30);
  }
  EXPECT_EQ(floatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(f8e4m3ToFloat(0x38), 1.0f);   // exponent 7, mantissa 0
  EXPECT_EQ(f8e4m3ToFloat(0x7e), 448.0f); // largest finite
  EXPECT_TRUE(std::isnan(f8e4m3ToFloat(0x7f)));
  EXPECT_EQ(f8e4m3ToFloat(0x01), std::ldexp(1.0f, -9));
}

} // namespace
