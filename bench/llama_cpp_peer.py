#!/usr/bin/env python3
"""Whole-model prefill and decode, ds against llama.cpp, on one checkpoint.

Benchmark-only (run by bench/llama-cpp.sh, which builds llama.cpp and
creates the virtual environment); nothing at run time needs Python.

  llama_cpp_peer.py write-model DIR [--layers 4 --hidden 1024 ...]
      A Mixtral-shaped checkpoint written by transformers (random weights,
      f32 safetensors) with a sentencepiece tokenizer trained here, so that
      llama.cpp's convert_hf_to_gguf.py converts it as it converts Mixtral.
  llama_cpp_peer.py compare --llama-bench BIN --ds-bench BIN
      --pair NAME GGUF DSA [--pair ...] [--threads 1 2] [--runs 5]
      [--prompt 128] [--gen 64]
      For each pair and thread count, alternates llama-bench (pp PROMPT,
      tg GEN) with ds-bench --only model (the same shapes) RUNS times and
      prints medians and the ratio ds / llama.cpp per run pair.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys


def write_model(args):
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    os.makedirs(args.dir, exist_ok=True)
    torch.manual_seed(args.seed)
    config = MixtralConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        num_local_experts=args.experts,
        num_experts_per_tok=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=1e6,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = MixtralForCausalLM(config).to(torch.float32)
    model.save_pretrained(args.dir, safe_serialization=True)
    write_tokenizer(args.dir, args.vocab, args.seed)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dir}: Mixtral-shaped, {params / 1e9:.3f} B parameters")


def write_tokenizer(out, vocab, seed):
    """A sentencepiece (Llama-style) tokenizer.model for the converter;
    ds reads token ids, so its content does not matter to the timing."""
    import sentencepiece as spm

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
             for _ in range(20000)]
    corpus = os.path.join(out, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(20000):
            f.write(" ".join(rng.choice(words) for _ in range(12)) + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(out, "tokenizer"),
        vocab_size=min(vocab, 8000), model_type="bpe", hard_vocab_limit=False,
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    os.remove(corpus)
    os.remove(os.path.join(out, "tokenizer.vocab"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                   "eos_token": "</s>", "unk_token": "<unk>"}, f)


def llama_rate(binary, gguf, threads, prompt, gen):
    """tokens/s of one llama-bench test (pp PROMPT when gen == 0, else tg)."""
    cmd = [binary, "-m", gguf, "-t", str(threads), "-r", "1", "-o", "json",
           "-p", str(prompt), "-n", str(gen)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)[0]["avg_ts"])


def ds_rate(binary, dsa, threads, prompt, gen):
    cmd = [binary, "--model", dsa, "--only", "model", "--threads",
           str(threads), "--prompt-len", str(prompt), "--gen", str(gen)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("model-rate "):
            return float(line.split()[1])
    raise RuntimeError("ds-bench printed no model-rate line:\n" + out)


def compare(args):
    print(f"ds vs llama.cpp, alternating runs, medians of {args.runs}; "
          f"pp = prefill {args.prompt} tokens, tg = decode {args.gen} tokens")
    print(f"{'model':<28}{'thr':>4}{'test':>6}{'ds tok/s':>12}"
          f"{'llama tok/s':>13}{'ds/llama':>10}{'range':>16}")
    for name, gguf, dsa in args.pair:
        for threads in args.threads:
            for test, prompt, gen in (("pp", args.prompt, 0),
                                      ("tg", 0, args.gen)):
                ds, ll, ratio = [], [], []
                for _ in range(args.runs):
                    a = llama_rate(args.llama_bench, gguf, threads, prompt, gen)
                    b = ds_rate(args.ds_bench, dsa, threads, prompt, gen)
                    ll.append(a)
                    ds.append(b)
                    ratio.append(b / a)
                print(f"{name:<28}{threads:>4}{test:>6}"
                      f"{statistics.median(ds):>12.1f}"
                      f"{statistics.median(ll):>13.1f}"
                      f"{statistics.median(ratio):>9.2f}x"
                      f"{min(ratio):>8.2f}-{max(ratio):.2f}x", flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-model")
    w.add_argument("dir")
    w.add_argument("--layers", type=int, default=4)
    w.add_argument("--hidden", type=int, default=1024)
    w.add_argument("--intermediate", type=int, default=2816)
    w.add_argument("--heads", type=int, default=16)
    w.add_argument("--kv-heads", type=int, default=8)
    w.add_argument("--experts", type=int, default=8)
    w.add_argument("--vocab", type=int, default=32000)
    w.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("--llama-bench", required=True)
    c.add_argument("--ds-bench", required=True)
    c.add_argument("--pair", nargs=3, action="append", required=True,
                   metavar=("NAME", "GGUF", "DSA"))
    c.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    c.add_argument("--runs", type=int, default=5)
    c.add_argument("--prompt", type=int, default=128)
    c.add_argument("--gen", type=int, default=64)
    args = ap.parse_args()
    if args.cmd == "write-model":
        write_model(args)
    else:
        compare(args)


if __name__ == "__main__":
    sys.exit(main())
