//===- Regex.h - PCRE2 patterns of tokenizer.json ---------------*- C++ -*-===//
//
// Hugging Face tokenizers compile their patterns with Oniguruma; the
// pre-tokenizer patterns of DeepSeek, Qwen and GPT-2 need Unicode classes
// (\p{L}, \p{N}) and lookahead (\s+(?!\S)), which PCRE2 (UTF + UCP mode,
// JIT-compiled) matches alike. RE2 has no lookahead.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOK_REGEX_H
#define DS_TOK_REGEX_H

#include "absl/status/statusor.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds::tok {

class Regex {
public:
  /// Compiles `pattern` (UTF-8); an error names the offset PCRE2 stopped
  /// at.
  static absl::StatusOr<std::unique_ptr<Regex>>
  compile(std::string_view pattern);
  /// A literal string as a pattern.
  static absl::StatusOr<std::unique_ptr<Regex>> literal(std::string_view text);
  ~Regex();
  Regex(const Regex &) = delete;
  Regex &operator=(const Regex &) = delete;

  /// The [begin, end) byte ranges of the non-overlapping matches in
  /// `subject` (valid UTF-8), left to right; an empty match advances one
  /// character.
  std::vector<std::pair<size_t, size_t>>
  findAll(std::string_view subject) const;
  /// The same into `out` (cleared first; its storage reused).
  void findAll(std::string_view subject,
               std::vector<std::pair<size_t, size_t>> &out) const;

private:
  Regex() = default;
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace ds::tok

#endif // DS_TOK_REGEX_H
