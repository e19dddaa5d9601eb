//===- TokenizerFuzzer.cpp - libFuzzer target for the tokenizer -----------===//
//
// The first byte picks what the rest is: a chat template to parse and
// render on a small conversation; a tokenizer.json to load (and, if
// it loads, to encode and decode a sample with), or text for two fixed
// tokenizers (byte-level BPE with a Split pre-tokenizer and special tokens;
// byte fallback over a metaspace), checking that invalid UTF-8 is refused
// and that byte-level BPE decodes what it encoded back to the same text,
// streamed or at once.
//
//===----------------------------------------------------------------------===//

#include "ds/tok/ChatTemplate.h"
#include "ds/tok/Tokenizer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

using ds::tok::DecodeStream;
using ds::tok::Tokenizer;

namespace {
std::string byteTokens() {
  std::string v;
  for (int b = 0; b < 256; ++b) {
    char name[16];
    std::snprintf(name, sizeof name, "\"<0x%02X>\": %d, ", b, 3 + b);
    v += name;
  }
  return v;
}

/// Byte-level BPE's whole alphabet (every byte's character) as ids 11 on.
std::string byteAlphabet() {
  std::string v;
  int id = 11;
  for (int b = 0; b < 256; ++b) {
    const bool printable =
        (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    static int next = 256;
    const int cp = printable ? b : next++;
    std::string utf8;
    if (cp < 0x80) {
      if (cp == '"' || cp == '\\')
        utf8 += '\\';
      utf8 += static_cast<char>(cp);
    } else {
      utf8 += static_cast<char>(0xc0 | cp >> 6);
      utf8 += static_cast<char>(0x80 | (cp & 0x3f));
    }
    if (cp == 0x120 || cp == 'a') // "Ġ" and "a" are ids 0 and 1
      continue;
    v += ", \"" + utf8 + "\": " + std::to_string(id++);
  }
  return v;
}

const Tokenizer &byteLevel() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    auto t = Tokenizer::fromJson(R"({
      "added_tokens": [{"id": 10, "content": "<|s|>", "special": true,
                        "normalized": false, "lstrip": true, "rstrip": true}],
      "normalizer": {"type": "NFC"},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]},
      "decoder": {"type": "ByteLevel"},
      "model": {"type": "BPE", "vocab": {"Ġ": 0, "a": 1, "Ġa": 2, "aa": 3)" +
                                 byteAlphabet() + R"(},
                "merges": [["Ġ", "a"], ["a", "a"]]}})");
    if (!t.ok())
      std::abort();
    return std::move(*t);
  }();
  return *tok;
}

const Tokenizer &metaspace() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    auto t = Tokenizer::fromJson(
        R"({"normalizer": {"type": "Sequence", "normalizers": [
              {"type": "Prepend", "prepend": "▁"},
              {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "decoder": {"type": "Sequence", "decoders": [
              {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"},
              {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true,
                      "unk_token": "<unk>", "vocab": {"<unk>": 0, "▁": 1,
                      "a": 2, )" +
        byteTokens() + R"("▁a": 259}, "merges": [["▁", "a"]]}})");
    if (!t.ok())
      std::abort();
    return std::move(*t);
  }();
  return *tok;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  const std::string rest(reinterpret_cast<const char *>(data) + 1, size - 1);
  if ((data[0] & 7) == 4) {
    // A chat template, rendered on a small conversation.
    auto t = ds::tok::ChatTemplate::parse(rest);
    if (t.ok())
      (void)(*t)->render(nlohmann::ordered_json::parse(
          R"({"messages": [{"role": "system", "content": "s"},
              {"role": "user", "content": "héllo"},
              {"role": "assistant", "content": "a</think>b",
               "tool_calls": [{"function": {"name": "f",
                               "arguments": "{}"}}]}],
              "add_generation_prompt": true, "bos_token": "<s>",
              "tools": [{"type": "function"}]})"));
    return 0;
  }
  if (data[0] & 1) {
    auto tok = Tokenizer::fromJson(rest, "fuzz.json");
    if (tok.ok()) {
      auto ids = (*tok)->encode("Hello  world 123 <s> é😀\n");
      if (ids.ok())
        (void)(*tok)->decode(*ids, true);
    }
    return 0;
  }
  const Tokenizer &tok = (data[0] & 2) ? metaspace() : byteLevel();
  auto ids = tok.encode(rest);
  if (!ids.ok())
    return 0; // invalid UTF-8, refused with its offset
  auto text = tok.decode(*ids);
  if (!text.ok())
    std::abort();
  if (&tok == &byteLevel()) {
    // Every byte is in the alphabet: the decoded text is the normalized
    // input, which encodes to the same ids (the special token, which
    // strips the spaces around it, aside).
    if (rest.find("<|s|>") == std::string::npos) {
      auto again = tok.encode(*text);
      if (!again.ok() || *again != *ids)
        std::abort();
    }
    DecodeStream stream(tok);
    std::string streamed;
    for (int32_t id : *ids) {
      auto piece = stream.step(id);
      if (!piece.ok())
        std::abort();
      streamed += *piece;
    }
    if (*text != streamed &&
        !(streamed.size() < text->size() &&
          text->compare(0, streamed.size(), streamed) == 0))
      std::abort();
  }
  return 0;
}
