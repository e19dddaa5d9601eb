//===- Normalizers.cpp - tokenizer.json normalizers -----------------------===//

#include "Components.h"
#include "Regex.h"
#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ds::tok {
namespace {

class Sequence : public Normalizer {
public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  absl::Status apply(std::string &text) const override {
    for (const auto &p : parts)
      if (absl::Status s = p->apply(text); !s.ok())
        return s;
    return absl::OkStatus();
  }
};

class Form : public Normalizer {
public:
  explicit Form(NormalForm form) : form(form) {}
  absl::Status apply(std::string &text) const override {
    auto out = normalize(text, form);
    if (!out.ok())
      return out.status();
    text = std::move(*out);
    return absl::OkStatus();
  }
  NormalForm form;
};

class Lowercase : public Normalizer {
public:
  absl::Status apply(std::string &text) const override {
    text = lowercase(text);
    return absl::OkStatus();
  }
};

class Prepend : public Normalizer {
public:
  std::string prepend;
  absl::Status apply(std::string &text) const override {
    if (!text.empty())
      text.insert(0, prepend);
    return absl::OkStatus();
  }
};

class Replace : public Normalizer {
public:
  std::unique_ptr<Regex> pattern;
  std::string content;
  absl::Status apply(std::string &text) const override {
    text = regexReplace(*pattern, text, content);
    return absl::OkStatus();
  }
};

/// Rust's char::is_whitespace (Unicode White_Space).
bool isWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
         c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

class Strip : public Normalizer {
public:
  bool left = true, right = true;
  absl::Status apply(std::string &text) const override {
    std::vector<char32_t> cps = codePoints(text);
    size_t b = 0, e = cps.size();
    while (left && b < e && isWhitespace(cps[b]))
      ++b;
    while (right && e > b && isWhitespace(cps[e - 1]))
      --e;
    std::string out;
    for (size_t i = b; i < e; ++i)
      appendUtf8(out, cps[i]);
    text = std::move(out);
    return absl::OkStatus();
  }
};

} // namespace

absl::StatusOr<std::unique_ptr<Normalizer>>
parseNormalizer(const nlohmann::json &j, const std::string &path) {
  if (j.is_null())
    return nullptr;
  auto type = stringField(j, path, "type");
  if (!type.ok())
    return type.status();
  if (*type == "Sequence") {
    auto seq = std::make_unique<Sequence>();
    if (absl::Status st =
            parseParts(j, path, "normalizers", parseNormalizer, seq->parts);
        !st.ok())
      return st;
    return seq;
  }
  if (*type == "NFC")
    return std::make_unique<Form>(NormalForm::NFC);
  if (*type == "NFD")
    return std::make_unique<Form>(NormalForm::NFD);
  if (*type == "NFKC")
    return std::make_unique<Form>(NormalForm::NFKC);
  if (*type == "NFKD")
    return std::make_unique<Form>(NormalForm::NFKD);
  if (*type == "Lowercase")
    return std::make_unique<Lowercase>();
  if (*type == "Prepend") {
    auto p = std::make_unique<Prepend>();
    auto text = stringField(j, path, "prepend");
    if (!text.ok())
      return text.status();
    p->prepend = *text;
    return p;
  }
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
    auto left = boolField(j, path, "strip_left", true);
    auto right = boolField(j, path, "strip_right", true);
    if (!left.ok())
      return left.status();
    if (!right.ok())
      return right.status();
    s->left = *left;
    s->right = *right;
    return s;
  }
  return absl::UnimplementedError(
      absl::StrCat(path, ": normalizer type '", *type,
                   "' is not supported (supported: Sequence, NFC, NFD, NFKC, "
                   "NFKD, Lowercase, Prepend, Replace, Strip)"));
}

} // namespace ds::tok
