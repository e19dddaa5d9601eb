#!/usr/bin/env python3
"""A Hugging Face checkpoint directory with a model's real shapes and no data.

  sparse_checkpoint.py OUT_DIR [--arch deepseek_v3] [--layers N]
      [--dense-layers N] [--experts N] [--vocab N]

Writes config.json (DeepSeek-V3 671B's, from its published config.json) and
model.safetensors whose header lists every tensor at its real shape (bf16)
while the file is sparse: truncated to its full size (1.3 TB for 671B) but
taking a few MB on disk. ds-translate imports it (it reads headers only), so
ds-opt can partition the real model and report what each process holds and
exchanges, without the weights. The data reads as zeros: fewer layers and
experts and a smaller vocabulary (--layers, --dense-layers, --experts,
--vocab) make a real-width model small
enough to compile and time (zeros multiply as fast as any other value), but
its outputs mean nothing. Standard library only.
"""
import argparse
import json
import os
import struct
import sys

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "attention_bias": False, "first_k_dense_replace": 3, "hidden_act": "silu",
    "hidden_size": 7168, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 61,
    "num_key_value_heads": 128, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06, "rope_interleave": True,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
                     "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096,
                     "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "tie_word_embeddings": False, "topk_group": 4,
    "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
    "v_head_dim": 128, "vocab_size": 129280,
}


def deepseek_v3_tensors(c):
    h, v = c["hidden_size"], c["vocab_size"]
    heads, qr, kr = (c["num_attention_heads"], c["q_lora_rank"],
                     c["kv_lora_rank"])
    nope, rope, vd = (c["qk_nope_head_dim"], c["qk_rope_head_dim"],
                      c["v_head_dim"])
    inter, moe = c["intermediate_size"], c["moe_intermediate_size"]
    t = {"model.embed_tokens.weight": [v, h], "lm_head.weight": [v, h],
         "model.norm.weight": [h]}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = [h]
        t[p + "post_attention_layernorm.weight"] = [h]
        a = p + "self_attn."
        t[a + "q_a_proj.weight"] = [qr, h]
        t[a + "q_a_layernorm.weight"] = [qr]
        t[a + "q_b_proj.weight"] = [heads * (nope + rope), qr]
        t[a + "kv_a_proj_with_mqa.weight"] = [kr + rope, h]
        t[a + "kv_a_layernorm.weight"] = [kr]
        t[a + "kv_b_proj.weight"] = [heads * (nope + vd), kr]
        t[a + "o_proj.weight"] = [h, heads * vd]
        m = p + "mlp."
        if l < c["first_k_dense_replace"]:
            t[m + "gate_proj.weight"] = [inter, h]
            t[m + "up_proj.weight"] = [inter, h]
            t[m + "down_proj.weight"] = [h, inter]
            continue
        t[m + "gate.weight"] = [c["n_routed_experts"], h]
        t[m + "gate.e_score_correction_bias"] = [c["n_routed_experts"]]
        for e in range(c["n_routed_experts"]):
            q = m + f"experts.{e}."
            t[q + "gate_proj.weight"] = [moe, h]
            t[q + "up_proj.weight"] = [moe, h]
            t[q + "down_proj.weight"] = [h, moe]
        s = moe * c["n_shared_experts"]
        t[m + "shared_experts.gate_proj.weight"] = [s, h]
        t[m + "shared_experts.up_proj.weight"] = [s, h]
        t[m + "shared_experts.down_proj.weight"] = [h, s]
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--arch", default="deepseek_v3", choices=["deepseek_v3"])
    ap.add_argument("--layers", type=int, default=0,
                    help="decoder layers (0: the model's)")
    ap.add_argument("--dense-layers", type=int, default=-1,
                    help="leading dense layers (-1: the model's)")
    ap.add_argument("--experts", type=int, default=0,
                    help="routed experts (0: the model's; a multiple of 16)")
    ap.add_argument("--vocab", type=int, default=0,
                    help="vocabulary size (0: the model's)")
    args = ap.parse_args()
    config = dict(DEEPSEEK_V3)
    if args.vocab:
        config["vocab_size"] = args.vocab
    if args.layers:
        config["num_hidden_layers"] = args.layers
    if args.dense_layers >= 0:
        config["first_k_dense_replace"] = args.dense_layers
    if args.experts:
        if args.experts % 16:
            sys.exit("--experts must be a multiple of 16 (8 expert groups of "
                     "which 4 are kept must hold top-8)")
        config["n_routed_experts"] = args.experts
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    header, offset = {}, 0
    for name, shape in deepseek_v3_tensors(config).items():
        n = 1
        for d in shape:
            n *= d
        dtype = "F32" if name.endswith("e_score_correction_bias") else "BF16"
        n *= 4 if dtype == "F32" else 2
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    path = os.path.join(args.out, "model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.truncate(8 + len(blob) + offset)
    print(f"{path}: {len(header)} tensors, {offset / 1e9:.1f} GB of "
          f"(absent) bf16 data")


if __name__ == "__main__":
    main()
