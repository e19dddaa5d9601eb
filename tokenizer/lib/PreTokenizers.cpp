//===- PreTokenizers.cpp - tokenizer.json pre-tokenizers ------------------===//

#include "Components.h"
#include "Regex.h"
#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include <array>
#include <cstring>

namespace ds::tok {
namespace {

/// GPT-2's pattern, ByteLevel's use_regex.
constexpr std::string_view kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Sequence : public PreTokenizer {
public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void apply(Pieces &pieces) const override {
    for (const auto &p : parts)
      p->apply(pieces);
  }
};

class Split : public PreTokenizer {
public:
  std::unique_ptr<Regex> pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void apply(Pieces &pieces) const override {
    for (const Piece &p : pieces.list)
      splitPiece(p, *pattern, behavior, invert, pieces.spare);
    pieces.swap();
  }
};

class ByteLevel : public PreTokenizer {
public:
  bool addPrefixSpace = false;
  std::unique_ptr<Regex> pattern; // null without use_regex
  void apply(Pieces &pieces) const override {
    std::vector<Piece> &out = pieces.spare;
    for (Piece p : pieces.list) {
      if (addPrefixSpace && (p.text.empty() || p.text[0] != ' ')) {
        std::string &s = pieces.slot();
        s += ' ';
        s += p.text;
        p.text = s;
      }
      if (pattern)
        splitPiece(p, *pattern, SplitBehavior::Isolated, false, out);
      else if (!p.text.empty())
        out.push_back(p);
    }
    // Each byte's character as UTF-8, looked up; all pieces' text in one
    // kept string.
    struct Utf8 {
      char bytes[2];
      uint8_t size;
    };
    static const std::array<Utf8, 256> utf8 = [] {
      std::array<Utf8, 256> t{};
      for (int b = 0; b < 256; ++b) {
        std::string s;
        appendUtf8(s, byteToChar()[b]); // at most U+0143: 2 bytes
        t[b].size = static_cast<uint8_t>(s.size());
        std::memcpy(t[b].bytes, s.data(), s.size());
      }
      return t;
    }();
    size_t total = 0;
    for (const Piece &p : out)
      for (char c : p.text)
        total += utf8[static_cast<uint8_t>(c)].size;
    std::string &mapped = pieces.slot();
    mapped.resize(total + 1); // a byte of room for the 2-byte writes
    char *at = mapped.data();
    for (Piece &p : out) {
      const char *begin = at;
      for (char c : p.text) {
        const Utf8 &u = utf8[static_cast<uint8_t>(c)];
        at[0] = u.bytes[0];
        at[1] = u.bytes[1];
        at += u.size;
      }
      p.text = std::string_view(begin, static_cast<size_t>(at - begin));
    }
    pieces.swap();
  }
};

enum class PrependScheme { Always, First, Never };

class Metaspace : public PreTokenizer {
public:
  std::string replacement;
  PrependScheme scheme = PrependScheme::Always;
  std::unique_ptr<Regex> splitOn; // null without split
  void apply(Pieces &pieces) const override {
    std::vector<Piece> &out = pieces.spare;
    for (Piece p : pieces.list) {
      std::string &text = pieces.slot();
      for (char c : p.text) {
        if (c == ' ')
          text += replacement;
        else
          text += c;
      }
      const bool starts = text.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (scheme == PrependScheme::Always ||
                      (scheme == PrependScheme::First && p.atStart)))
        text.insert(0, replacement);
      p.text = text;
      if (splitOn)
        splitPiece(p, *splitOn, SplitBehavior::MergedWithNext, false, out);
      else if (!p.text.empty())
        out.push_back(p);
    }
    pieces.swap();
  }
};

absl::StatusOr<std::unique_ptr<Regex>> compileAt(std::string_view pattern,
                                                 const std::string &path) {
  auto re = Regex::compile(pattern);
  if (!re.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", re.status().message()));
  return re;
}

absl::StatusOr<SplitBehavior> behaviorOf(const nlohmann::json &j,
                                         const std::string &path) {
  auto name = stringField(j, path, "behavior");
  if (!name.ok())
    return name.status();
  if (*name == "Removed")
    return SplitBehavior::Removed;
  if (*name == "Isolated")
    return SplitBehavior::Isolated;
  if (*name == "MergedWithPrevious")
    return SplitBehavior::MergedWithPrevious;
  if (*name == "MergedWithNext")
    return SplitBehavior::MergedWithNext;
  if (*name == "Contiguous")
    return SplitBehavior::Contiguous;
  return absl::InvalidArgumentError(
      absl::StrCat(path, ".behavior: unknown split behavior '", *name, "'"));
}

} // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>>
parsePreTokenizer(const nlohmann::json &j, const std::string &path) {
  if (j.is_null())
    return nullptr;
  auto type = stringField(j, path, "type");
  if (!type.ok())
    return type.status();
  if (*type == "Sequence") {
    auto seq = std::make_unique<Sequence>();
    if (absl::Status st =
            parseParts(j, path, "pretokenizers", parsePreTokenizer, seq->parts);
        !st.ok())
      return st;
    return seq;
  }
  if (*type == "Split") {
    auto s = std::make_unique<Split>();
    auto pattern = patternField(j, path, "pattern");
    if (!pattern.ok())
      return pattern.status();
    auto re = compileAt(*pattern, path + ".pattern");
    if (!re.ok())
      return re.status();
    s->pattern = std::move(*re);
    auto behavior = behaviorOf(j, path);
    if (!behavior.ok())
      return behavior.status();
    s->behavior = *behavior;
    auto invert = boolField(j, path, "invert", false);
    if (!invert.ok())
      return invert.status();
    s->invert = *invert;
    return s;
  }
  if (*type == "ByteLevel") {
    auto b = std::make_unique<ByteLevel>();
    auto prefix = boolField(j, path, "add_prefix_space", true);
    auto regex = boolField(j, path, "use_regex", true);
    if (!prefix.ok())
      return prefix.status();
    if (!regex.ok())
      return regex.status();
    b->addPrefixSpace = *prefix;
    if (*regex) {
      auto re = compileAt(kByteLevelPattern, path);
      if (!re.ok())
        return re.status();
      b->pattern = std::move(*re);
    }
    return b;
  }
  if (*type == "Metaspace") {
    auto m = std::make_unique<Metaspace>();
    auto replacement = stringField(j, path, "replacement");
    if (!replacement.ok())
      return replacement.status();
    if (codePoints(*replacement).size() != 1)
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".replacement: expected one character"));
    m->replacement = *replacement;
    if (j.contains("prepend_scheme")) {
      auto scheme = stringField(j, path, "prepend_scheme");
      if (!scheme.ok())
        return scheme.status();
      if (*scheme == "always")
        m->scheme = PrependScheme::Always;
      else if (*scheme == "first")
        m->scheme = PrependScheme::First;
      else if (*scheme == "never")
        m->scheme = PrependScheme::Never;
      else
        return absl::InvalidArgumentError(absl::StrCat(
            path, ".prepend_scheme: expected always, first or never"));
    } else {
      // Files from before prepend_scheme: add_prefix_space.
      auto prefix = boolField(j, path, "add_prefix_space", true);
      if (!prefix.ok())
        return prefix.status();
      m->scheme = *prefix ? PrependScheme::Always : PrependScheme::Never;
    }
    auto split = boolField(j, path, "split", true);
    if (!split.ok())
      return split.status();
    if (*split) {
      auto re = Regex::literal(*replacement);
      if (!re.ok())
        return re.status();
      m->splitOn = std::move(*re);
    }
    return m;
  }
  if (*type == "Digits") {
    auto s = std::make_unique<Split>();
    auto individual = boolField(j, path, "individual_digits", false);
    if (!individual.ok())
      return individual.status();
    auto re = compileAt(R"(\p{N})", path);
    if (!re.ok())
      return re.status();
    s->pattern = std::move(*re);
    s->behavior =
        *individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous;
    return s;
  }
  return absl::UnimplementedError(absl::StrCat(
      path, ": pre-tokenizer type '", *type,
      "' is not supported (supported: Sequence, Split, ByteLevel, Metaspace, "
      "Digits)"));
}

} // namespace ds::tok
