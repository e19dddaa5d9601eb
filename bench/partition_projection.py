#!/usr/bin/env python3
"""What DeepSeek-V3 671B needs per process, partitioned by ds, on a cluster.

  bench/partition_projection.py [--modes "tp=8;ep=8;dp=8 moe-all-to-all"]
      [--context 4096] [--batch 32] [--tokens-per-s 2000] [--dir DIR]

Writes the real model's shapes without its data (sparse_checkpoint.py),
imports them with ds-translate, partitions them with ds-opt
--ds-partition{MODE print-collectives} for each mode, and turns each
process's report (its decode program's collectives and the values they move
per token, its weight values, its KV cache values per token) into:

  weights per process at FP8 (1 byte) and bf16 (2 bytes); KV cache per
  process for --batch sequences of --context tokens (bf16); collectives per
  decode step; and the bytes each process sends per decoded token and per
  second at --tokens-per-s tokens/s for the whole deployment (activations in
  bf16 on the wire; a ring all-reduce sends 2(P-1)/P of its data, an
  all-gather (P-1)/P of the whole, an all-to-all the (P-1)/P of the rows that
  leave the process; P is the whole grid, an upper bound for collectives
  over part of it; data-parallel replicas share the tokens). A pipeline
  (pp) is reported per stage, the largest stage's figures: it sends the
  residual stream to the next stage once per token (bf16), and the last
  stage broadcasts each token's logits to the other stages (f32, as the
  runtime does: every rank samples the same token from them).

Benchmark-only: nothing in the tests runs it. Standard library only.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout + r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="tp=8;ep=8;tp=2 ep=4;dp=8 moe-all-to-all;"
                    "tp=8 ep=2;dp=2 tp=8 moe-all-to-all;dp=16 moe-all-to-all;"
                    "tp=8 pp=2;ep=8 pp=2;pp=16")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=32,
                    help="sequences decoded at once per replica")
    ap.add_argument("--tokens-per-s", type=float, default=2000.0,
                    help="decode throughput of the whole deployment")
    ap.add_argument("--build", default=os.environ.get(
        "DS_BUILD_DIR", os.path.join(ROOT, "build")))
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    bindir = os.path.join(args.build, "bin")
    work = args.dir or os.path.join(args.build, "projection")
    ckpt = os.path.join(work, "deepseek_v3")
    print(run([sys.executable, os.path.join(ROOT, "bench",
                                            "sparse_checkpoint.py"), ckpt]),
          end="")
    mlir = os.path.join(work, "deepseek_v3.mlir")
    run([os.path.join(bindir, "ds-translate"), "--import-hf", ckpt,
         "--max-cache-len", str(args.context), "-o", mlir])
    pattern = re.compile(
        r"@decode(?:\.stage\d+)?: (\d+) all-reduces of (\d+) values per "
        r"token in all, (\d+) all-gathers of (\d+) values per token"
        r"(?:, (\d+) receives from the previous pipeline stage, (\d+) sends "
        r"of (\d+) values per token to the next)?"
        r"(?:, (\d+) MoE all-to-all pairs moving at most (\d+) values per "
        r"token)?; this process holds (\d+) weight values .*? and (\d+) KV "
        r"cache values per token")
    vocab = int(re.search(r'"vocab_size": (\d+)',
                          open(os.path.join(ckpt, "config.json")).read())
                .group(1))
    print(f"DeepSeek-V3 671B, decode; {args.batch} sequences of "
          f"{args.context} tokens per replica; {args.tokens_per_s:.0f} "
          f"tokens/s for the whole deployment; bf16 activations on the wire")
    head = ("| partition | processes | weights / process FP8, bf16 (GB) | "
            "KV cache / process (GB) | collectives / decode step | "
            "sent / token / process (KB) | sent / process (GB/s) |")
    print(head)
    print("|" + "---|" * 7)
    for mode in [m.strip() for m in args.modes.split(";") if m.strip()]:
        out = run([os.path.join(bindir, "ds-opt"), mlir,
                   f"--ds-partition={mode} print-collectives", "-o",
                   os.devnull])
        stages = [tuple(int(g or 0) for g in m.groups())
                  for m in pattern.finditer(out)]
        if not stages:
            sys.exit(f"{mode}: no report in:\n{out}")
        sizes = {k: int(v)
                 for k, v in re.findall(r"(tp|ep|dp|pp)=(\d+)", mode)}
        procs = 1
        for v in sizes.values():
            procs *= v
        replicas = sizes.get("dp", 1)
        share = (procs - 1) / procs
        per_process_tokens = args.tokens_per_s / replicas
        rows = []
        for k, (reduces, reduced, gathers, gathered, recvs, sends, sent_p2p,
                pairs, exchanged, weights, cache) in enumerate(stages):
            sent = 2 * (2 * share * reduced + share * gathered +
                        share * exchanged + sent_p2p)
            if len(stages) > 1 and k == len(stages) - 1:
                sent += 4 * vocab * (len(stages) - 1)
            rows.append((weights, cache * 2 * args.context * args.batch,
                         (reduces, gathers, 3 * pairs), sent))
        weights = max(r[0] for r in rows)
        kv = max(r[1] for r in rows)
        sent = max(r[3] for r in rows)
        # Per MoE layer an all-to-all pair is 3 calls: the row counts, then
        # the rows each way. A pipeline's stages: the most any one makes.
        reduces, gathers, alltoalls = (max(r[2][i] for r in rows)
                                       for i in range(3))
        steps = f"{reduces} all-reduce, {gathers} all-gather"
        if alltoalls:
            steps += f", {alltoalls} all-to-all"
        if len(rows) > 1:
            steps = (f"{len(rows)} stages, each at most {steps}, "
                     f"1 send and 1 receive; 1 logits broadcast")
        print(f"| {mode} | {procs} | {weights / 1e9:.0f}, "
              f"{2 * weights / 1e9:.0f} | {kv / 1e9:.1f} | {steps} | "
              f"{sent / 1e3:.0f} | {sent * per_process_tokens / 1e9:.2f} |")

if __name__ == "__main__":
    main()
