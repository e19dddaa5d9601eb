//===- Decoders.cpp - tokenizer.json decoders and post-processors ---------===//

#include "Components.h"
#include "Regex.h"
#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include <cstdlib>

namespace ds::tok {
namespace {

class Sequence : public Decoder {
public:
  std::vector<std::unique_ptr<Decoder>> parts;
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    for (const auto &p : parts)
      tokens = p->apply(std::move(tokens));
    return tokens;
  }
};

/// Byte-level characters back to bytes, all tokens as one text; a token
/// with a character outside the alphabet (an added token) keeps its own
/// UTF-8 bytes.
class ByteLevel : public Decoder {
public:
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string &t : tokens) {
      std::string mapped;
      bool all = true;
      for (char32_t c : codePoints(t)) {
        const int b = charToByte(c);
        if (b < 0) {
          all = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes += all ? mapped : t;
    }
    return {utf8Lossy(bytes)};
  }
};

/// "<0xAB>" tokens as bytes: each run of them as one text when it is valid
/// UTF-8, else one U+FFFD per byte.
class ByteFallback : public Decoder {
public:
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string run;
    size_t runBytes = 0;
    auto flush = [&] {
      if (!runBytes)
        return;
      if (isValidUtf8(run))
        out.push_back(run);
      else
        for (size_t i = 0; i < runBytes; ++i)
          out.push_back("\xef\xbf\xbd");
      run.clear();
      runBytes = 0;
    };
    for (std::string &t : tokens) {
      int value = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        char *end = nullptr;
        const std::string hex = t.substr(3, 2);
        const long v = std::strtol(hex.c_str(), &end, 16);
        if (end == hex.c_str() + 2)
          value = static_cast<int>(v);
      }
      if (value >= 0) {
        run.push_back(static_cast<char>(value));
        ++runBytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

class Fuse : public Decoder {
public:
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    std::string all;
    for (const std::string &t : tokens)
      all += t;
    return {all};
  }
};

class Replace : public Decoder {
public:
  std::unique_ptr<Regex> pattern;
  std::string content;
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    for (std::string &t : tokens)
      t = regexReplace(*pattern, t, content);
    return tokens;
  }
};

/// Up to `start` leading and `stop` trailing characters equal to `content`
/// off every token.
class Strip : public Decoder {
public:
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    for (std::string &t : tokens) {
      std::vector<char32_t> cps = codePoints(t);
      size_t b = 0, e = cps.size();
      while (b < start && b < e && cps[b] == content)
        ++b;
      size_t cut = 0;
      while (cut < stop && e > b && cps[e - 1] == content) {
        --e;
        ++cut;
      }
      std::string out;
      for (size_t i = b; i < e; ++i)
        appendUtf8(out, cps[i]);
      t = std::move(out);
    }
    return tokens;
  }
};

/// The replacement character back to spaces, except in the first token,
/// where `tokenizers` drops every one of them unless the scheme never
/// prepends one.
class Metaspace : public Decoder {
public:
  std::string replacement;
  bool stripFirst = true;
  std::vector<std::string>
  apply(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string &t = tokens[i];
      for (size_t at = 0; at < t.size();) {
        if (t.compare(at, replacement.size(), replacement) == 0) {
          if (!(i == 0 && stripFirst))
            out += ' ';
          at += replacement.size();
        } else {
          out += t[at++];
        }
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  }
};

class PostSequence : public PostProcessor {
public:
  std::vector<std::unique_ptr<PostProcessor>> parts;
  std::vector<int32_t> apply(std::vector<int32_t> ids) const override {
    for (const auto &p : parts)
      ids = p->apply(std::move(ids));
    return ids;
  }
};

/// TemplateProcessing's single-sequence template: special tokens' ids
/// around the sequence.
class Template : public PostProcessor {
public:
  struct Item {
    bool sequence;
    std::vector<int32_t> ids;
  };
  std::vector<Item> items;
  std::vector<int32_t> apply(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out;
    for (const Item &item : items) {
      if (item.sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), item.ids.begin(), item.ids.end());
    }
    return out;
  }
};

/// ByteLevel as a post-processor only trims offsets: ids unchanged.
class Identity : public PostProcessor {
public:
  std::vector<int32_t> apply(std::vector<int32_t> ids) const override {
    return ids;
  }
};

} // namespace

absl::StatusOr<std::unique_ptr<Decoder>> parseDecoder(const nlohmann::json &j,
                                                      const std::string &path) {
  if (j.is_null())
    return nullptr;
  auto type = stringField(j, path, "type");
  if (!type.ok())
    return type.status();
  if (*type == "Sequence") {
    auto seq = std::make_unique<Sequence>();
    if (absl::Status st =
            parseParts(j, path, "decoders", parseDecoder, seq->parts);
        !st.ok())
      return st;
    return seq;
  }
  if (*type == "ByteLevel")
    return std::make_unique<ByteLevel>();
  if (*type == "ByteFallback")
    return std::make_unique<ByteFallback>();
  if (*type == "Fuse")
    return std::make_unique<Fuse>();
  if (*type == "Replace") {
    auto r = std::make_unique<Replace>();
    auto pattern = patternField(j, path, "pattern");
    if (!pattern.ok())
      return pattern.status();
    auto re = Regex::compile(*pattern);
    if (!re.ok())
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".pattern: ", re.status().message()));
    r->pattern = std::move(*re);
    auto content = stringField(j, path, "content");
    if (!content.ok())
      return content.status();
    r->content = *content;
    return r;
  }
  if (*type == "Strip") {
    auto s = std::make_unique<Strip>();
    auto content = stringField(j, path, "content");
    if (!content.ok())
      return content.status();
    std::vector<char32_t> cps = codePoints(*content);
    if (cps.size() != 1)
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".content: expected one character"));
    s->content = cps[0];
    for (auto [field, to] :
         {std::pair{"start", &s->start}, {"stop", &s->stop}}) {
      auto it = j.find(field);
      if (it == j.end() || !it->is_number_unsigned())
        return absl::InvalidArgumentError(
            absl::StrCat(path, ".", field, ": expected a count"));
      *to = it->get<size_t>();
    }
    return s;
  }
  if (*type == "Metaspace") {
    auto m = std::make_unique<Metaspace>();
    auto replacement = stringField(j, path, "replacement");
    if (!replacement.ok())
      return replacement.status();
    m->replacement = *replacement;
    if (j.contains("prepend_scheme")) {
      auto scheme = stringField(j, path, "prepend_scheme");
      if (!scheme.ok())
        return scheme.status();
      m->stripFirst = *scheme != "never";
    } else {
      auto prefix = boolField(j, path, "add_prefix_space", true);
      if (!prefix.ok())
        return prefix.status();
      m->stripFirst = *prefix;
    }
    return m;
  }
  return absl::UnimplementedError(absl::StrCat(
      path, ": decoder type '", *type,
      "' is not supported (supported: Sequence, ByteLevel, ByteFallback, "
      "Fuse, Replace, Strip, Metaspace)"));
}

absl::StatusOr<std::unique_ptr<PostProcessor>>
parsePostProcessor(const nlohmann::json &j, const std::string &path) {
  if (j.is_null())
    return nullptr;
  auto type = stringField(j, path, "type");
  if (!type.ok())
    return type.status();
  if (*type == "Sequence") {
    auto seq = std::make_unique<PostSequence>();
    if (absl::Status st =
            parseParts(j, path, "processors", parsePostProcessor, seq->parts);
        !st.ok())
      return st;
    return seq;
  }
  if (*type == "ByteLevel")
    return std::make_unique<Identity>();
  if (*type == "TemplateProcessing") {
    auto t = std::make_unique<Template>();
    auto single = j.find("single");
    auto specials = j.find("special_tokens");
    if (single == j.end() || !single->is_array())
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".single: expected an array"));
    for (size_t i = 0; i < single->size(); ++i) {
      const nlohmann::json &item = (*single)[i];
      const std::string at = absl::StrCat(path, ".single[", i, "]");
      if (item.contains("Sequence")) {
        t->items.push_back({true, {}});
        continue;
      }
      auto special = item.find("SpecialToken");
      if (special == item.end())
        return absl::InvalidArgumentError(
            absl::StrCat(at, ": expected Sequence or SpecialToken"));
      auto name = stringField(*special, at + ".SpecialToken", "id");
      if (!name.ok())
        return name.status();
      if (specials == j.end() || !specials->contains(*name))
        return absl::InvalidArgumentError(absl::StrCat(
            at, ": special token '", *name, "' not in special_tokens"));
      auto ids = (*specials)[*name].find("ids");
      if (ids == (*specials)[*name].end() || !ids->is_array())
        return absl::InvalidArgumentError(absl::StrCat(
            path, ".special_tokens.", *name, ".ids: expected an array"));
      Template::Item entry{false, {}};
      for (const auto &id : *ids) {
        if (!id.is_number_integer())
          return absl::InvalidArgumentError(absl::StrCat(
              path, ".special_tokens.", *name, ".ids: expected integers"));
        entry.ids.push_back(id.get<int32_t>());
      }
      t->items.push_back(std::move(entry));
    }
    return t;
  }
  return absl::UnimplementedError(
      absl::StrCat(path, ": post-processor type '", *type,
                   "' is not supported (supported: Sequence, ByteLevel, "
                   "TemplateProcessing)"));
}

} // namespace ds::tok
