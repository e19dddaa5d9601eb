//===- Components.h - tokenizer.json's pipeline stages ----------*- C++ -*-===//
//
// The normalizers, pre-tokenizers, post-processors and decoders of a
// tokenizer.json, each parsed from its JSON object (an unsupported type or
// a bad field is an error naming its JSON path) and applied as the
// Hugging Face `tokenizers` library applies it.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOK_COMPONENTS_H
#define DS_TOK_COMPONENTS_H

#include "absl/status/statusor.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

/// A piece of the input on its way through the pipeline, a view of the
/// segment's text or of text a stage rewrote (held by Pieces::store);
/// `atStart`: it begins at offset 0 of the original text (Metaspace's
/// "first" scheme).
struct Piece {
  std::string_view text;
  bool atStart = false;
};

/// The pieces of one segment, a spare list for the stages to build the
/// next one in, and the rewritten text the pieces may view: strings kept
/// until clear(), whose storage the next segment reuses (one Pieces serves
/// a thread's encodes).
struct Pieces {
  std::vector<Piece> list, spare;
  /// A string that stays put until clear(), empty, to fill.
  std::string &slot() {
    if (used == store.size())
      store.emplace_back();
    std::string &s = store[used++];
    s.clear();
    return s;
  }
  /// spare becomes the list (the old list the spare, emptied).
  void swap() {
    list.swap(spare);
    spare.clear();
  }
  void clear() {
    list.clear();
    spare.clear();
    used = 0;
  }

private:
  std::deque<std::string> store;
  size_t used = 0;
};

class Normalizer {
public:
  virtual ~Normalizer() = default;
  virtual absl::Status apply(std::string &text) const = 0;
};

class PreTokenizer {
public:
  virtual ~PreTokenizer() = default;
  /// Splits or rewrites `pieces` (never leaves an empty one).
  virtual void apply(Pieces &pieces) const = 0;
};

class PostProcessor {
public:
  virtual ~PostProcessor() = default;
  /// The ids of one sequence with the special tokens added.
  virtual std::vector<int32_t> apply(std::vector<int32_t> ids) const = 0;
};

class Decoder {
public:
  virtual ~Decoder() = default;
  /// `tokenizers`' decode_chain: tokens in, tokens out.
  virtual std::vector<std::string>
  apply(std::vector<std::string> tokens) const = 0;
};

/// Null JSON gives a null pointer (no stage).
absl::StatusOr<std::unique_ptr<Normalizer>>
parseNormalizer(const nlohmann::json &j, const std::string &path);
absl::StatusOr<std::unique_ptr<PreTokenizer>>
parsePreTokenizer(const nlohmann::json &j, const std::string &path);
absl::StatusOr<std::unique_ptr<PostProcessor>>
parsePostProcessor(const nlohmann::json &j, const std::string &path);
absl::StatusOr<std::unique_ptr<Decoder>> parseDecoder(const nlohmann::json &j,
                                                      const std::string &path);

/// JSON helpers: a field's value of the wanted kind, or an error naming
/// path.field.
absl::StatusOr<std::string> stringField(const nlohmann::json &j,
                                        const std::string &path,
                                        const char *field);
absl::StatusOr<bool> boolField(const nlohmann::json &j, const std::string &path,
                               const char *field, bool fallback);
/// A pattern object {"String": s} or {"Regex": r} as a regex source.
absl::StatusOr<std::string> patternField(const nlohmann::json &j,
                                         const std::string &path,
                                         const char *field);

/// The stages of a Sequence: j[field] parsed element by element with
/// `parse` (errors name path.field[i]); null stages are left out.
template <typename Stage, typename Parse>
absl::Status parseParts(const nlohmann::json &j, const std::string &path,
                        const char *field, const Parse &parse,
                        std::vector<std::unique_ptr<Stage>> &parts) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_array())
    return absl::InvalidArgumentError(path + "." + field +
                                      ": expected an array");
  for (size_t i = 0; i < it->size(); ++i) {
    auto part =
        parse((*it)[i], path + "." + field + "[" + std::to_string(i) + "]");
    if (!part.ok())
      return part.status();
    if (*part)
      parts.push_back(std::move(*part));
  }
  return absl::OkStatus();
}

class Regex;
/// `text` with every match of `re` replaced by `content` (the Replace
/// normalizer and decoder).
std::string regexReplace(const Regex &re, std::string_view text,
                         std::string_view content);

/// Splits by a pattern's matches as `tokenizers`' SplitDelimiterBehavior
/// (removed, isolated, merged_with_previous, merged_with_next, contiguous).
enum class SplitBehavior {
  Removed,
  Isolated,
  MergedWithPrevious,
  MergedWithNext,
  Contiguous
};
/// Appends the pieces `piece` splits into to `out` (views of its text).
void splitPiece(const Piece &piece, const Regex &re, SplitBehavior behavior,
                bool invert, std::vector<Piece> &out);

} // namespace ds::tok

#endif // DS_TOK_COMPONENTS_H
