//===- Bpe.cpp - the BPE model of tokenizer.json --------------------------===//

#include "Bpe.h"
#include "Components.h"
#include "Unicode.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include <queue>

namespace ds::tok {

absl::StatusOr<std::unique_ptr<Bpe>> Bpe::parse(const nlohmann::json &j,
                                                const std::string &path) {
  auto type = stringField(j, path, "type");
  if (!type.ok())
    return type.status();
  if (*type != "BPE")
    return absl::UnimplementedError(absl::StrCat(
        path, ".type: model '", *type, "' is not supported (supported: BPE)"));
  for (const char *field : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (j.contains(field) && !j[field].is_null() &&
        !(j[field].is_string() && j[field].get<std::string>().empty()))
      return absl::UnimplementedError(
          absl::StrCat(path, ".", field, ": not supported"));
  if (j.contains("dropout") && !j["dropout"].is_null())
    return absl::UnimplementedError(
        absl::StrCat(path, ".dropout: BPE dropout is for training only"));
  auto bpe = std::unique_ptr<Bpe>(new Bpe());
  for (auto [field, to] : {std::pair{"byte_fallback", &bpe->byteFallback},
                           {"fuse_unk", &bpe->fuseUnk},
                           {"ignore_merges", &bpe->ignoreMerges}}) {
    auto v = boolField(j, path, field, false);
    if (!v.ok())
      return v.status();
    *to = *v;
  }
  auto vocab = j.find("vocab");
  if (vocab == j.end() || !vocab->is_object())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".vocab: expected an object of token: id"));
  int32_t most = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > (1 << 30))
      return absl::InvalidArgumentError(absl::StrCat(
          path, ".vocab[\"", it.key(), "\"]: expected a non-negative id"));
    const auto id = it.value().get<int32_t>();
    bpe->vocab[it.key()] = id;
    most = std::max(most, id);
  }
  bpe->tokens.resize(static_cast<size_t>(most + 1));
  bpe->present.assign(static_cast<size_t>(most + 1), false);
  for (const auto &[token, id] : bpe->vocab) {
    bpe->tokens[id] = token;
    bpe->present[id] = true;
  }
  auto merges = j.find("merges");
  if (merges == j.end() || !merges->is_array())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ".merges: expected an array"));
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const nlohmann::json &m = (*merges)[rank];
    std::string a, b;
    if (m.is_string()) {
      // "left right" (the format before tokenizers 0.20).
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos ||
          s.find(' ', space + 1) != std::string::npos)
        return absl::InvalidArgumentError(
            absl::StrCat(path, ".merges[", rank, "]: expected \"left right\""));
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() &&
               m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".merges[", rank, "]: expected [left, right]"));
    }
    auto ia = bpe->vocab.find(a), ib = bpe->vocab.find(b),
         im = bpe->vocab.find(a + b);
    if (ia == bpe->vocab.end() || ib == bpe->vocab.end() ||
        im == bpe->vocab.end())
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".merges[", rank, "]: '", a, "' + '", b,
                       "' has a part or a result outside the vocabulary"));
    const uint64_t key = static_cast<uint64_t>(ia->second) << 32 |
                         static_cast<uint32_t>(ib->second);
    // The first (lowest) rank of a pair counts.
    bpe->merges.try_emplace(key, static_cast<int32_t>(rank), im->second);
  }
  if (j.contains("unk_token") && !j["unk_token"].is_null()) {
    auto name = stringField(j, path, "unk_token");
    if (!name.ok())
      return name.status();
    auto it = bpe->vocab.find(*name);
    if (it == bpe->vocab.end())
      return absl::InvalidArgumentError(absl::StrCat(
          path, ".unk_token: '", *name, "' is not in the vocabulary"));
    bpe->unk = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = bpe->vocab.find(absl::StrFormat("<0x%02X>", b));
    bpe->byteTokens[b] = it == bpe->vocab.end() ? -1 : it->second;
  }
  return bpe;
}

std::optional<int32_t> Bpe::tokenToId(std::string_view token) const {
  auto it = vocab.find(absl::string_view(token.data(), token.size()));
  if (it == vocab.end())
    return std::nullopt;
  return it->second;
}

const std::string *Bpe::idToToken(int32_t id) const {
  if (id < 0 || id >= size() || !present[id])
    return nullptr;
  return &tokens[id];
}

void Bpe::encodeWord(std::string_view word, std::vector<int32_t> &out) const {
  if (ignoreMerges)
    if (auto it = vocab.find(absl::string_view(word.data(), word.size()));
        it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  {
    std::lock_guard<std::mutex> lock(cacheMutex);
    if (auto it = cache.find(absl::string_view(word.data(), word.size()));
        it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cacheMutex);
  if (cache.size() >= kCacheWords)
    cache.clear();
  cache.emplace(std::string(word), std::move(ids));
}

void Bpe::merge(std::string_view word, std::vector<int32_t> &out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool live;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  bool lastUnk = false;
  auto add = [&](int32_t id) {
    const int32_t at = static_cast<int32_t>(syms.size());
    syms.push_back({id, at - 1, at + 1, true});
  };
  for (size_t i = 0; i < word.size();) {
    int n = validSequence(word, i);
    if (n == 0)
      n = 1;
    const std::string_view ch = word.substr(i, n);
    i += n;
    if (auto it = vocab.find(absl::string_view(ch.data(), ch.size()));
        it != vocab.end()) {
      add(it->second);
      lastUnk = false;
      continue;
    }
    if (byteFallback) {
      bool all = true;
      for (char c : ch)
        all = all && byteTokens[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch)
          add(byteTokens[static_cast<uint8_t>(c)]);
        lastUnk = false;
        continue;
      }
    }
    if (unk) {
      if (!(fuseUnk && lastUnk))
        add(*unk);
      lastUnk = true;
    }
  }
  if (syms.empty())
    return;
  syms.back().next = -1;

  struct Candidate {
    int32_t rank, pos, merged;
    bool operator>(const Candidate &o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t pos) {
    const int32_t next = syms[pos].next;
    if (next < 0)
      return;
    const uint64_t key = static_cast<uint64_t>(syms[pos].id) << 32 |
                         static_cast<uint32_t>(syms[next].id);
    if (auto it = merges.find(key); it != merges.end())
      queue.push({it->second.first, pos, it->second.second});
  };
  for (int32_t p = 0; p + 1 < static_cast<int32_t>(syms.size()); ++p)
    consider(p);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol &left = syms[top.pos];
    if (!left.live || left.next < 0)
      continue;
    Symbol &right = syms[left.next];
    const uint64_t key =
        static_cast<uint64_t>(left.id) << 32 | static_cast<uint32_t>(right.id);
    auto it = merges.find(key);
    if (it == merges.end() || it->second.first != top.rank ||
        it->second.second != top.merged)
      continue; // stale: one side merged since
    left.id = top.merged;
    right.live = false;
    left.next = right.next;
    if (right.next >= 0)
      syms[right.next].prev = top.pos;
    if (left.prev >= 0)
      consider(left.prev);
    consider(top.pos);
  }
  for (int32_t p = 0; p >= 0; p = syms[p].next)
    out.push_back(syms[p].id);
}

} // namespace ds::tok
