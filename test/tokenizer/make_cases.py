"""Tokenizers and expected outputs for ds's tokenizer exactness test.

Test-only (runs in the virtual environment scripts/test.sh makes, with the
`tokenizers` package from PyPI). Builds tokenizers of the kinds ds serves,
from the published structure of their tokenizer.json files:

  deepseek_v3  byte-level BPE, a Sequence of Split pre-tokenizers (digits in
               threes, CJK runs, a pattern with lookahead), BOS template,
               special tokens in DeepSeek's spelling
  qwen2        NFC, one Split with lookahead and case-insensitive groups,
               byte-level BPE, <|im_start|> / <|im_end|> specials
  gpt2         byte-level BPE with the built-in regex (use_regex) and
               ignore_merges (as Llama 3's)
  mixtral      BPE with byte fallback over a metaspace (Prepend + Replace
               normalizers), <unk> fused, <s> template, the Llama decoders
  llama_first  the same model with the Metaspace pre-tokenizer
               (prepend_scheme "first") and Metaspace decoder

each trained on a generated corpus, saved as DIR/<name>/tokenizer.json, and
DIR/<name>/expected.jsonl with, for every test string, the ids with and
without special tokens and the decodes with and without them skipped.
"""

import json
import os
import random
import sys
import sysconfig

from tokenizers import (Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers, Regex)


def stdlib_lines(limit):
    """Source lines of Python's standard library: code with indentation,
    operators and identifiers."""
    root = sysconfig.get_paths()["stdlib"]
    lines = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8",
                      errors="ignore") as f:
                lines.extend(f.read().splitlines())
        if len(lines) > limit:
            break
    return lines[:limit]


WORDS = ("the of and to in is was for on that with as by at from his it an "
         "were are which this be or has had not but their they have one all "
         "new first two after who been its more other most also city time "
         "over into only used some would there than such these world many "
         "expert mixture router token attention layer model weight scale "
         "Hello World Python DeepSeek Mixtral Qwen don't it's we're I'll "
         "you've she'd THEY'RE Isn't").split()

SCRIPTS = [
    "日本語のテキストとカタカナ、ひらがな。", "中文分词测试，包括标点符号。",
    "한국어 문장도 있습니다.", "Ελληνικά κείμενα", "Кириллица и пробелы",
    "العربية نص", "עברית", "हिन्दी पाठ", "ภาษาไทย", "Ünïcödé café naïve",
    "e\u0301 a\u0308 n\u0303 (combining)", "ﬁ ﬂ ① ² ½ ＡＢＣ （全角）",
    "𝐀𝐁𝐂 𝔘𝔫𝔦 𝟘𝟙", "emoji 😀😃🤖 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "\u00a0nbsp\u2009thin\u3000ideographic", "tab\tand\nnewline\r\nwindows",
    "zero\u200bwidth\u200djoiner\ufeffbom", "private \ue000\uf8ff use",
    "replacement \ufffd char", "controls \x01\x02\x1f\x7f",
    "<0x41> looks like a byte token", "▁ already a metaspace ▁▁",
    "Ġ looks byte-level", "$$ \\frac{a}{b} $$", "x = [1, 2, 3]; y = {'a': 1}",
]


def corpus(rng, n):
    code = stdlib_lines(20000)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            out.append(" ".join(rng.choice(WORDS)
                                for _ in range(rng.randint(3, 20))) + ".")
        elif kind < 0.7:
            out.append(rng.choice(code))
        elif kind < 0.85:
            out.append(rng.choice(SCRIPTS))
        else:
            out.append(str(rng.randint(0, 10**rng.randint(1, 15))))
    return out


def test_strings(rng, n, specials):
    code = stdlib_lines(20000)
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0",
              "\u3000", "        "]
    strings = ["", " ", "  ", "\n", "a", "0", "00000000000000000000",
               "1234567", "😀", "<0xFF>", specials[0], specials[0] * 2,
               " " + specials[-1] + " x", "\u0301", "ﬃ"]
    while len(strings) < n:
        parts = []
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.25:
                parts.append(" ".join(rng.choice(WORDS)
                                      for _ in range(rng.randint(1, 8))))
            elif kind < 0.45:
                parts.append(rng.choice(code))
            elif kind < 0.6:
                parts.append(rng.choice(SCRIPTS))
            elif kind < 0.7:
                parts.append(str(rng.randint(0, 10**rng.randint(1, 25))))
            elif kind < 0.8:
                parts.append(rng.choice(spaces) * rng.randint(1, 4))
            elif kind < 0.88:
                parts.append(rng.choice(specials))
            elif kind < 0.95:
                # Random characters of assigned blocks.
                blocks = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff),
                          (0x400, 0x4ff), (0x4e00, 0x4fff), (0x3040, 0x30ff),
                          (0xac00, 0xad00), (0x1f600, 0x1f64f),
                          (0x2000, 0x206f), (0x1d400, 0x1d4ff)]
                lo, hi = rng.choice(blocks)
                parts.append("".join(chr(rng.randint(lo, hi))
                                     for _ in range(rng.randint(1, 12))))
            else:
                parts.append(rng.choice(["'s", "'LL", "'t", "n't", "'Re",
                                         "\\s+", "!!!", "...", "--", "==>"]))
        sep = rng.choice(["", " ", "\n", " "])
        strings.append(sep.join(parts))
    return strings[:n]


def byte_level_tokenizer(pre, normalizer, specials, bos, train, vocab,
                         ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def metaspace_tokenizers(train, vocab):
    """Mixtral / Llama style: a BPE trained over metaspace words, then the
    vocabulary laid out as sentencepiece's conversion does (<unk>, <s>,
    </s>, the 256 byte tokens, then the pieces) with byte fallback."""
    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    base.train_from_iterator(train, trainers.BpeTrainer(
        vocab_size=vocab, show_progress=False))
    data = json.loads(base.to_str())
    pieces = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in data["model"]["merges"]]
    vocab_map = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab_map[f"<0x{b:02X}>"] = 3 + b
    for piece, _ in pieces:
        if piece not in vocab_map:
            vocab_map[piece] = len(vocab_map)
    specials = ["<unk>", "<s>", "</s>"]
    made = {}
    for name in ("mixtral", "llama_first"):
        tok = Tokenizer(models.BPE(vocab=vocab_map, merges=merges,
                                   unk_token="<unk>", fuse_unk=True,
                                   byte_fallback=True))
        tok.add_special_tokens(specials)
        if name == "mixtral":
            tok.normalizer = normalizers.Sequence(
                [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
            tok.decoder = decoders.Sequence([
                decoders.Replace("▁", " "), decoders.ByteFallback(),
                decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        else:
            tok.pre_tokenizer = pre_tokenizers.Metaspace(
                replacement="▁", prepend_scheme="first", split=False)
            tok.decoder = decoders.Sequence([
                decoders.Metaspace(replacement="▁", prepend_scheme="first",
                                   split=False),
                decoders.ByteFallback(), decoders.Fuse()])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)])
        made[name] = (tok, specials)
    return made


def main():
    out_dir = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    rng = random.Random(1234)
    train = corpus(rng, 20000)
    ds_specials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                   "<｜User｜>", "<｜Assistant｜>"]
    qwen_specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    made = {}
    made["deepseek_v3"] = (byte_level_tokenizer(
        pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), "isolated"),
            pre_tokenizers.Split(Regex("[一-龥\u3040-ゟ゠-ヿ]+"), "isolated"),
            pre_tokenizers.Split(Regex(
                r"[\r\n]|\s?[\p{L}\p{M}]+|\s?[\p{P}\p{S}]+|\s+(?!\S)|\s+"),
                "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False,
                                     use_regex=False)]),
        None, ds_specials, ds_specials[0], train, 3000), ds_specials)
    made["qwen2"] = (byte_level_tokenizer(
        pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False,
                                     use_regex=False)]),
        normalizers.NFC(), qwen_specials, None, train, 3000), qwen_specials)
    gpt2_specials = ["<|endoftext|>"]
    made["gpt2"] = (byte_level_tokenizer(
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        None, gpt2_specials, None, train, 2000, ignore_merges=True),
        gpt2_specials)
    made.update(metaspace_tokenizers(train, 2000))

    for name, (tok, specials) in made.items():
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        strings = test_strings(random.Random(sum(map(ord, name))), count,
                               specials)
        with open(os.path.join(d, "expected.jsonl"), "w",
                  encoding="utf-8") as f:
            for s in strings:
                ids = tok.encode(s).ids
                f.write(json.dumps({
                    "text": s,
                    "ids": ids,
                    "ids_no_special": tok.encode(
                        s, add_special_tokens=False).ids,
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip": tok.decode(ids, skip_special_tokens=True),
                }, ensure_ascii=False) + "\n")
        print(f"{name}: {len(strings)} strings, vocab {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
