//===- Unicode.h - UTF-8 helpers of the tokenizer ----------------*- C++
//-*-===//
//
// UTF-8 decoding and encoding, lossy conversion of bytes to text (each
// maximal invalid subpart becomes U+FFFD, as Rust's String::from_utf8_lossy
// and Python's "replace" do), GPT-2's byte <-> character map of byte-level
// BPE, and Unicode normalization forms (utf8proc).
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOK_UNICODE_H
#define DS_TOK_UNICODE_H

#include "absl/status/statusor.h"

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tok {

/// The length of the valid UTF-8 sequence at s[i] (1-4), or 0 where s[i]
/// does not start one (then the maximal invalid subpart is
/// invalidPrefix(s, i) bytes).
int validSequence(std::string_view s, size_t i);
/// Bytes of the maximal subpart of an invalid sequence at s[i]: what one
/// U+FFFD replaces.
int invalidPrefix(std::string_view s, size_t i);
/// s with every maximal invalid subpart replaced by U+FFFD.
std::string utf8Lossy(std::string_view s);
/// Whether s is valid UTF-8.
bool isValidUtf8(std::string_view s);
/// The code points of valid UTF-8 s.
std::vector<char32_t> codePoints(std::string_view s);
/// Appends code point c as UTF-8.
void appendUtf8(std::string &out, char32_t c);

/// GPT-2's byte-level alphabet: byte b as one printable character.
const std::array<char32_t, 256> &byteToChar();
/// The byte a byte-level character stands for, or -1.
int charToByte(char32_t c);

enum class NormalForm { NFC, NFD, NFKC, NFKD };
/// s (valid UTF-8) in normal form `form`.
absl::StatusOr<std::string> normalize(std::string_view s, NormalForm form);
/// s lowercased per code point (Unicode default case mapping).
std::string lowercase(std::string_view s);

} // namespace ds::tok

#endif // DS_TOK_UNICODE_H
