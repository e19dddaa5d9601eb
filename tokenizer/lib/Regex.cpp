//===- Regex.cpp - PCRE2 patterns of tokenizer.json -----------------------===//

#include "Regex.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace ds::tok {

struct Regex::Impl {
  pcre2_code *code = nullptr;
  ~Impl() {
    if (code)
      pcre2_code_free(code);
  }
};

absl::StatusOr<std::unique_ptr<Regex>>
Regex::compile(std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code *code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    return absl::InvalidArgumentError(
        absl::StrCat("pattern '", std::string(pattern), "' at offset ", offset,
                     ": ", reinterpret_cast<const char *>(message)));
  }
  // JIT where PCRE2 has it; the interpreter otherwise (same matches).
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::unique_ptr<Regex> re(new Regex());
  re->impl = std::make_unique<Impl>();
  re->impl->code = code;
  return re;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::literal(std::string_view text) {
  std::string quoted = "\\Q";
  for (size_t i = 0; i < text.size(); ++i) {
    // \E inside the text would end the quoting: split it.
    if (text.compare(i, 2, "\\E") == 0) {
      quoted += "\\E\\\\E\\Q";
      ++i;
      continue;
    }
    quoted += text[i];
  }
  quoted += "\\E";
  return compile(quoted);
}

Regex::~Regex() = default;

std::vector<std::pair<size_t, size_t>>
Regex::findAll(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> out;
  findAll(subject, out);
  return out;
}

void Regex::findAll(std::string_view subject,
                    std::vector<std::pair<size_t, size_t>> &out) const {
  out.clear();
  // One match data per thread, for the whole match only (a pattern's groups
  // are not needed: rc 0 says they did not fit, and the match is there).
  struct MatchData {
    pcre2_match_data *md = pcre2_match_data_create(1, nullptr);
    ~MatchData() { pcre2_match_data_free(md); }
  };
  thread_local MatchData data;
  pcre2_match_data *md = data.md;
  size_t at = 0;
  const auto *s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  while (at <= subject.size()) {
    const int rc = pcre2_match(impl->code, s, subject.size(), at,
                               PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) // no match (or a matching error: no more matches)
      break;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b)
      out.emplace_back(b, e);
    if (e > b) {
      at = e;
    } else {
      // An empty match: step over one character.
      if (b >= subject.size())
        break;
      at = b + 1;
      while (at < subject.size() &&
             (static_cast<uint8_t>(subject[at]) & 0xc0) == 0x80)
        ++at;
    }
  }
}

} // namespace ds::tok
