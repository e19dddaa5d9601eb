#!/usr/bin/env python3
"""Checkpoints with the real layer widths of the MoE models ds targets.

Benchmark-only (run by bench/real-width.sh, which creates the virtual
environment); nothing at run time needs Python.

  real_width.py ARCH DIR [--seed 0]
      Writes DIR (config.json + bf16 safetensors shards) with transformers:
      random weights at the model's real widths, with fewer layers (and, for
      DeepSeek-V3, fewer routed experts) so that it fits a 24 GB machine.
      The parameters are made in bf16 directly (no f32 copy).

  ARCH            widths                                   kept
  mixtral         Mixtral 8x7B: hidden 4096, 8 x 14336     2 layers
  qwen3_moe       Qwen3-30B-A3B: hidden 2048, 128 x 768    4 layers
  deepseek_v3     DeepSeek-V3: hidden 7168, experts 2048,  1 dense + 1 MoE
                  MLA ranks 1536 / 512, 128 heads          layer, 32 of the
                                                           256 experts, top-8
                                                           in 8 groups; vocab
                                                           32000 (of 129280)
"""
import argparse
import os
import sys


def config_for(arch):
    from transformers import DeepseekV3Config, MixtralConfig, Qwen3MoeConfig

    if arch == "mixtral":
        return MixtralConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=14336,
            num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8,
            num_local_experts=8, num_experts_per_tok=2,
            max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1e6,
            tie_word_embeddings=False)
    if arch == "qwen3_moe":
        return Qwen3MoeConfig(
            vocab_size=151936, hidden_size=2048, intermediate_size=6144,
            moe_intermediate_size=768, num_hidden_layers=4,
            num_attention_heads=32, num_key_value_heads=4, head_dim=128,
            num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
            decoder_sparse_step=1, mlp_only_layers=[],
            max_position_embeddings=40960, rms_norm_eps=1e-6,
            rope_theta=1e6, tie_word_embeddings=False)
    if arch == "deepseek_v3":
        return DeepseekV3Config(
            vocab_size=32000, hidden_size=7168, intermediate_size=18432,
            moe_intermediate_size=2048, num_hidden_layers=2,
            first_k_dense_replace=1, n_routed_experts=32, n_shared_experts=1,
            num_experts_per_tok=8, n_group=8, topk_group=4,
            routed_scaling_factor=2.5, norm_topk_prob=True,
            num_attention_heads=128, num_key_value_heads=128,
            q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
            qk_rope_head_dim=64, v_head_dim=128,
            max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=False)
    raise SystemExit(f"real_width.py: unknown arch '{arch}' "
                     "(mixtral, qwen3_moe, deepseek_v3)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    config = config_for(args.arch)
    torch.manual_seed(args.seed)
    torch.set_default_dtype(torch.bfloat16)
    model = AutoModelForCausalLM.from_config(config)
    os.makedirs(args.dir, exist_ok=True)
    model.save_pretrained(args.dir, safe_serialization=True,
                          max_shard_size="2GB")
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.dir}: {args.arch} at real widths, "
          f"{params / 1e9:.2f} B parameters (bf16)")


if __name__ == "__main__":
    sys.exit(main())
