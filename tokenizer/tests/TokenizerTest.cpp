//===- TokenizerTest.cpp - the tokenizer's parts and its refusals ---------===//
//
// Exactness against the `tokenizers` package over 10k strings per kind is
// test/lit/tokenizer/exactness.test; here: hand-made tokenizer.json files
// whose results are known, lossy UTF-8, streamed decoding, and the errors
// for what is not supported or not valid.
//
//===----------------------------------------------------------------------===//

#include "ds/tok/Tokenizer.h"

#include "../lib/Unicode.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace ds::tok;

namespace {

/// A byte-level BPE over "a", "b", "ab", "abb" and the space-prefixed
/// "Ġa", with one special token.
std::string byteLevelJson(const std::string &extra = "") {
  return R"({
  "added_tokens": [{"id": 7, "content": "<|end|>", "special": true,
                    "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
                    "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "abb": 3,
            "Ġ": 4, "Ġa": 5, "Ċ": 6},
            "merges": [["a", "b"], ["ab", "b"], "Ġ a"])" +
         extra + R"(}
})";
}

TEST(Tokenizer, MergesByRankLeftmostFirst) {
  auto tok = Tokenizer::fromJson(byteLevelJson());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->encode("abbab a\n<|end|>");
  ASSERT_TRUE(ids.ok()) << ids.status();
  // "abbab" -> ab b ab -> abb ab; " a" -> Ġa; "\n" -> Ċ; the special.
  EXPECT_EQ(*ids, (std::vector<int32_t>{3, 2, 5, 6, 7}));
  auto text = (*tok)->decode(*ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "abbab a\n<|end|>");
  auto skipped = (*tok)->decode(*ids, /*skipSpecialTokens=*/true);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(*skipped, "abbab a\n");
  EXPECT_TRUE((*tok)->isSpecial(7));
  EXPECT_EQ((*tok)->vocabSize(), 8);
  EXPECT_EQ((*tok)->tokenToId("<|end|>"), 7);
  EXPECT_EQ((*tok)->idToToken(3), "abb");
}

TEST(Tokenizer, RefusesWhatItDoesNotSupport) {
  auto unsupported = Tokenizer::fromJson(R"({"model": {"type": "WordPiece",
      "vocab": {}}})",
                                         "t.json");
  ASSERT_FALSE(unsupported.ok());
  EXPECT_NE(unsupported.status().message().find("t.json: model.type"),
            std::string::npos)
      << unsupported.status();
  auto pre = Tokenizer::fromJson(
      R"({"pre_tokenizer": {"type": "Sequence", "pretokenizers":
          [{"type": "Whitespace"}]},
          "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  ASSERT_FALSE(pre.ok());
  EXPECT_NE(pre.status().message().find(
                "pre_tokenizer.pretokenizers[0]: pre-tokenizer type "
                "'Whitespace' is not supported"),
            std::string::npos)
      << pre.status();
  auto merge = Tokenizer::fromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})");
  ASSERT_FALSE(merge.ok());
  EXPECT_NE(merge.status().message().find("merges[0]"), std::string::npos);
  auto regex = Tokenizer::fromJson(
      R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"},
          "behavior": "Isolated"},
          "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  ASSERT_FALSE(regex.ok());
  EXPECT_NE(regex.status().message().find("pre_tokenizer.pattern"),
            std::string::npos)
      << regex.status();
  EXPECT_FALSE(Tokenizer::fromJson("{not json").ok());
  EXPECT_FALSE(Tokenizer::fromFile("/nonexistent/tokenizer.json").ok());
}

TEST(Tokenizer, InvalidUtf8IsAnErrorWithItsOffset) {
  auto tok = Tokenizer::fromJson(byteLevelJson());
  ASSERT_TRUE(tok.ok());
  auto ids = (*tok)->encode(std::string("ab\xc3(", 4));
  ASSERT_FALSE(ids.ok());
  EXPECT_NE(ids.status().message().find("byte 2"), std::string::npos);
  EXPECT_FALSE((*tok)->decode({99}).ok());
}

TEST(Tokenizer, LossyUtf8ReplacesMaximalSubparts) {
  EXPECT_EQ(utf8Lossy("a\xe4\xb8"), "a\xef\xbf\xbd");
  EXPECT_EQ(utf8Lossy("\xe4\x41"), "\xef\xbf\xbd"
                                   "A");
  EXPECT_EQ(utf8Lossy("\xed\xa0\x80"), // a surrogate: three subparts
            "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(utf8Lossy("\xf0\x9f\x98"), "\xef\xbf\xbd");
  EXPECT_EQ(utf8Lossy("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(utf8Lossy("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
}

TEST(Tokenizer, StreamedDecodeNeverSplitsACharacter) {
  // Byte fallback spells "é😀" as six byte tokens: the stream says nothing
  // until each character is whole.
  std::string vocab = R"("<unk>": 0, "▁": 1)";
  for (int b = 0; b < 256; ++b) {
    char name[16];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab += std::string(", \"") + name + "\": " + std::to_string(2 + b);
  }
  auto tok = Tokenizer::fromJson(
      R"({"normalizer": {"type": "Replace", "pattern": {"String": " "},
          "content": "▁"},
          "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
          "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>",
                    "vocab": {)" +
      vocab + R"(}, "merges": []}})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->encode("é 😀");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), 2u + 1u + 4u);
  DecodeStream stream(**tok);
  std::vector<std::string> pieces;
  for (int32_t id : *ids) {
    auto piece = stream.step(id);
    ASSERT_TRUE(piece.ok()) << piece.status();
    pieces.push_back(*piece);
  }
  EXPECT_EQ(pieces, (std::vector<std::string>{"", "é", " ", "", "", "", "😀"}));
}

} // namespace
