//===- Bpe.h - the BPE model of tokenizer.json ------------------*- C++ -*-===//
//
// A pre-tokenized word to ids as `tokenizers`' BPE: its characters looked
// up in the vocabulary (a missing one as its "<0xAB>" byte tokens with
// byte_fallback, else the unknown token, consecutive ones fused with
// fuse_unk), then merged pair by pair, always the pair of lowest merge rank
// and, among equal ranks, the leftmost. Words already in the vocabulary
// are one token with ignore_merges. Results are cached per word.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOK_BPE_H
#define DS_TOK_BPE_H

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

class Bpe {
public:
  /// The "model" object of tokenizer.json (type BPE).
  static absl::StatusOr<std::unique_ptr<Bpe>> parse(const nlohmann::json &j,
                                                    const std::string &path);
  /// Appends the ids of `word`.
  void encodeWord(std::string_view word, std::vector<int32_t> &out) const;
  std::optional<int32_t> tokenToId(std::string_view token) const;
  /// Null outside the vocabulary.
  const std::string *idToToken(int32_t id) const;
  /// One past the largest id.
  int64_t size() const { return static_cast<int64_t>(tokens.size()); }

private:
  void merge(std::string_view word, std::vector<int32_t> &out) const;

  absl::flat_hash_map<std::string, int32_t> vocab;
  std::vector<std::string> tokens;
  std::vector<bool> present;
  /// (left id << 32 | right id) -> (rank, merged id).
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  bool byteFallback = false, fuseUnk = false, ignoreMerges = false;
  std::optional<int32_t> unk;
  std::array<int32_t, 256> byteTokens{};

  static constexpr size_t kCacheWords = 1 << 16;
  mutable std::mutex cacheMutex;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache;
};

} // namespace ds::tok

#endif // DS_TOK_BPE_H
