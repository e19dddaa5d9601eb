//===- Tokenizer.h - Hugging Face tokenizer.json in C++ ---------*- C++ -*-===//
//
// Encodes and decodes text as the Hugging Face `tokenizers` library does
// from a model's tokenizer.json, with no Python: the BPE models of the MoE
// families ds serves, byte-level (DeepSeek-V2/V3, Qwen2/3, GPT-2 style) and
// with byte fallback over a metaspace (Mixtral / Llama style); their
// normalizers (NFC / NFD / NFKC / NFKD, Prepend, Replace, Strip,
// Lowercase, Sequence), pre-tokenizers (ByteLevel, Split, Metaspace,
// Digits, Sequence), post-processors (TemplateProcessing, ByteLevel,
// Sequence) and decoders (ByteLevel, Metaspace, Replace, ByteFallback,
// Fuse, Strip, Sequence); added and special tokens (lstrip, rstrip,
// single_word, normalized). A component outside these is refused when the
// file is loaded, naming it and where it is, never silently approximated.
//
// Thread-safe: one Tokenizer serves any number of threads.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOK_TOKENIZER_H
#define DS_TOK_TOKENIZER_H

#include "absl/status/statusor.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

class Tokenizer {
public:
  /// Parses tokenizer.json text; `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<Tokenizer>>
  fromJson(std::string_view json, std::string_view source = "tokenizer.json");
  /// Reads and parses a tokenizer.json file (or a model directory holding
  /// one).
  static absl::StatusOr<std::unique_ptr<Tokenizer>>
  fromFile(const std::string &path);
  ~Tokenizer();

  /// The ids of `text` (UTF-8; invalid bytes are an error naming their
  /// offset). With addSpecialTokens the post-processor's tokens (a BOS)
  /// are added, as `tokenizers`' encode(text, add_special_tokens=True).
  absl::StatusOr<std::vector<int32_t>>
  encode(std::string_view text, bool addSpecialTokens = true) const;
  /// The text of `ids`, as `tokenizers`' decode: invalid UTF-8 that the
  /// tokens spell becomes U+FFFD; special tokens are left out with
  /// skipSpecialTokens. An id outside the vocabulary is an error.
  absl::StatusOr<std::string> decode(const std::vector<int32_t> &ids,
                                     bool skipSpecialTokens = false) const;

  /// Ids 0 .. vocabSize() - 1 (the model's and the added tokens').
  int64_t vocabSize() const;
  std::optional<int32_t> tokenToId(std::string_view token) const;
  /// The token's text, or nullopt outside the vocabulary.
  std::optional<std::string> idToToken(int32_t id) const;
  bool isSpecial(int32_t id) const;

  struct Impl;

private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl;
};

/// A byte-level BPE tokenizer.json whose vocabulary is the 256 bytes (id
/// = byte value) with no merges: every text round-trips, one token a byte.
/// What ds-make-tiny-model writes beside its 256-token models.
std::string byteLevelTokenizerJson();

/// Text of a token stream as it is generated: step() returns what the new
/// token adds once it completes characters (nothing while a multi-byte
/// character is split over tokens, never half a UTF-8 sequence), the same
/// text that decoding all ids at once gives (`tokenizers`' DecodeStream).
class DecodeStream {
public:
  explicit DecodeStream(const Tokenizer &tokenizer,
                        bool skipSpecialTokens = false);
  /// The text this token completes (may be empty).
  absl::StatusOr<std::string> step(int32_t id);

private:
  const Tokenizer &tokenizer;
  bool skipSpecial;
  std::vector<int32_t> ids;
  std::string prefix;
  size_t prefixIndex = 0;
};

} // namespace ds::tok

#endif // DS_TOK_TOKENIZER_H
