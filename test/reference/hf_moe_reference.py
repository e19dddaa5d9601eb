#!/usr/bin/env python3
"""Independent NumPy forward pass of the four MoE families, for checking ds.

Written from shared/MODELS.md (the Hugging Face transformers math), sharing no
code with the ds importer or interpreter: it reads config.json and the
safetensors files itself, keeps an expanded KV cache the way transformers'
DynamicCache does (post-RoPE K and V per layer; MLA caches expanded K/V), and
computes logits for a prefill followed by single-token decode steps.

Usage:
  hf_moe_reference.py MODEL_DIR --tokens tokens.npy --prompt-len S \
      [--compare DUMP_DIR] [--tol 1e-4]
tokens.npy is [B, S + N]: the prompt followed by the N generated tokens. With
--compare, the prefill logits and the N - 1 decode-step logits are compared
against ds-run's prefill_logits.npy / decode_logits.npy (relative error
max|a - b| / max|b|).
"""
import argparse
import json
import re
import math
import os
import struct
import sys

import numpy as np

F32 = np.float32


def load_checkpoint(path):
    files = []
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    out = {}
    for name in files:
        with open(os.path.join(path, name), "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        base = 8 + n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            b, e = info["data_offsets"]
            raw = data[base + b:base + e]
            if info["dtype"] == "BF16":
                bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            elif info["dtype"] == "F8_E4M3":
                arr = e4m3_to_f32(np.frombuffer(raw, dtype=np.uint8))
            else:
                arr = np.frombuffer(raw, dtype=dtypes[info["dtype"]])
            out[key] = arr.astype(F32).reshape(info["shape"])
    # DeepSeek-V3 FP8 checkpoints: weight (e4m3) * weight_scale_inv per
    # block, as transformers' / DeepSeek's weight_dequant computes it.
    for key in [k for k in out if k.endswith(".weight_scale_inv")]:
        w = key[: -len("_scale_inv")]
        s = out.pop(key)
        rows, cols = out[w].shape
        bn = -(-rows // s.shape[0])
        bk = -(-cols // s.shape[1])
        full = np.repeat(np.repeat(s, bn, axis=0), bk, axis=1)[:rows, :cols]
        out[w] = (out[w] * full).astype(F32)
    return out


def e4m3_to_f32(bits):
    """Decodes float8 e4m3fn codes (bias 7, no infinities, 0x7f/0xff NaN)."""
    bits = bits.astype(np.int32)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exp = (bits >> 3) & 0xF
    man = (bits & 0x7).astype(np.float64)
    normal = (1.0 + man / 8.0) * np.exp2(exp - 7.0)
    sub = (man / 8.0) * np.exp2(-6.0)
    val = np.where(exp == 0, sub, normal) * sign
    val = np.where((exp == 0xF) & ((bits & 0x7) == 0x7), np.nan, val)
    return val.astype(F32)


def rms_norm(x, w, eps):
    var = np.mean(x.astype(F32) ** 2, axis=-1, keepdims=True)
    return (w * (x / np.sqrt(var + F32(eps)))).astype(F32)


def silu(x):
    return x / (F32(1) + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def sigmoid(x):
    return F32(1) / (F32(1) + np.exp(-x))


def yarn_get_mscale(s, m=1.0):
    return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0


class Rope:
    """cos/sin tables of transformers' rotary embedding (default, linear, yarn)."""

    def __init__(self, cfg, dim):
        theta = cfg.get("rope_theta", 10000.0)
        scaling = cfg.get("rope_scaling") or {}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        base = (F32(1.0) / (F32(theta) ** (np.arange(0, dim, 2, dtype=F32) / F32(dim)))).astype(F32)
        self.attention_scaling = 1.0
        if kind == "linear":
            base = base / F32(scaling["factor"])
        elif kind == "yarn":
            f = scaling["factor"]
            l0 = scaling["original_max_position_embeddings"]
            bf, bs = scaling.get("beta_fast", 32.0), scaling.get("beta_slow", 1.0)
            ms, msa = scaling.get("mscale"), scaling.get("mscale_all_dim")
            if scaling.get("attention_factor"):
                self.attention_scaling = scaling["attention_factor"]
            elif ms and msa:
                self.attention_scaling = yarn_get_mscale(f, ms) / yarn_get_mscale(f, msa)
            else:
                self.attention_scaling = yarn_get_mscale(f)
            cd = lambda r: (dim * math.log(l0 / (r * 2 * math.pi))) / (2 * math.log(theta))
            low, high = math.floor(cd(bf)), math.ceil(cd(bs))
            low, high = max(low, 0), min(high, dim - 1)
            if low == high:
                high += 0.001
            ramp = np.clip((np.arange(dim // 2, dtype=F32) - low) / (high - low), 0, 1).astype(F32)
            extrapolation = F32(1) - ramp
            pos_freqs = F32(theta) ** (np.arange(0, dim, 2, dtype=F32) / F32(dim))
            interp = F32(1.0) / (F32(f) * pos_freqs)
            base = (interp * (F32(1) - extrapolation) + base * extrapolation).astype(F32)
        elif kind != "default":
            raise SystemExit("unsupported rope type " + kind)
        self.inv_freq = base

    def cos_sin(self, pos):  # pos [B, S] -> [B, S, d/2] each
        ang = pos[..., None].astype(F32) * self.inv_freq
        return (np.cos(ang) * F32(self.attention_scaling)).astype(F32), \
               (np.sin(ang) * F32(self.attention_scaling)).astype(F32)


def rotate_half_apply(x, cos, sin):  # x [..., d]; cos/sin [..., d/2]
    h = x.shape[-1] // 2
    c = np.concatenate([cos, cos], -1)
    s = np.concatenate([sin, sin], -1)
    rot = np.concatenate([-x[..., h:], x[..., :h]], -1)
    return x * c + rot * s


def deinterleave(x):
    d = x.shape[-1]
    return x.reshape(*x.shape[:-1], d // 2, 2).swapaxes(-1, -2).reshape(x.shape)


def complex_pairs_apply(x, cos, sin):  # DeepSeek-V2: adjacent pairs, stays interleaved
    xr, xi = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xr * cos - xi * sin
    out[..., 1::2] = xr * sin + xi * cos
    return out


def causal_attention(q, k, v, q_pos, scale, window=None):
    """q [B,S,Hq,D], k [B,T,Hkv,D], v [B,T,Hkv,Dv]; key j has position j."""
    B, S, Hq, _ = q.shape
    T, Hkv = k.shape[1], k.shape[2]
    g = Hq // Hkv
    out = np.zeros((B, S, Hq, v.shape[-1]), F32)
    kv_pos = np.arange(T)
    for b in range(B):
        for h in range(Hq):
            kh = h // g
            s = (q[b, :, h] @ k[b, :, kh].T) * F32(scale)  # [S, T]
            allowed = kv_pos[None, :] <= q_pos[b][:, None]
            if window:
                allowed &= kv_pos[None, :] > q_pos[b][:, None] - window
            s = np.where(allowed, s, np.finfo(F32).min)
            out[b, :, h] = softmax(s.astype(F32)) @ v[b, :, kh]
    return out


def prune_2_4(w):
    """2:4 magnitude pruning along the last axis: in every group of 4 the two
    largest |w| stay (ties: the lower index)."""
    g = w.reshape(-1, 4)
    order = np.argsort(-np.abs(g), axis=1, kind="stable")
    mask = np.zeros_like(g, dtype=bool)
    np.put_along_axis(mask, order[:, :2], True, axis=1)
    return np.where(mask, g, F32(0)).reshape(w.shape).astype(F32)


class Model:
    def __init__(self, path, prune_24=None):
        with open(os.path.join(path, "config.json")) as f:
            self.cfg = json.load(f)
        self.w = load_checkpoint(path)
        if prune_24:
            pattern = re.compile(prune_24)
            for k in self.w:
                if pattern.search(k) and self.w[k].shape[-1] % 4 == 0:
                    self.w[k] = prune_2_4(self.w[k])
        c = self.cfg
        self.type = c["model_type"]
        self.H = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.mla = self.type.startswith("deepseek")
        if self.mla:
            self.dn, self.dr, self.dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
            self.rope = Rope(c, self.dr)
            scale = (self.dn + self.dr) ** -0.5
            rs = c.get("rope_scaling")
            if rs and rs.get("mscale_all_dim"):
                m = yarn_get_mscale(rs["factor"], rs["mscale_all_dim"])
                scale *= m * m
            self.scale = scale
        else:
            self.D = c.get("head_dim") or self.H // self.heads
            self.rope = Rope(c, self.D)
            self.scale = self.D ** -0.5
        self.cache = None

    def W(self, name):
        return self.w[name]

    def linear(self, x, name, bias=False):
        y = x @ self.W(name + ".weight").T
        b = name + ".bias"
        if b in self.w:
            y = y + self.w[b]
        return y.astype(F32)

    def is_moe(self, i):
        c = self.cfg
        if self.type == "mixtral":
            return True
        if self.type.startswith("qwen"):
            return (i not in c.get("mlp_only_layers", [])) and c.get("num_experts", 0) > 0 and \
                (i + 1) % c.get("decoder_sparse_step", 1) == 0
        return i >= c.get("first_k_dense_replace", 0)

    def mlp(self, x, p):
        return self.linear(silu(self.linear(x, p + "gate_proj")) * self.linear(x, p + "up_proj"), p + "down_proj")

    def experts(self, i, p, e):
        fused = p + "experts.gate_up_proj"
        if fused in self.w:
            gu = self.w[fused][e]
            I = gu.shape[0] // 2
            return gu[:I], gu[I:], self.w[p + "experts.down_proj"][e]
        if self.type == "mixtral":
            q = f"model.layers.{i}.block_sparse_moe.experts.{e}."
            return self.W(q + "w1.weight"), self.W(q + "w3.weight"), self.W(q + "w2.weight")
        q = p + f"experts.{e}."
        return self.W(q + "gate_proj.weight"), self.W(q + "up_proj.weight"), self.W(q + "down_proj.weight")

    def route(self, x, p):
        c = self.cfg
        E = self.W(p + "gate.weight").shape[0]
        k = c["num_experts_per_tok"]
        logits = x @ self.W(p + "gate.weight").T
        if self.type == "deepseek_v3":
            s = sigmoid(logits.astype(F32))
            sel = s + self.W(p + "gate.e_score_correction_bias")
            ng, kg = c.get("n_group", 1), c.get("topk_group", 1)
            grp = np.sort(sel.reshape(len(x), ng, E // ng), -1)[..., -2:].sum(-1)
            keep = np.argsort(-grp, -1, kind="stable")[:, :kg]
            mask = np.zeros((len(x), ng), bool)
            np.put_along_axis(mask, keep, True, -1)
            sel = np.where(np.repeat(mask, E // ng, -1), sel, -np.inf)
            idx = np.argsort(-sel, -1, kind="stable")[:, :k]
            w = np.take_along_axis(s, idx, -1)
            if c.get("norm_topk_prob", True):
                w = w / (w.sum(-1, keepdims=True) + 1e-20)
            w = w * c.get("routed_scaling_factor", 1.0)
        else:
            prob = softmax(logits.astype(F32))
            idx = np.argsort(-prob, -1, kind="stable")[:, :k]
            w = np.take_along_axis(prob, idx, -1)
            if self.type == "mixtral" or (self.type.startswith("qwen") and c.get("norm_topk_prob", False)):
                w = w / w.sum(-1, keepdims=True)
            if self.type == "deepseek_v2":
                w = w * c.get("routed_scaling_factor", 1.0)
        return w.astype(F32), idx

    def moe(self, x, i):
        B, S, H = x.shape
        xt = x.reshape(-1, H)
        p = f"model.layers.{i}.mlp."
        rp = p
        if self.type == "mixtral" and (p + "gate.weight") not in self.w:
            rp = f"model.layers.{i}.block_sparse_moe."
        w, idx = self.route(xt, rp)
        out = np.zeros_like(xt, dtype=np.float64)
        E = self.W(rp + "gate.weight").shape[0]
        for e in range(E):  # ascending expert index, as transformers accumulates
            tok, slot = np.nonzero(idx == e)
            if len(tok) == 0:
                continue
            g, u, d = self.experts(i, p, e)
            y = (silu(xt[tok] @ g.T) * (xt[tok] @ u.T)) @ d.T
            out[tok] += w[tok, slot][:, None] * y
        out = out.astype(F32)
        if self.type == "qwen2_moe" and (p + "shared_expert.gate_proj.weight") in self.w:
            sh = self.mlp(xt, p + "shared_expert.")
            out = out + sigmoid(xt @ self.W(p + "shared_expert_gate.weight").T) * sh
        if self.mla:
            out = out + self.mlp(xt, p + "shared_experts.")
        return out.reshape(B, S, H)

    def attention(self, x, i, pos):
        a = f"model.layers.{i}.self_attn."
        B, S, _ = x.shape
        cos, sin = self.rope.cos_sin(pos)
        cos, sin = cos[:, :, None], sin[:, :, None]
        if self.mla:
            c = self.cfg
            if c.get("q_lora_rank"):
                q = self.linear(rms_norm(self.linear(x, a + "q_a_proj"), self.W(a + "q_a_layernorm.weight"), 1e-6), a + "q_b_proj")
            else:
                q = self.linear(x, a + "q_proj")
            q = q.reshape(B, S, self.heads, self.dn + self.dr)
            q_nope, q_pe = q[..., :self.dn], q[..., self.dn:]
            ckv = self.linear(x, a + "kv_a_proj_with_mqa")
            kvl = c["kv_lora_rank"]
            c_kv, k_pe = ckv[..., :kvl], ckv[..., kvl:][:, :, None]
            kv = self.linear(rms_norm(c_kv, self.W(a + "kv_a_layernorm.weight"), 1e-6), a + "kv_b_proj")
            kv = kv.reshape(B, S, self.heads, self.dn + self.dv)
            k_nope, v = kv[..., :self.dn], kv[..., self.dn:]
            if self.type == "deepseek_v3" and c.get("rope_interleave", True):
                q_pe = rotate_half_apply(deinterleave(q_pe), cos, sin)
                k_pe = rotate_half_apply(deinterleave(k_pe), cos, sin)
            elif self.type == "deepseek_v3":
                q_pe = rotate_half_apply(q_pe, cos, sin)
                k_pe = rotate_half_apply(k_pe, cos, sin)
            else:
                q_pe = complex_pairs_apply(q_pe, cos, sin)
                k_pe = complex_pairs_apply(k_pe, cos, sin)
            qf = np.concatenate([q_nope, q_pe], -1)
            kf = np.concatenate([k_nope, np.broadcast_to(k_pe, (B, S, self.heads, self.dr))], -1)
            window = None
            hd_v = self.dv
        else:
            q = self.linear(x, a + "q_proj").reshape(B, S, self.heads, self.D)
            kf = self.linear(x, a + "k_proj").reshape(B, S, self.kv_heads, self.D)
            v = self.linear(x, a + "v_proj").reshape(B, S, self.kv_heads, self.D)
            if self.type == "qwen3_moe":
                q = rms_norm(q, self.W(a + "q_norm.weight"), self.eps)
                kf = rms_norm(kf, self.W(a + "k_norm.weight"), self.eps)
            qf = rotate_half_apply(q, cos, sin)
            kf = rotate_half_apply(kf, cos, sin)
            window = self.cfg.get("sliding_window") if self.type == "mixtral" else None
            hd_v = self.D
        # DynamicCache: append along T.
        if self.cache[i] is None:
            self.cache[i] = (kf, v)
        else:
            self.cache[i] = (np.concatenate([self.cache[i][0], kf], 1), np.concatenate([self.cache[i][1], v], 1))
        K, V = self.cache[i]
        o = causal_attention(qf.astype(F32), K.astype(F32), V.astype(F32), pos, self.scale, window)
        return self.linear(o.reshape(B, S, self.heads * hd_v), a + "o_proj")

    def forward(self, tokens, pos):
        x = self.W("model.embed_tokens.weight")[tokens]
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = x + self.attention(rms_norm(x, self.W(p + "input_layernorm.weight"), self.eps), i, pos)
            h = rms_norm(x, self.W(p + "post_attention_layernorm.weight"), self.eps)
            x = x + (self.moe(h, i) if self.is_moe(i) else self.mlp(h, p + "mlp."))
        x = rms_norm(x, self.W("model.norm.weight"), self.eps)
        head = self.W("model.embed_tokens.weight") if self.cfg.get("tie_word_embeddings") else self.W("lm_head.weight")
        return (x @ head.T).astype(F32)

    def run(self, tokens, prompt_len):
        self.cache = [None] * self.cfg["num_hidden_layers"]
        B = tokens.shape[0]
        pos = np.tile(np.arange(prompt_len), (B, 1))
        prefill = self.forward(tokens[:, :prompt_len], pos)
        steps = []
        for t in range(prompt_len, tokens.shape[1] - 1):
            steps.append(self.forward(tokens[:, t:t + 1], np.full((B, 1), t))[:, 0])
        return prefill, np.stack(steps) if steps else np.zeros((0, B, prefill.shape[-1]), F32)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--prompt-len", type=int, required=True)
    ap.add_argument("--compare")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--prune-24", help="regex: 2:4-prune the weights it matches")
    args = ap.parse_args()
    tokens = np.load(args.tokens)
    model = Model(args.model, args.prune_24)
    prefill, steps = model.run(tokens, args.prompt_len)
    if not args.compare:
        np.save("reference_prefill_logits.npy", prefill)
        np.save("reference_decode_logits.npy", steps)
        return 0
    ds_prefill = np.load(os.path.join(args.compare, "prefill_logits.npy"))
    ds_steps = np.load(os.path.join(args.compare, "decode_logits.npy"))
    ok = True
    for name, a, b in (("prefill", ds_prefill, prefill), ("decode", ds_steps, steps)):
        if a.shape != b.shape:
            print(f"{model.type} {name}: shape {a.shape} != reference {b.shape}")
            ok = False
            continue
        e = rel_err(a, b)
        print(f"{model.type} {name}: logits {a.shape} relative error {e:.3e} (tolerance {args.tol:g})")
        ok &= e <= args.tol
    # Greedy tokens must follow the reference's argmax wherever it is clear.
    print("MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
