#!/usr/bin/env python3
"""Writes a random-weight Hugging Face checkpoint of a real model's shapes, for
benchmarks on the GPU machine (no model downloads there): config.json and
model.safetensors with the architecture's own tensor names, BF16, N(0, 0.02)
for matrices, neutral norms. Tensors are generated and written one at a time,
so a 30 GB checkpoint needs little RAM.

  make_random_checkpoint.py --shape qwen3-coder-next --layers 8 --out DIR
  make_random_checkpoint.py --shape deepseek-v2-lite --out DIR          # all 27 layers
  make_random_checkpoint.py --shape qwen3-coder-next --layers 8 --experts 32 --out DIR
      (fewer routed experts: everything else at its real size, for profiling on
      a machine without the disk or RAM for the real expert count; not for the
      issue's benchmarks)

qwen3-coder-next is the real architecture (qwen3_next): Gated DeltaNet linear
attention in three of every four layers, gated full attention in the fourth,
512 routed experts of 2048 x 512 (top-10) plus a gated shared expert.
deepseek-v2-lite is deepseek_v2: MLA (kv_lora 512, no q-LoRA), a dense first
layer, 64 routed experts of 2048 x 1408 (top-6) plus two shared experts.
Needs torch (on the GPU machine) or numpy (anywhere else).
"""
import argparse
import json
import math
import os
import struct

SHAPES = {
    "qwen3-coder-next": dict(
        model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"], hidden_size=2048,
        intermediate_size=5120, moe_intermediate_size=512, shared_expert_intermediate_size=512, num_experts=512,
        num_experts_per_tok=10, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        num_attention_heads=16, num_key_value_heads=2, head_dim=256, partial_rotary_factor=0.25,
        rope_theta=5000000.0, linear_conv_kernel_dim=4, linear_key_head_dim=128, linear_value_head_dim=128,
        linear_num_key_heads=16, linear_num_value_heads=32, full_attention_interval=4, vocab_size=151936,
        rms_norm_eps=1e-6, max_position_embeddings=262144, tie_word_embeddings=False, attention_bias=False,
        bos_token_id=151643, eos_token_id=151645, num_hidden_layers=48),
    "deepseek-v2-lite": dict(
        model_type="deepseek_v2", architectures=["DeepseekV2ForCausalLM"], hidden_size=2048,
        intermediate_size=10944, moe_intermediate_size=1408, n_routed_experts=64, n_shared_experts=2,
        num_experts_per_tok=6, first_k_dense_replace=1, moe_layer_freq=1, num_attention_heads=16,
        num_key_value_heads=16, kv_lora_rank=512, q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0,
        scoring_func="softmax", norm_topk_prob=False, rope_theta=10000,
        rope_scaling=dict(type="yarn", factor=40, original_max_position_embeddings=4096, beta_fast=32, beta_slow=1,
                          mscale=0.707, mscale_all_dim=0.707),
        max_position_embeddings=163840, vocab_size=102400, rms_norm_eps=1e-6, tie_word_embeddings=False,
        attention_bias=False, bos_token_id=100000, eos_token_id=100001, num_hidden_layers=27),
}

RAND, ONES, ZEROS, ALOG = "rand", "ones", "zeros", "alog"


def qwen3_next_tensors(c):
    h, hd, heads, kvh = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    nk, nv, dk, dv = (c["linear_num_key_heads"], c["linear_num_value_heads"], c["linear_key_head_dim"],
                      c["linear_value_head_dim"])
    e, inter, sh = c["num_experts"], c["moe_intermediate_size"], c["shared_expert_intermediate_size"]
    t = [("model.embed_tokens.weight", [c["vocab_size"], h], RAND)]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        t += [(p + "input_layernorm.weight", [h], ZEROS), (p + "post_attention_layernorm.weight", [h], ZEROS)]
        if c["layer_types"][l] == "linear_attention":
            a = p + "linear_attn."
            t += [(a + "in_proj_qkvz.weight", [2 * nk * dk + 2 * nv * dv, h], RAND),
                  (a + "in_proj_ba.weight", [2 * nv, h], RAND),
                  (a + "conv1d.weight", [2 * nk * dk + nv * dv, 1, c["linear_conv_kernel_dim"]], RAND),
                  (a + "dt_bias", [nv], ONES), (a + "A_log", [nv], ALOG), (a + "norm.weight", [dv], ONES),
                  (a + "out_proj.weight", [h, nv * dv], RAND)]
        else:
            a = p + "self_attn."
            t += [(a + "q_proj.weight", [heads * hd * 2, h], RAND), (a + "k_proj.weight", [kvh * hd, h], RAND),
                  (a + "v_proj.weight", [kvh * hd, h], RAND), (a + "o_proj.weight", [h, heads * hd], RAND),
                  (a + "q_norm.weight", [hd], ZEROS), (a + "k_norm.weight", [hd], ZEROS)]
        m = p + "mlp."
        t.append((m + "gate.weight", [e, h], RAND))
        for x in range(e):
            t += expert(f"{m}experts.{x}.", h, inter)
        t += expert(m + "shared_expert.", h, sh)
        t.append((m + "shared_expert_gate.weight", [1, h], RAND))
    t += [("model.norm.weight", [h], ZEROS), ("lm_head.weight", [c["vocab_size"], h], RAND)]
    return t


def deepseek_v2_tensors(c):
    h, heads, kvl, nope, rope, vd = (c["hidden_size"], c["num_attention_heads"], c["kv_lora_rank"],
                                     c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"])
    t = [("model.embed_tokens.weight", [c["vocab_size"], h], RAND)]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = p + "self_attn."
        t += [(p + "input_layernorm.weight", [h], ONES), (p + "post_attention_layernorm.weight", [h], ONES),
              (a + "q_proj.weight", [heads * (nope + rope), h], RAND),
              (a + "kv_a_proj_with_mqa.weight", [kvl + rope, h], RAND), (a + "kv_a_layernorm.weight", [kvl], ONES),
              (a + "kv_b_proj.weight", [heads * (nope + vd), kvl], RAND), (a + "o_proj.weight", [h, heads * vd], RAND)]
        m = p + "mlp."
        if l < c["first_k_dense_replace"]:
            t += expert(m, h, c["intermediate_size"])
            continue
        t.append((m + "gate.weight", [c["n_routed_experts"], h], RAND))
        for x in range(c["n_routed_experts"]):
            t += expert(f"{m}experts.{x}.", h, c["moe_intermediate_size"])
        t += expert(m + "shared_experts.", h, c["moe_intermediate_size"] * c["n_shared_experts"])
    t += [("model.norm.weight", [h], ONES), ("lm_head.weight", [c["vocab_size"], h], RAND)]
    return t


def expert(prefix, h, inter):
    return [(prefix + "gate_proj.weight", [inter, h], RAND), (prefix + "up_proj.weight", [inter, h], RAND),
            (prefix + "down_proj.weight", [h, inter], RAND)]


class Source:
    """BF16 bytes of a tensor: torch when present (fast, seeded), numpy otherwise."""

    def __init__(self, seed):
        try:
            import torch
            self.torch = torch
            self.gen = torch.Generator().manual_seed(seed)
        except ImportError:
            import numpy
            self.torch = None
            self.np = numpy
            self.rng = numpy.random.default_rng(seed)

    def bf16(self, shape, kind):
        n = math.prod(shape)
        if self.torch is not None:
            torch = self.torch
            if kind == RAND:
                x = torch.randn(n, generator=self.gen) * 0.02
            elif kind == ALOG:
                x = torch.log(torch.rand(n, generator=self.gen) * 15 + 1)
            else:
                x = torch.full((n,), 1.0 if kind == ONES else 0.0)
            return x.to(torch.bfloat16).view(torch.int16).numpy().tobytes()
        np = self.np
        if kind == RAND:
            x = self.rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
        elif kind == ALOG:
            x = np.log(self.rng.random(n, dtype=np.float32) * 15 + 1)
        else:
            x = np.full(n, 1.0 if kind == ONES else 0.0, np.float32)
        bits = x.astype(np.float32).view(np.uint32)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
        return (bits >> 16).astype(np.uint16).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="qwen3-coder-next", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, help="default: the real model's count")
    ap.add_argument("--experts", type=int, help="routed experts per layer (default: the real model's)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = dict(SHAPES[args.shape], torch_dtype="bfloat16")
    if args.layers:
        cfg["num_hidden_layers"] = args.layers
    if args.experts:
        key = "num_experts" if "num_experts" in cfg else "n_routed_experts"
        if args.experts < cfg["num_experts_per_tok"]:
            ap.error(f"--experts must be at least num_experts_per_tok ({cfg['num_experts_per_tok']})")
        cfg[key] = args.experts
    n = cfg["num_hidden_layers"]
    if cfg["model_type"] == "qwen3_next":
        every = cfg["full_attention_interval"]
        cfg["layer_types"] = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]
        tensors = qwen3_next_tensors(cfg)
    else:
        tensors = deepseek_v2_tensors(cfg)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in tensors:
        size = math.prod(shape) * 2
        header[name] = dict(dtype="BF16", shape=shape, data_offsets=[offset, offset + size])
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    src = Source(0)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, kind in tensors:
            f.write(src.bf16(shape, kind))
    print(f"wrote {args.out}: {args.shape}, {n} layers, {offset / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
