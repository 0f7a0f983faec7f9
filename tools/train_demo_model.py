#!/usr/bin/env python3
"""Builds Krasis's built-in demo model: a tiny Qwen3-MoE (a real architecture, so
every serving path is exercised) with its own small byte-level BPE tokenizer and
a ChatML chat template, trained for a few minutes on text that is available
offline on the GPU machine (the Python sources and docs installed there), so it
writes words rather than noise. It is a demo, not a useful assistant.

Run on the GPU machine (torch, transformers and tokenizers installed):
    python3 tools/train_demo_model.py --out OUT/demo [--minutes 4]
Writes config.json, model.safetensors (BF16, < 10 MB), tokenizer.json,
tokenizer_config.json (with chat_template), generation_config.json and
reference.json (a prompt and transformers' greedy continuation, for tests).
"""
import argparse
import glob
import json
import math
import os
import random
import sys
import time

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, Qwen3MoeConfig

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2/Qwen3's pre-tokenizer split pattern.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set content = message['content'] %}"
    "{%- else %}{%- set content = message['content'] | map(attribute='text') | join('') %}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def collect_text(limit_bytes):
    roots = sorted({p for p in sys.path if p and os.path.isdir(p)})
    files = []
    for root in roots:
        for ext in ("py", "md", "rst", "txt"):
            files += glob.glob(os.path.join(root, "**", "*." + ext), recursive=True)
    random.Random(0).shuffle(files)
    docs, total = [], 0
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                t = fh.read()
        except (UnicodeDecodeError, OSError):
            continue
        if len(t) < 200:
            continue
        t = t[:20000]
        docs.append(t)
        total += len(t)
        if total > limit_bytes:
            break
    return docs


def chat_samples(docs, n):
    """ChatML conversations made of text snippets, so the model learns the format."""
    rng = random.Random(1)
    out = []
    for _ in range(n):
        d = rng.choice(docs)
        i = rng.randrange(max(1, len(d) - 600))
        q, a = d[i:i + 120], d[i + 120:i + 600]
        out.append(f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n"
                   f"<|im_start|>assistant\n{a}<|im_end|>\n")
    return out


def train_tokenizer(docs, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.time()
    docs = collect_text(60_000_000)
    print(f"text: {len(docs)} documents, {sum(map(len, docs)) / 1e6:.1f} MB ({time.time() - t0:.0f}s)", flush=True)
    tok = train_tokenizer(docs[:3000], args.vocab)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    eos_id = tok.token_to_id("<|im_end|>")
    pad_id = tok.token_to_id("<|endoftext|>")
    print(f"tokenizer: vocab {tok.get_vocab_size()} ({time.time() - t0:.0f}s)", flush=True)

    corpus = docs + chat_samples(docs, len(docs) // 2)
    random.Random(2).shuffle(corpus)
    ids = []
    for enc in tok.encode_batch(corpus):
        ids.extend(enc.ids)
        ids.append(pad_id)
    data = torch.tensor(ids, dtype=torch.long)
    print(f"training tokens: {data.numel() / 1e6:.1f}M ({time.time() - t0:.0f}s)", flush=True)

    config = Qwen3MoeConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=192, intermediate_size=384,
        moe_intermediate_size=128, num_hidden_layers=4, num_attention_heads=6,
        num_key_value_heads=2, head_dim=32, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id,
        router_aux_loss_coef=0.01, output_router_logits=True)
    dev = "cuda"
    model = AutoModelForCausalLM.from_config(config).to(dev)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    seq, batch = 256, 96
    deadline = time.time() + args.minutes * 60
    total_est = int(args.minutes * 60 * 25)  # rough step budget for the schedule
    step = 0
    model.train()
    while time.time() < deadline:
        lr = 3e-3 * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_est))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, data.numel() - seq - 1, (batch,))
        x = torch.stack([data[s:s + seq] for s in starts]).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=x, labels=x)
        loss = out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} ({time.time() - t0:.0f}s)", flush=True)
        step += 1
    print(f"trained {step} steps, final loss {loss.item():.3f}", flush=True)

    model.config.output_router_logits = False
    model = model.to(torch.bfloat16).cpu().eval()
    model.save_pretrained(args.out, safe_serialization=True)
    tok_config = {
        "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 2048,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "unk_token": None, "add_bos_token": False, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(tok.token_to_id(s)): {
            "content": s, "lstrip": False, "rstrip": False, "normalized": False,
            "single_word": False, "special": True} for s in SPECIALS},
    }
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2, ensure_ascii=False)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [eos_id, pad_id], "pad_token_id": pad_id, "temperature": 0.7,
                   "top_p": 0.9, "do_sample": True}, f, indent=2)

    # Reference: reload the saved BF16 model, fp32 math, greedy continuation.
    ref = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    prompt = ("<|im_start|>user\nWrite a Python function that returns the sum of a list.<|im_end|>\n"
              "<|im_start|>assistant\n")
    prompt_ids = tok.encode(prompt).ids
    seqids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(32):
            logits = ref(torch.tensor([seqids])).logits[0, -1]
            seqids.append(int(logits.argmax()))
    greedy = seqids[len(prompt_ids):]
    print("sample:", repr(tok.decode(greedy)), flush=True)
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump({"prompt": prompt, "prompt_ids": prompt_ids, "greedy": greedy,
                   "greedy_text": tok.decode(greedy), "steps": step, "final_loss": loss.item(),
                   "parameters": params}, f, indent=1)
    print(f"done ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
