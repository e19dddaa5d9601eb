//===- Unicode.cpp - UTF-8 helpers of the tokenizer -----------------------===//

#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <utf8proc.h>

namespace ds::tok {

namespace {
/// How many bytes from s[i] follow the shape of a UTF-8 sequence: the
/// lead byte, a second byte in the range the lead allows (narrower after
/// E0, ED, F0, F4: no overlongs, surrogates or code points past U+10FFFF),
/// then continuation bytes; 0 when s[i] cannot lead one. `need`: the
/// length the lead asks for.
int sequenceShape(std::string_view s, size_t i, int &need) {
  const auto b = [&](size_t j) { return static_cast<uint8_t>(s[j]); };
  const uint8_t c = b(i);
  uint8_t lo = 0x80, hi = 0xbf;
  if (c < 0x80)
    need = 1;
  else if (c >= 0xc2 && c <= 0xdf)
    need = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    need = 3;
    lo = c == 0xe0 ? 0xa0 : lo;
    hi = c == 0xed ? 0x9f : hi;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 4;
    lo = c == 0xf0 ? 0x90 : lo;
    hi = c == 0xf4 ? 0x8f : hi;
  } else {
    need = 0;
    return 0;
  }
  int n = 1;
  if (need > 1 && i + 1 < s.size() && b(i + 1) >= lo && b(i + 1) <= hi) {
    n = 2;
    while (n < need && i + n < s.size() && b(i + n) >= 0x80 && b(i + n) <= 0xbf)
      ++n;
  }
  return n;
}
} // namespace

int validSequence(std::string_view s, size_t i) {
  int need;
  const int n = sequenceShape(s, i, need);
  return n > 0 && n == need ? need : 0;
}

int invalidPrefix(std::string_view s, size_t i) {
  // One replacement for the longest prefix of a valid sequence's shape
  // that stops short; a byte that cannot start one is its own.
  int need;
  return std::max(1, sequenceShape(s, i, need));
}

std::string utf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (int n = validSequence(s, i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\xef\xbf\xbd");
      i += invalidPrefix(s, i);
    }
  }
  return out;
}

bool isValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    int n = validSequence(s, i);
    if (!n)
      return false;
    i += n;
  }
  return true;
}

std::vector<char32_t> codePoints(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    int n = validSequence(s, i);
    if (n <= 1) {
      out.push_back(c);
      i += 1;
      continue;
    }
    char32_t cp = c & (0xff >> (n + 1));
    for (int k = 1; k < n; ++k)
      cp = cp << 6 | (static_cast<uint8_t>(s[i + k]) & 0x3f);
    out.push_back(cp);
    i += n;
  }
  return out;
}

void appendUtf8(std::string &out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xc0 | c >> 6));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | c >> 12));
    out.push_back(static_cast<char>(0x80 | (c >> 6 & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | c >> 18));
    out.push_back(static_cast<char>(0x80 | (c >> 12 & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c >> 6 & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
  }
}

const std::array<char32_t, 256> &byteToChar() {
  // Printable Latin-1 bytes stand for themselves; the others take the code
  // points from 256 on, in byte order (GPT-2's bytes_to_unicode).
  static const std::array<char32_t, 256> map = [] {
    std::array<char32_t, 256> m{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
      m[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return m;
  }();
  return map;
}

int charToByte(char32_t c) {
  static const std::array<int16_t, 324> inverse = [] {
    std::array<int16_t, 324> m;
    m.fill(-1);
    const auto &fwd = byteToChar();
    for (int b = 0; b < 256; ++b)
      m[fwd[b]] = static_cast<int16_t>(b);
    return m;
  }();
  return c < inverse.size() ? inverse[c] : -1;
}

absl::StatusOr<std::string> normalize(std::string_view s, NormalForm form) {
  // ASCII is in every normal form.
  bool ascii = true;
  for (char c : s)
    ascii = ascii && static_cast<uint8_t>(c) < 0x80;
  if (ascii)
    return std::string(s);
  int options = UTF8PROC_STABLE;
  switch (form) {
  case NormalForm::NFC:
    options |= UTF8PROC_COMPOSE;
    break;
  case NormalForm::NFD:
    options |= UTF8PROC_DECOMPOSE;
    break;
  case NormalForm::NFKC:
    options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    break;
  case NormalForm::NFKD:
    options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    break;
  }
  utf8proc_uint8_t *out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t *>(s.data()),
                   static_cast<utf8proc_ssize_t>(s.size()), &out,
                   static_cast<utf8proc_option_t>(options));
  if (n < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("unicode normalization failed: ", utf8proc_errmsg(n)));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(out,
                                                                &std::free);
  return std::string(reinterpret_cast<const char *>(out),
                     static_cast<size_t>(n));
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : codePoints(s))
    appendUtf8(out, static_cast<char32_t>(
                        utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
  return out;
}

} // namespace ds::tok
