#!/usr/bin/env python3
"""Writes a random-weight Hugging Face checkpoint of a real model's shapes, for
benchmarks on the GPU machine (no model downloads there): config.json and
model.safetensors with the tensor names of the architecture, BF16, N(0, 0.02).

  make_random_checkpoint.py --shape qwen3-coder-next --layers 2 --out DIR
  make_random_checkpoint.py --shape deepseek-v2-lite --layers 27 --out DIR

qwen3-coder-next is written as qwen3_moe (full attention in every layer; the
routed experts -- what the decode benchmarks and the conversion cache care
about -- have the real shapes: 512 experts of 2048 x 512, top-10).
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

SHAPES = {
    "qwen3-coder-next": dict(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], hidden_size=2048,
                             intermediate_size=5120, moe_intermediate_size=512, num_experts=512,
                             num_experts_per_tok=10, num_attention_heads=16, num_key_value_heads=2, head_dim=256,
                             vocab_size=8192, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                             rms_norm_eps=1e-6, rope_theta=10000000.0, max_position_embeddings=65536,
                             tie_word_embeddings=False, eos_token_id=2, bos_token_id=1),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="qwen3-coder-next", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = dict(SHAPES[args.shape], num_hidden_layers=args.layers, torch_dtype="bfloat16")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    h, v, hd = cfg["hidden_size"], cfg["vocab_size"], cfg["head_dim"]
    q, kv, inter, e = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["moe_intermediate_size"], cfg["num_experts"]
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    t = {"model.embed_tokens.weight": rnd(v, h), "lm_head.weight": rnd(v, h),
         "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    for l in range(args.layers):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[p + "self_attn.q_proj.weight"] = rnd(q, h)
        t[p + "self_attn.k_proj.weight"] = rnd(kv, h)
        t[p + "self_attn.v_proj.weight"] = rnd(kv, h)
        t[p + "self_attn.o_proj.weight"] = rnd(h, q)
        t[p + "self_attn.q_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[p + "self_attn.k_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[p + "mlp.gate.weight"] = rnd(e, h)
        for x in range(e):
            t[p + f"mlp.experts.{x}.gate_proj.weight"] = rnd(inter, h)
            t[p + f"mlp.experts.{x}.up_proj.weight"] = rnd(inter, h)
            t[p + f"mlp.experts.{x}.down_proj.weight"] = rnd(h, inter)
    save_file(t, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    print("wrote", args.out, sum(x.numel() for x in t.values()) * 2 / 1e9, "GB")


if __name__ == "__main__":
    main()
