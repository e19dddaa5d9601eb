//===- Tokenizer.cpp - Hugging Face tokenizer.json in C++ -----------------===//
//
// The encode pipeline of `tokenizers`: added tokens split off the raw text
// (those with normalized: false), the rest normalized and split by the
// normalized added tokens, pre-tokenized, each piece through the BPE model,
// then the post-processor's special tokens. Decoding looks the ids up
// (added tokens first) and runs the decoder chain.
//
//===----------------------------------------------------------------------===//

#include "ds/tok/Tokenizer.h"

#include "Bpe.h"
#include "Components.h"
#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <utf8proc.h>

namespace ds::tok {

namespace {
struct AddedToken {
  int32_t id;
  std::string content;
  bool singleWord, lstrip, rstrip, normalized, special;
};

bool isWordChar(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return c == '_' ||
         (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

bool isSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
         c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

/// The code point ending at byte `end` of s (end > 0).
char32_t lastChar(std::string_view s, size_t end, size_t *begin) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xc0) == 0x80)
    --b;
  *begin = b;
  return codePoints(s.substr(b, end - b)).front();
}

/// A segment of the text: an added token's id, or text to tokenize.
struct Segment {
  int32_t added; // -1: text
  std::string_view text;
  bool atStart;
};
} // namespace

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> preTokenizer;
  std::unique_ptr<Bpe> model;
  std::unique_ptr<PostProcessor> postProcessor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  absl::flat_hash_map<std::string, int32_t> addedByContent;
  absl::flat_hash_map<int32_t, size_t> addedById;
  /// Per first byte, the added tokens matched on raw text (normalized:
  /// false) and on normalized text, longest first.
  std::array<std::vector<size_t>, 256> rawByByte, normalizedByByte;
  int64_t vocabSize = 0;

  /// Splits `text` around matches of the added tokens in `byByte`
  /// (leftmost, longest), as `tokenizers`' AddedVocabulary::find_matches.
  void splitAdded(std::string_view text, bool atStart,
                  const std::array<std::vector<size_t>, 256> &byByte,
                  std::vector<Segment> &out) const {
    size_t from = 0;
    for (size_t i = 0; i < text.size();) {
      const std::vector<size_t> &candidates =
          byByte[static_cast<uint8_t>(text[i])];
      const AddedToken *hit = nullptr;
      for (size_t c : candidates) {
        const AddedToken &t = added[c];
        if (text.compare(i, t.content.size(), t.content) != 0)
          continue;
        if (t.singleWord) {
          size_t b;
          const bool before = i > 0 && isWordChar(lastChar(text, i, &b));
          const size_t e = i + t.content.size();
          const bool after =
              e < text.size() &&
              isWordChar(codePoints(text.substr(
                                        e, std::max(1, validSequence(text, e))))
                             .front());
          if (before || after)
            continue;
        }
        hit = &t;
        break;
      }
      if (!hit) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + hit->content.size();
      if (hit->lstrip) {
        while (start > from) {
          size_t b;
          if (!isSpace(lastChar(text, start, &b)))
            break;
          start = b;
        }
      }
      if (hit->rstrip) {
        while (stop < text.size()) {
          const int n = std::max(1, validSequence(text, stop));
          if (!isSpace(codePoints(text.substr(stop, n)).front()))
            break;
          stop += n;
        }
      }
      if (from < start)
        out.push_back(
            {-1, text.substr(from, start - from), atStart && from == 0});
      out.push_back({hit->id, {}, false});
      from = stop;
      i = stop;
    }
    if (from < text.size())
      out.push_back({-1, text.substr(from), atStart && from == 0});
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>>
Tokenizer::fromJson(std::string_view json, std::string_view source) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source), ": not a JSON object"));
  const std::string root(source);
  auto impl = std::make_unique<Impl>();
  auto part = [&](const char *name) -> const nlohmann::json & {
    static const nlohmann::json null;
    auto it = j.find(name);
    return it == j.end() ? null : *it;
  };
  auto model = j.find("model");
  if (model == j.end() || !model->is_object())
    return absl::InvalidArgumentError(absl::StrCat(root, ": no model"));
  auto bpe = Bpe::parse(*model, root + ": model");
  if (!bpe.ok())
    return bpe.status();
  impl->model = std::move(*bpe);
  auto normalizer = parseNormalizer(part("normalizer"), root + ": normalizer");
  if (!normalizer.ok())
    return normalizer.status();
  impl->normalizer = std::move(*normalizer);
  auto pre = parsePreTokenizer(part("pre_tokenizer"), root + ": pre_tokenizer");
  if (!pre.ok())
    return pre.status();
  impl->preTokenizer = std::move(*pre);
  auto post =
      parsePostProcessor(part("post_processor"), root + ": post_processor");
  if (!post.ok())
    return post.status();
  impl->postProcessor = std::move(*post);
  auto decoder = parseDecoder(part("decoder"), root + ": decoder");
  if (!decoder.ok())
    return decoder.status();
  impl->decoder = std::move(*decoder);

  impl->vocabSize = impl->model->size();
  const nlohmann::json &added = part("added_tokens");
  if (!added.is_null() && !added.is_array())
    return absl::InvalidArgumentError(
        absl::StrCat(root, ": added_tokens: expected an array"));
  for (size_t i = 0; added.is_array() && i < added.size(); ++i) {
    const std::string at = absl::StrCat(root, ": added_tokens[", i, "]");
    const nlohmann::json &a = added[i];
    AddedToken t{};
    auto id = a.find("id");
    if (id == a.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > (1 << 30))
      return absl::InvalidArgumentError(at + ".id: expected an id");
    t.id = id->get<int32_t>();
    auto content = stringField(a, at, "content");
    if (!content.ok())
      return content.status();
    if (content->empty())
      return absl::InvalidArgumentError(at + ".content: empty");
    t.content = *content;
    for (auto [field, to, fallback] :
         {std::tuple{"single_word", &t.singleWord, false},
          {"lstrip", &t.lstrip, false},
          {"rstrip", &t.rstrip, false},
          {"normalized", &t.normalized, true},
          {"special", &t.special, false}}) {
      auto v = boolField(a, at, field, fallback);
      if (!v.ok())
        return v.status();
      *to = *v;
    }
    if (t.normalized && impl->normalizer) {
      // Matched on normalized text: the content normalized alike.
      if (absl::Status s = impl->normalizer->apply(t.content); !s.ok())
        return s;
    }
    impl->vocabSize = std::max<int64_t>(impl->vocabSize, t.id + 1);
    impl->addedById[t.id] = impl->added.size();
    impl->addedByContent[*content] = t.id;
    impl->added.push_back(std::move(t));
  }
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken &t = impl->added[i];
    if (t.content.empty())
      continue; // normalized to nothing: it cannot match
    auto &table = t.normalized ? impl->normalizedByByte : impl->rawByByte;
    table[static_cast<uint8_t>(t.content[0])].push_back(i);
  }
  for (auto *table : {&impl->rawByByte, &impl->normalizedByByte})
    for (auto &list : *table)
      std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
        return impl->added[a].content.size() > impl->added[b].content.size();
      });
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>>
Tokenizer::fromFile(const std::string &path) {
  std::string file = path;
  struct stat st{};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    file = path + "/tokenizer.json";
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat(file, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return fromJson(ss.str(), file);
}

absl::StatusOr<std::vector<int32_t>>
Tokenizer::encode(std::string_view text, bool addSpecialTokens) const {
  for (size_t i = 0; i < text.size();) {
    const int n = validSequence(text, i);
    if (!n)
      return absl::InvalidArgumentError(
          absl::StrCat("text is not valid UTF-8 at byte ", i));
    i += n;
  }
  const Impl &m = *impl;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  // The thread's scratch, reused from encode to encode.
  thread_local std::vector<Segment> raw, segments;
  thread_local Pieces pieces;
  raw.clear();
  m.splitAdded(text, true, m.rawByByte, raw);
  std::string normalized;
  for (const Segment &s : raw) {
    if (s.added >= 0) {
      ids.push_back(s.added);
      continue;
    }
    std::string_view seg = s.text;
    if (m.normalizer) {
      normalized.assign(seg.data(), seg.size());
      if (absl::Status st = m.normalizer->apply(normalized); !st.ok())
        return st;
      seg = normalized;
    }
    segments.clear();
    m.splitAdded(seg, s.atStart, m.normalizedByByte, segments);
    for (const Segment &n : segments) {
      if (n.added >= 0) {
        ids.push_back(n.added);
        continue;
      }
      pieces.clear();
      pieces.list.push_back({n.text, n.atStart});
      if (m.preTokenizer)
        m.preTokenizer->apply(pieces);
      for (const Piece &p : pieces.list)
        m.model->encodeWord(p.text, ids);
    }
  }
  if (addSpecialTokens && m.postProcessor)
    ids = m.postProcessor->apply(std::move(ids));
  return ids;
}

absl::StatusOr<std::string> Tokenizer::decode(const std::vector<int32_t> &ids,
                                              bool skipSpecialTokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (auto it = impl->addedById.find(id); it != impl->addedById.end()) {
      const AddedToken &t = impl->added[it->second];
      if (skipSpecialTokens && t.special)
        continue;
      tokens.push_back(t.content);
      continue;
    }
    const std::string *t = impl->model->idToToken(id);
    if (!t)
      return absl::OutOfRangeError(
          absl::StrCat("token id ", id, " is outside the vocabulary"));
    tokens.push_back(*t);
  }
  if (!impl->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i)
      absl::StrAppend(&out, i ? " " : "", tokens[i]);
    return out;
  }
  std::string out;
  for (const std::string &t : impl->decoder->apply(std::move(tokens)))
    out += t;
  return out;
}

int64_t Tokenizer::vocabSize() const { return impl->vocabSize; }

std::optional<int32_t> Tokenizer::tokenToId(std::string_view token) const {
  if (auto it = impl->addedByContent.find(
          absl::string_view(token.data(), token.size()));
      it != impl->addedByContent.end())
    return it->second;
  return impl->model->tokenToId(token);
}

std::optional<std::string> Tokenizer::idToToken(int32_t id) const {
  if (auto it = impl->addedById.find(id); it != impl->addedById.end())
    return impl->added[it->second].content;
  if (const std::string *t = impl->model->idToToken(id))
    return *t;
  return std::nullopt;
}

bool Tokenizer::isSpecial(int32_t id) const {
  auto it = impl->addedById.find(id);
  return it != impl->addedById.end() && impl->added[it->second].special;
}

DecodeStream::DecodeStream(const Tokenizer &tokenizer, bool skipSpecialTokens)
    : tokenizer(tokenizer), skipSpecial(skipSpecialTokens) {}

absl::StatusOr<std::string> DecodeStream::step(int32_t id) {
  // `tokenizers`' step_decode_stream: decode the ids since the last
  // emitted boundary; once the text grew and does not end in U+FFFD (a
  // character still incomplete), emit what follows the previous text and
  // keep only the ids the next step needs for context.
  ids.push_back(id);
  auto text = tokenizer.decode(ids, skipSpecial);
  if (!text.ok())
    return text.status();
  static constexpr std::string_view kReplacement = "\xef\xbf\xbd";
  const bool incomplete =
      text->size() >= 3 &&
      text->compare(text->size() - 3, 3, kReplacement.data(), 3) == 0;
  if (text->size() <= prefix.size() || incomplete)
    return std::string();
  if (text->compare(0, prefix.size(), prefix) != 0)
    return absl::InternalError("decoded text changed before its end");
  std::string fresh = text->substr(prefix.size());
  const size_t newPrefixIndex = ids.size() - prefixIndex;
  ids.erase(ids.begin(),
            ids.begin() + static_cast<std::ptrdiff_t>(prefixIndex));
  auto kept = tokenizer.decode(ids, skipSpecial);
  if (!kept.ok())
    return kept.status();
  prefix = std::move(*kept);
  prefixIndex = newPrefixIndex;
  return fresh;
}

std::string byteLevelTokenizerJson() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string token;
    appendUtf8(token, byteToChar()[b]);
    vocab[token] = b;
  }
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", nlohmann::json::array()},
                      {"normalizer", nullptr},
                      {"pre_tokenizer",
                       {{"type", "ByteLevel"},
                        {"add_prefix_space", false},
                        {"trim_offsets", true},
                        {"use_regex", true}}},
                      {"post_processor",
                       {{"type", "ByteLevel"},
                        {"add_prefix_space", true},
                        {"trim_offsets", false},
                        {"use_regex", true}}},
                      {"decoder",
                       {{"type", "ByteLevel"},
                        {"add_prefix_space", true},
                        {"trim_offsets", true},
                        {"use_regex", true}}},
                      {"model",
                       {{"type", "BPE"},
                        {"dropout", nullptr},
                        {"unk_token", nullptr},
                        {"continuing_subword_prefix", nullptr},
                        {"end_of_word_suffix", nullptr},
                        {"fuse_unk", false},
                        {"byte_fallback", false},
                        {"ignore_merges", false},
                        {"vocab", vocab},
                        {"merges", nlohmann::json::array()}}}};
  return j.dump(2) + "\n";
}

} // namespace ds::tok
