//===- ds-tokenize.cpp - encode, decode and check with a tokenizer.json ---===//
//
//   ds-tokenize TOKENIZER [--no-special] < lines
//       each input line a JSON string; prints the ids as a JSON array
//   ds-tokenize TOKENIZER --decode [--skip-special] < lines
//       each input line a JSON array of ids; prints the text as a JSON string
//   ds-tokenize TOKENIZER --check EXPECTED.jsonl
//       each line {"text", "ids", "ids_no_special", "decoded",
//       "decoded_skip"} as the `tokenizers` package gave them: compares
//       encode, decode and streamed decode, prints the counts and the first
//       differences; exits 1 on any difference
//   ds-tokenize --chat-check CASES.jsonl
//       a first line {"templates": {name: source}}, then one line per case
//       {"template", "context", "expected" | "error", "error_exact"} as
//       transformers rendered them: renders each with ds's ChatTemplate,
//       prints the counts and the first differences; exits 1 on any
//   ds-tokenize TOKENIZER --bench FILE [--repeat N]
//       encode throughput over FILE's text (MB/s, median of N)
//
// TOKENIZER is a tokenizer.json or a model directory holding one.
//
//===----------------------------------------------------------------------===//

#include "ds/tok/ChatTemplate.h"
#include "ds/tok/Tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using ds::tok::DecodeStream;
using ds::tok::Tokenizer;

namespace {
int usage() {
  std::fprintf(stderr,
               "usage: ds-tokenize TOKENIZER [--no-special | --decode "
               "[--skip-special] | --check EXPECTED.jsonl | --bench FILE "
               "[--repeat N]]\n");
  return 2;
}

std::string show(const std::string &s) {
  return nlohmann::json(s).dump(-1, ' ', false,
                                nlohmann::json::error_handler_t::replace);
}

int check(const Tokenizer &tok, const std::string &path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "ds-tokenize: %s: cannot open\n", path.c_str());
    return 1;
  }
  size_t lines = 0, encodes = 0, decodes = 0, streams = 0, reported = 0;
  std::string line;
  auto report = [&](const char *what, const std::string &text,
                    const std::string &detail) {
    if (reported++ < 10)
      std::printf("differs (%s) on line %zu %s: %s\n", what, lines,
                  show(text).c_str(), detail.c_str());
  };
  while (std::getline(in, line)) {
    ++lines;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      std::fprintf(stderr, "ds-tokenize: %s:%zu: not a JSON object\n",
                   path.c_str(), lines);
      return 1;
    }
    const std::string text = j["text"].get<std::string>();
    bool same = true;
    for (auto [field, special] :
         {std::pair{"ids", true}, {"ids_no_special", false}}) {
      const auto want = j[field].get<std::vector<int32_t>>();
      auto got = tok.encode(text, special);
      if (!got.ok()) {
        report(field, text, std::string(got.status().message()));
        same = false;
      } else if (*got != want) {
        report(field, text,
               "got " + nlohmann::json(*got).dump() + " want " +
                   nlohmann::json(want).dump());
        same = false;
      }
    }
    encodes += same;
    const auto ids = j["ids"].get<std::vector<int32_t>>();
    bool decodedSame = true;
    for (auto [field, skip] :
         {std::pair{"decoded", false}, {"decoded_skip", true}}) {
      const std::string want = j[field].get<std::string>();
      auto got = tok.decode(ids, skip);
      if (!got.ok() || *got != want) {
        report(
            field, text,
            "got " +
                (got.ok() ? show(*got) : std::string(got.status().message())) +
                " want " + show(want));
        decodedSame = false;
      }
    }
    decodes += decodedSame;
    // Streamed: the pieces add up to the whole decode, each piece whole
    // UTF-8.
    DecodeStream stream(tok, true);
    std::string streamed;
    bool streamOk = true;
    for (int32_t id : ids) {
      auto piece = stream.step(id);
      if (!piece.ok()) {
        streamOk = false;
        break;
      }
      streamed += *piece;
    }
    const std::string whole = j["decoded_skip"].get<std::string>();
    if (!streamOk || streamed != whole.substr(0, streamed.size()) ||
        (!whole.empty() && whole.size() - streamed.size() > 3)) {
      report("stream", text, "streamed " + show(streamed));
    } else {
      ++streams;
    }
  }
  std::printf("%zu strings: encode equal %zu, decode equal %zu, streamed "
              "decode consistent %zu\n",
              lines, encodes, decodes, streams);
  return encodes == lines && decodes == lines && streams == lines ? 0 : 1;
}

int chatCheck(const std::string &path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    std::fprintf(stderr, "ds-tokenize: %s: cannot read\n", path.c_str());
    return 1;
  }
  nlohmann::json head = nlohmann::json::parse(line, nullptr, false);
  if (head.is_discarded() || !head.contains("templates")) {
    std::fprintf(stderr, "ds-tokenize: %s: no templates line\n", path.c_str());
    return 1;
  }
  std::map<std::string, std::unique_ptr<ds::tok::ChatTemplate>> templates;
  for (auto it = head["templates"].begin(); it != head["templates"].end();
       ++it) {
    auto t = ds::tok::ChatTemplate::parse(it.value().get<std::string>());
    if (!t.ok()) {
      std::printf("template %s: %s\n", it.key().c_str(),
                  std::string(t.status().message()).c_str());
      return 1;
    }
    templates[it.key()] = std::move(*t);
  }
  size_t cases = 0, same = 0, reported = 0;
  while (std::getline(in, line)) {
    ++cases;
    nlohmann::ordered_json c =
        nlohmann::ordered_json::parse(line, nullptr, false);
    const std::string name = c["template"].get<std::string>();
    auto got = templates.at(name)->render(c["context"]);
    bool ok;
    std::string detail;
    if (c.contains("error")) {
      const std::string want = c["error"].get<std::string>();
      ok = !got.ok() && (!c.value("error_exact", false) ||
                         std::string(got.status().message()) == want);
      detail =
          "want the error " + show(want) + ", got " +
          (got.ok() ? show(*got) : show(std::string(got.status().message())));
    } else {
      const std::string want = c["expected"].get<std::string>();
      ok = got.ok() && *got == want;
      detail =
          "want " + show(want) + ", got " +
          (got.ok() ? show(*got) : show(std::string(got.status().message())));
    }
    if (ok)
      ++same;
    else if (reported++ < 5)
      std::printf("differs (%s, case %zu): %s\n", name.c_str(), cases,
                  detail.c_str());
  }
  std::printf("%zu chat template cases: %zu rendered as transformers did\n",
              cases, same);
  return same == cases ? 0 : 1;
}

int bench(const Tokenizer &tok, const std::string &path, int repeat) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // Lines, as a server sees requests.
  std::vector<std::string> docs;
  std::istringstream lines(text);
  for (std::string l; std::getline(lines, l);)
    docs.push_back(l + "\n");
  std::vector<double> seconds;
  size_t tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    tokens = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (const std::string &d : docs) {
      auto ids = tok.encode(d, false);
      if (!ids.ok()) {
        std::fprintf(stderr, "ds-tokenize: %s\n",
                     std::string(ids.status().message()).c_str());
        return 1;
      }
      tokens += ids->size();
    }
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double s = seconds[seconds.size() / 2];
  std::printf("encoded %zu bytes (%zu lines) into %zu tokens: %.1f MB/s, "
              "%.2f M tokens/s (median of %d, one thread)\n",
              text.size(), docs.size(), tokens, text.size() / s / 1e6,
              tokens / s / 1e6, repeat);
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  if (argc == 3 && std::string(argv[1]) == "--chat-check")
    return chatCheck(argv[2]);
  if (argc < 2)
    return usage();
  std::string mode, file;
  bool noSpecial = false, skipSpecial = false;
  int repeat = 5;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-special")
      noSpecial = true;
    else if (a == "--skip-special")
      skipSpecial = true;
    else if (a == "--decode")
      mode = "decode";
    else if ((a == "--check" || a == "--bench") && i + 1 < argc) {
      mode = a.substr(2);
      file = argv[++i];
    } else if (a == "--repeat" && i + 1 < argc)
      repeat = std::max(1, std::atoi(argv[++i]));
    else
      return usage();
  }
  auto tok = Tokenizer::fromFile(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "ds-tokenize: %s\n",
                 std::string(tok.status().message()).c_str());
    return 1;
  }
  if (mode == "check")
    return check(**tok, file);
  if (mode == "bench")
    return bench(**tok, file, repeat);
  std::string line;
  size_t n = 0;
  while (std::getline(std::cin, line)) {
    ++n;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (mode == "decode") {
      if (!j.is_array()) {
        std::fprintf(stderr, "ds-tokenize: line %zu: expected [ids]\n", n);
        return 1;
      }
      auto text = (*tok)->decode(j.get<std::vector<int32_t>>(), skipSpecial);
      if (!text.ok()) {
        std::fprintf(stderr, "ds-tokenize: line %zu: %s\n", n,
                     std::string(text.status().message()).c_str());
        return 1;
      }
      std::printf("%s\n", show(*text).c_str());
      continue;
    }
    if (!j.is_string()) {
      std::fprintf(stderr, "ds-tokenize: line %zu: expected a JSON string\n",
                   n);
      return 1;
    }
    auto ids = (*tok)->encode(j.get<std::string>(), !noSpecial);
    if (!ids.ok()) {
      std::fprintf(stderr, "ds-tokenize: line %zu: %s\n", n,
                   std::string(ids.status().message()).c_str());
      return 1;
    }
    std::printf("%s\n", nlohmann::json(*ids).dump().c_str());
  }
  return 0;
}
