//===- Components.cpp - JSON fields and pattern splits --------------------===//

#include "Components.h"
#include "Regex.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include <algorithm>

namespace ds::tok {

absl::StatusOr<std::string> stringField(const nlohmann::json &j,
                                        const std::string &path,
                                        const char *field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".", field, ": expected a string"));
  return it->get<std::string>();
}

absl::StatusOr<bool> boolField(const nlohmann::json &j, const std::string &path,
                               const char *field, bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null())
    return fallback;
  if (!it->is_boolean())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".", field, ": expected true or false"));
  return it->get<bool>();
}

absl::StatusOr<std::string> patternField(const nlohmann::json &j,
                                         const std::string &path,
                                         const char *field) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_object())
    return absl::InvalidArgumentError(absl::StrCat(
        path, ".", field, ": expected {\"String\": ...} or {\"Regex\": ...}"));
  const std::string at = absl::StrCat(path, ".", field);
  if (it->contains("Regex"))
    return stringField(*it, at, "Regex");
  if (it->contains("String")) {
    auto text = stringField(*it, at, "String");
    if (!text.ok())
      return text.status();
    // As a regex source that matches the text literally.
    std::string quoted;
    for (char c : *text) {
      if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos)
        quoted += '\\';
      quoted += c;
    }
    return quoted;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(at, ": expected {\"String\": ...} or {\"Regex\": ...}"));
}

std::string regexReplace(const Regex &re, std::string_view text,
                         std::string_view content) {
  std::string out;
  size_t prev = 0;
  for (auto [b, e] : re.findAll(text)) {
    out.append(text.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

void splitPiece(const Piece &piece, const Regex &re, SplitBehavior behavior,
                bool invert, std::vector<Piece> &pieces) {
  // `tokenizers`' find_matches: the gaps and the matches in order, each
  // marked; then the behavior folds them into pieces.
  struct Span {
    size_t begin, end;
    bool match;
  };
  // Scratch reused by the thread's calls.
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  thread_local std::vector<Span> spans, out;
  spans.clear();
  out.clear();
  re.findAll(piece.text, matches);
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b)
      spans.push_back({prev, b, invert});
    spans.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != piece.text.size())
    spans.push_back({prev, piece.text.size(), invert});

  switch (behavior) {
  case SplitBehavior::Removed:
    for (const Span &s : spans)
      if (!s.match)
        out.push_back(s);
    break;
  case SplitBehavior::Isolated:
    out.assign(spans.begin(), spans.end());
    break;
  case SplitBehavior::MergedWithPrevious: {
    bool previousMatch = false;
    for (const Span &s : spans) {
      if (s.match && !previousMatch && !out.empty())
        out.back().end = s.end;
      else
        out.push_back(s);
      previousMatch = s.match;
    }
    break;
  }
  case SplitBehavior::MergedWithNext: {
    bool previousMatch = false;
    for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
      if (it->match && !previousMatch && !out.empty())
        out.back().begin = it->begin;
      else
        out.push_back(*it);
      previousMatch = it->match;
    }
    std::reverse(out.begin(), out.end());
    break;
  }
  case SplitBehavior::Contiguous: {
    bool previousMatch = false;
    for (const Span &s : spans) {
      if (s.match == previousMatch && !out.empty())
        out.back().end = s.end;
      else
        out.push_back(s);
      previousMatch = s.match;
    }
    break;
  }
  }
  for (const Span &s : out)
    if (s.end > s.begin)
      pieces.push_back({piece.text.substr(s.begin, s.end - s.begin),
                        piece.atStart && s.begin == 0});
}

} // namespace ds::tok
