#!/usr/bin/env python3
# -----------------------------------------------------------------------------
# tools/make_fixtures.py -- tiny random reference checkpoints for Krasis tests
#
# WHAT
#   For each of five MoE architectures Krasis serves (qwen3_moe, qwen3_next,
#   deepseek_v2, deepseek_v3, glm4_moe) this script builds a TINY random model
#   with Hugging Face transformers' own model classes, gives every tensor
#   non-trivial values, writes it as a real HF checkpoint (config.json +
#   model.safetensors, BF16) under DIR/<arch>/, and records reference outputs
#   in DIR/<arch>/reference.json.
#
# WHY
#   The C++ engine (loader, GPU prefill, CPU decode) must reproduce the models'
#   maths exactly: MLA + YaRN, interleaved/partial RoPE, group-limited routing
#   with e_score_correction_bias, routed scaling, shared experts, Qwen3-Next's
#   Gated DeltaNet and zero-centred norms.  Real checkpoints are 30-700 GB;
#   these are < 3 MB each, so tests can run everywhere, and the reference is
#   produced by the transformers implementation itself, not by our reading of it.
#
# REFERENCE SEMANTICS (what the C++ side must reproduce)
#   * The reference model is the saved checkpoint reloaded with from_pretrained:
#     exactly the BF16 values stored in the file, upcast to float32, float32
#     maths, on CPU, eager attention, no KV cache (each greedy step re-runs the
#     whole sequence), no BOS added: prompt_ids are fed as they are.
#   * greedy: 24 argmax tokens, never stopping at EOS.
#   * e_score_correction_bias (deepseek_v3, glm4_moe) is stored as F32, like the
#     real DeepSeek-V3 / GLM-4.5 checkpoints; its values lie on the BF16 grid.
#
# USAGE
#   python3 tools/make_fixtures.py --out DIR [--only ARCH[,ARCH...]] [--device cpu]
#   Needs python3 with torch, transformers (4.5x or 5.x), safetensors; no network.
#   Exit status: 0 all good; 1 an architecture failed; 2 an architecture was
#   skipped (not in the installed transformers) or a quality check warned.
#
# Written for Krasis; facts about transformers' config arguments and module
# names were checked against the transformers sources (4.5x and 5.x).
# -----------------------------------------------------------------------------

import argparse
import copy
import glob
import inspect
import json
import math
import os
import platform
import re
import sys
import time
import traceback
import zlib

# No network on the machine this runs on: never let the Hub client try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARCHS = ["qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "glm4_moe"]

# ---------------------------------------------------------------- sizes ------
VOCAB = 512
HIDDEN = 64
LAYERS = 4
HEADS = 4
KV_HEADS = 2
MAX_POS = 256
N_EXPERTS = 8
TOPK = 2
ROPE_THETA = 10000.0
N_PROMPT = 20
N_LONG_PROMPT = 80          # > 64: two chunks of Qwen3-Next's chunked delta rule
N_GREEDY = 24
FIRST_TOKEN_ID = 3          # prompt ids avoid 0 (pad), 1 (bos), 2 (eos)

# Quality thresholds.  A C++ fp32 engine differs from torch by ~1e-6 relative;
# prompts are re-drawn until every decision has at least this much room.
LOGIT_MARGIN_MIN = 1e-3     # top1 - top2 logit, every argmax decision
ROUTE_MARGIN_MIN = 1e-4     # k-th vs (k+1)-th routing score, group scores too
LOGITS_STD_MIN = 0.5
MIN_DISTINCT_ARGMAX = 3
MAX_FILE_BYTES = 3 * 1024 * 1024

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    max_position_embeddings=MAX_POS,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    initializer_range=0.02,
    tie_word_embeddings=False,
    attention_dropout=0.0,
    use_cache=True,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# YaRN as DeepSeek configs spell it (legacy "rope_scaling" with "type").
# max_position_embeddings / original_max_position_embeddings == factor (256/64),
# which transformers 4.5x and 5.x both require for consistent YaRN maths.
YARN_V3 = {
    "type": "yarn",
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}
# DeepSeek-V2: transformers' DeepseekV2Attention never multiplies the softmax
# scale by mscale(mscale_all_dim)^2 while DeepSeek's own code, vLLM and
# llama.cpp do.  With mscale_all_dim = 0 every implementation agrees: cos/sin
# are scaled by 0.1*ln(4)+1 and the softmax scale stays qk_head_dim^-0.5.
YARN_V2 = dict(YARN_V3, mscale_all_dim=0.0)

# kwargs: must be accepted by the config class.
# settable: needed; if the constructor refuses them they are set as attributes.
# info: informational keys real checkpoints carry (transformers ignores them);
#       dropped, with a message, if refused.
SPECS = {
    "qwen3_moe": dict(
        seed=101,
        kwargs=dict(
            COMMON,
            intermediate_size=128,
            moe_intermediate_size=32,
            num_experts=N_EXPERTS,
            num_experts_per_tok=TOPK,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[1],
            rope_theta=ROPE_THETA,
            attention_bias=False,
            use_sliding_window=False,
            output_router_logits=False,
        ),
        # like Qwen3-30B-A3B (head_dim 128 != 2048/32): head_dim != hidden/heads
        settable=dict(head_dim=32),
        info=dict(),
        expect=dict(attn=["gqa"] * 4, mlp=["moe", "dense", "moe", "moe"],
                    q_out=HEADS * 32, rotary_dim=32, route="softmax_topk"),
    ),
    "qwen3_next": dict(
        seed=202,
        kwargs=dict(
            COMMON,
            intermediate_size=128,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            num_experts=N_EXPERTS,
            num_experts_per_tok=TOPK,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            head_dim=32,
            partial_rotary_factor=0.25,
            rope_theta=ROPE_THETA,
            linear_conv_kernel_dim=4,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            layer_types=["linear_attention", "full_attention",
                         "linear_attention", "full_attention"],
            attention_bias=False,
            output_router_logits=False,
        ),
        settable=dict(),
        info=dict(full_attention_interval=2),
        expect=dict(attn=["linear", "gqa", "linear", "gqa"], mlp=["moe"] * 4,
                    q_out=HEADS * 32 * 2, rotary_dim=8, route="softmax_topk"),
    ),
    "deepseek_v2": dict(
        seed=303,
        kwargs=dict(
            COMMON,
            num_key_value_heads=HEADS,      # MLA: k/v have all heads; HF uses repeat_kv groups
            intermediate_size=128,
            moe_intermediate_size=32,
            n_routed_experts=N_EXPERTS,
            # 3, not 2: with max-based group scores and topk_group >= top_k the
            # group limit can never change a selection (real V2: top-6, 3 groups)
            num_experts_per_tok=3,
            n_shared_experts=2,
            first_k_dense_replace=1,
            topk_method="group_limited_greedy",
            n_group=4,
            topk_group=2,
            routed_scaling_factor=2.0,
            norm_topk_prob=False,           # transformers' V2 ignores it; False keeps all impls equal
            q_lora_rank=None,               # like DeepSeek-V2-Lite: plain q_proj
            kv_lora_rank=32,
            qk_nope_head_dim=16,
            qk_rope_head_dim=8,
            v_head_dim=16,
            rope_theta=ROPE_THETA,
            rope_scaling=YARN_V2,
            attention_bias=False,
        ),
        settable=dict(),
        info=dict(moe_layer_freq=1, scoring_func="softmax"),
        expect=dict(attn=["mla"] * 4, mlp=["dense", "moe", "moe", "moe"],
                    rotary_dim=8, route="softmax_group_max", yarn=True, q_lora=False),
    ),
    "deepseek_v3": dict(
        seed=404,
        kwargs=dict(
            COMMON,
            num_key_value_heads=HEADS,
            intermediate_size=128,
            moe_intermediate_size=32,
            n_routed_experts=N_EXPERTS,
            num_experts_per_tok=TOPK,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=4,
            topk_group=2,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            q_lora_rank=32,
            kv_lora_rank=32,
            qk_nope_head_dim=16,
            qk_rope_head_dim=8,
            v_head_dim=16,
            rope_theta=ROPE_THETA,
            rope_scaling=YARN_V3,
            rope_interleave=True,
            attention_bias=False,
        ),
        settable=dict(),
        # no MTP weights in the file: say so (5.x defaults num_nextn_predict_layers to 1)
        info=dict(moe_layer_freq=1, scoring_func="sigmoid", topk_method="noaux_tc", num_nextn_predict_layers=0),
        expect=dict(attn=["mla"] * 4, mlp=["dense", "moe", "moe", "moe"],
                    rotary_dim=8, route="sigmoid_bias_group_top2", yarn=True, q_lora=True),
    ),
    "glm4_moe": dict(
        seed=505,
        kwargs=dict(
            COMMON,
            intermediate_size=128,
            moe_intermediate_size=32,
            n_routed_experts=N_EXPERTS,
            num_experts_per_tok=TOPK,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=4,
            topk_group=2,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            partial_rotary_factor=0.5,
            attention_bias=True,
            use_qk_norm=True,
            rope_theta=ROPE_THETA,
            num_nextn_predict_layers=0,
        ),
        # like GLM-4.5 (head_dim 128 with hidden 5120 / 96 heads)
        settable=dict(head_dim=32),
        info=dict(),
        expect=dict(attn=["gqa"] * 4, mlp=["dense", "moe", "moe", "moe"],
                    q_out=HEADS * 32, rotary_dim=16, route="sigmoid_bias_group_top2"),
    ),
}


class Skip(Exception):
    """The installed transformers lacks this architecture."""


# ------------------------------------------------------------- helpers ------
def say(notes, msg):
    print(msg, flush=True)
    if notes is not None:
        notes.append(msg)


def tf_version_tuple(v):
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def rope_dict_of(cfg):
    """The RoPE dict of a config: rope_parameters (5.x) or rope_scaling (4.x)."""
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp:
        return rp
    rs = getattr(cfg, "rope_scaling", None)
    if isinstance(rs, dict) and rs:
        return rs
    return {}


def rope_type_of(d):
    return d.get("rope_type") or d.get("type") or "default"


def stable_seed(base, arch, name):
    return (base * 1000003 + zlib.crc32(("%s|%s" % (arch, name)).encode())) % (2 ** 62)


# -------------------------------------------------------- class lookup ------
def resolve_classes(transformers, arch):
    tv = transformers.__version__
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError as e:
        raise Skip("transformers %s has no auto mappings (%s)" % (tv, e))
    cfg_name = CONFIG_MAPPING_NAMES.get(arch)
    if not cfg_name:
        raise Skip("transformers %s has no config class for model_type '%s'" % (tv, arch))
    lm_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(arch)
    if not lm_name:
        raise Skip("transformers %s has no causal-LM class for model_type '%s'" % (tv, arch))
    try:
        cfg_cls = getattr(transformers, cfg_name)
    except Exception as e:  # documented: class missing or import failure -> SKIP
        raise Skip("transformers %s has no %s (%s: %s)" % (tv, cfg_name, type(e).__name__, e))
    try:
        lm_cls = getattr(transformers, lm_name)
    except Exception as e:
        raise Skip("transformers %s has no %s (%s: %s)" % (tv, lm_name, type(e).__name__, e))
    return cfg_cls, lm_cls


# --------------------------------------------------------------- config ------
def build_config(cfg_cls, arch, spec, notes):
    full = dict(spec["kwargs"])
    full.update(spec["settable"])
    full.update(spec["info"])
    try:
        cfg = cfg_cls(**copy.deepcopy(full))
    except Exception as e:
        if not (spec["settable"] or spec["info"]):
            raise
        say(notes, "FALLBACK config: %s(**all kwargs) raised %s: %s; retrying with the core kwargs "
                   "and setting %s as attributes" % (cfg_cls.__name__, type(e).__name__, e,
                                                    sorted(list(spec["settable"]) + list(spec["info"]))))
        cfg = cfg_cls(**copy.deepcopy(spec["kwargs"]))
        for k, v in list(spec["settable"].items()) + list(spec["info"].items()):
            try:
                setattr(cfg, k, copy.deepcopy(v))
            except Exception as e2:
                if k in spec["settable"]:
                    raise
                say(notes, "FALLBACK config: dropped informational key %s (%s)" % (k, e2))

    if spec["expect"].get("yarn"):
        rd = rope_dict_of(cfg)
        if rope_type_of(rd) != "yarn":
            say(notes, "FALLBACK rope: legacy rope_scaling did not give YaRN (got %r); passing "
                       "rope_parameters instead" % (rd,))
            kw = dict(full)
            yarn = dict(kw.pop("rope_scaling"))
            yarn.pop("type", None)
            yarn["rope_theta"] = kw.pop("rope_theta")
            kw["rope_parameters"] = yarn
            cfg = cfg_cls(**copy.deepcopy(kw))
            rd = rope_dict_of(cfg)
            if rope_type_of(rd) != "yarn":
                raise RuntimeError("could not switch YaRN on for %s: rope dict is %r" % (arch, rd))
        say(notes, "rope: %s" % json.dumps(rd, sort_keys=True, default=str))

    if arch == "qwen3_next":
        lt = list(getattr(cfg, "layer_types", None) or [])
        if lt != spec["kwargs"]["layer_types"]:
            raise RuntimeError("qwen3_next layer_types came out as %r" % (lt,))
    for k, v in spec["settable"].items():
        if getattr(cfg, k, None) != v:
            raise RuntimeError("config.%s is %r, wanted %r" % (k, getattr(cfg, k, None), v))
    return cfg


# ----------------------------------------------------- runtime patches ------
def _external_kernel(fn):
    """True for functions/classes from outside transformers (fla, causal_conv1d):
    CUDA/Triton only.  transformers' own torch fallbacks (5.1x wraps them with
    use_kernel_func_from_hub_with_fallback) are kept."""
    if fn is None:
        return False
    modname = getattr(fn, "__module__", "") or ""
    return not modname.startswith("transformers")


def patch_qwen3_next_module(mod, notes):
    """Force the pure-torch Gated DeltaNet path: the reference runs on CPU, and
    fla / causal-conv1d kernels (if installed) are CUDA/Triton only."""
    changed, kept = [], []
    for name in ("causal_conv1d_fn", "causal_conv1d_update", "chunk_gated_delta_rule",
                 "fused_recurrent_gated_delta_rule", "FusedRMSNormGated"):
        val = getattr(mod, name, None)
        if val is None:
            continue
        if _external_kernel(val):
            setattr(mod, name, None)
            changed.append("%s (from %s)" % (name, getattr(val, "__module__", "?")))
        else:
            kept.append(name)
    if changed and getattr(mod, "is_fast_path_available", False):
        mod.is_fast_path_available = False
        changed.append("is_fast_path_available")
    if changed:
        say(notes, "PATCH qwen3_next module globals from external kernel packages set to None/False "
                   "(pure-torch path): %s" % changed)
    if kept:
        say(notes, "qwen3_next module functions defined by transformers kept: %s" % kept)


def patch_qwen3_next_instances(model, mod, notes):
    torch_fns = {
        "chunk_gated_delta_rule": getattr(mod, "torch_chunk_gated_delta_rule", None),
        "recurrent_gated_delta_rule": getattr(mod, "torch_recurrent_gated_delta_rule", None),
        "causal_conv1d_update": getattr(mod, "torch_causal_conv1d_update", None),
    }
    gated_cls = getattr(mod, "Qwen3NextRMSNormGated", None)
    n_gdn = 0
    for mname, m in model.named_modules():
        if not hasattr(m, "in_proj_qkvz"):
            continue
        n_gdn += 1
        for attr, fn in torch_fns.items():
            cur = getattr(m, attr, None)
            if fn is not None and cur is not None and cur is not fn and _external_kernel(cur):
                say(notes, "PATCH %s.%s: %s -> %s" % (mname, attr, getattr(cur, "__module__", "?"), fn.__name__))
                setattr(m, attr, fn)
        cur = getattr(m, "causal_conv1d_fn", None)
        if _external_kernel(cur):
            say(notes, "PATCH %s.causal_conv1d_fn: %s -> None (F.conv1d path)"
                % (mname, getattr(cur, "__module__", "?")))
            m.causal_conv1d_fn = None
        norm = getattr(m, "norm", None)
        if norm is not None and gated_cls is not None and type(norm) is not gated_cls and _external_kernel(type(norm)):
            new = gated_cls(norm.weight.shape[0], eps=getattr(m, "layer_norm_epsilon", 1e-6))
            new.weight.data.copy_(norm.weight.data.detach().to("cpu", new.weight.dtype))
            new.to(norm.weight.device)
            m.norm = new
            say(notes, "PATCH %s.norm: %s -> Qwen3NextRMSNormGated" % (mname, type(norm).__name__))
    if n_gdn == 0:
        raise RuntimeError("qwen3_next: found no Gated DeltaNet module (no in_proj_qkvz)")


def patch_deepseek_v2_instances(model, cfg, notes):
    """Some transformers 5.x DeepseekV2Moe.route_tokens_to_experts read
    self.num_experts, which __init__ never sets (group_limited_greedy only)."""
    for mname, m in model.named_modules():
        if hasattr(m, "topk_method") and hasattr(m, "route_tokens_to_experts") and not hasattr(m, "num_experts"):
            m.num_experts = cfg.n_routed_experts
            say(notes, "PATCH %s.num_experts = %d (missing attribute in this transformers)"
                % (mname, cfg.n_routed_experts))


def force_eager_experts(model, notes):
    fn = getattr(model, "set_experts_implementation", None)
    if callable(fn):
        try:
            fn("eager")
            say(notes, "experts implementation: set_experts_implementation('eager')")
            return
        except Exception as e:
            say(notes, "FALLBACK experts: set_experts_implementation('eager') raised %s: %s" % (type(e).__name__, e))
    seen = set()
    for m in model.modules():
        c = getattr(m, "config", None)
        if c is None or id(c) in seen:
            continue
        seen.add(id(c))
        cur = getattr(c, "_experts_implementation", None)
        if cur is not None and cur != "eager":
            try:
                c._experts_implementation = "eager"
                say(notes, "experts implementation: %s -> eager" % cur)
            except Exception as e:
                say(notes, "WARNING could not set _experts_implementation=eager (%s: %s); it stays %r"
                    % (type(e).__name__, e, cur))


def apply_runtime_patches(arch, model, cfg, lm_mod, notes):
    if arch == "qwen3_next":
        patch_qwen3_next_instances(model, lm_mod, notes)
    if arch == "deepseek_v2":
        patch_deepseek_v2_instances(model, cfg, notes)
    force_eager_experts(model, notes)


# ------------------------------------------------------ structure check ------
def describe_layers(keys):
    attn, mlp = [], []
    for i in range(LAYERS):
        p = "model.layers.%d." % i
        if any(k.startswith(p + "linear_attn.") for k in keys):
            attn.append("linear")
        elif (p + "self_attn.kv_a_proj_with_mqa.weight") in keys:
            attn.append("mla")
        elif (p + "self_attn.q_proj.weight") in keys:
            attn.append("gqa")
        else:
            attn.append("?")
        if (p + "mlp.gate.weight") in keys:
            mlp.append("moe")
        elif (p + "mlp.gate_proj.weight") in keys:
            mlp.append("dense")
        else:
            mlp.append("?")
    return attn, mlp


def count_experts(sd, layer):
    p = "model.layers.%d.mlp.experts." % layer
    fused = sd.get(p + "gate_up_proj")
    if fused is not None and fused.dim() == 3:
        return int(fused.shape[0])
    ids = set()
    for k in sd:
        if k.startswith(p):
            head = k[len(p):].split(".", 1)[0]
            if head.isdigit():
                ids.add(int(head))
    return len(ids)


def rotary_modules(model):
    out = []
    for n, m in model.named_modules():
        buf = getattr(m, "_buffers", {}).get("inv_freq")
        if buf is not None:
            out.append((n, m))
    return out


def check_structure(arch, spec, model, notes):
    sd = model.state_dict()
    keys = set(sd.keys())
    exp = spec["expect"]
    attn, mlp = describe_layers(keys)
    say(notes, "layers: attn=%s mlp=%s" % (attn, mlp))
    if attn != exp["attn"] or mlp != exp["mlp"]:
        raise RuntimeError("%s structure is attn=%s mlp=%s, expected attn=%s mlp=%s"
                           % (arch, attn, mlp, exp["attn"], exp["mlp"]))
    for i, kind in enumerate(mlp):
        if kind == "moe":
            n = count_experts(sd, i)
            if n != N_EXPERTS:
                raise RuntimeError("layer %d has %d experts, expected %d" % (i, n, N_EXPERTS))
            if exp["route"] == "sigmoid_bias_group_top2" and \
                    ("model.layers.%d.mlp.gate.e_score_correction_bias" % i) not in keys:
                raise RuntimeError("layer %d lacks mlp.gate.e_score_correction_bias" % i)
    if "q_out" in exp:
        for i, kind in enumerate(attn):
            if kind == "gqa":
                got = sd["model.layers.%d.self_attn.q_proj.weight" % i].shape[0]
                if got != exp["q_out"]:
                    raise RuntimeError("layer %d q_proj has %d outputs, expected %d (head_dim not applied?)"
                                       % (i, got, exp["q_out"]))
    if "q_lora" in exp:
        has_qa = "model.layers.0.self_attn.q_a_proj.weight" in keys
        if has_qa != exp["q_lora"]:
            raise RuntimeError("q_lora expectation %s but q_a_proj present=%s" % (exp["q_lora"], has_qa))
    if "model.embed_tokens.weight" in sd and "lm_head.weight" in sd:
        pass
    else:
        raise RuntimeError("expected model.embed_tokens.weight and lm_head.weight")
    if model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr():
        raise RuntimeError("lm_head is tied to embed_tokens; wanted untied")
    rots = rotary_modules(model)
    if not rots:
        raise RuntimeError("no rotary embedding module (inv_freq buffer) found")
    for n, m in rots:
        nf = m._buffers["inv_freq"].numel()
        if nf * 2 != exp["rotary_dim"]:
            raise RuntimeError("%s.inv_freq has %d entries: rotary dim %d, expected %d"
                               % (n, nf, nf * 2, exp["rotary_dim"]))
    return rots


# -------------------------------------------------------------- re-init ------
_ZC_RE = re.compile(r"1(?:\.0)?\s*\+\s*self\.weight")


def norm_is_zero_centred(mod, initial):
    src = ""
    try:
        src = inspect.getsource(type(mod).forward)
    except Exception:
        pass
    by_src = bool(_ZC_RE.search(src))
    by_init = bool(initial is not None and initial.numel() > 0 and float(initial.abs().max()) == 0.0)
    return by_src or by_init, ("source" if by_src else ("zero-init" if by_init else "ones-init/source"))


def init_rule(name, shape, mod, zero_centred):
    """(distribution, a, b) for one tensor, named as in an HF checkpoint."""
    if name.endswith("e_score_correction_bias"):
        # non-negative: score+bias stays > 0, so masking dropped groups with 0.0
        # (transformers, DeepSeek's HF code) and with -inf (DeepSeek's inference
        # code, vLLM) pick the same experts.
        return ("uniform", 0.0, 0.4)
    if name.endswith("A_log"):
        return ("log_uniform", 0.1, 1.0)  # decay exp(-A*softplus(.)) ~ 0.5..0.95: real memory
    if name.endswith("dt_bias"):
        return ("normal", 0.0, 0.5)
    if name.endswith(".bias"):
        return ("normal", 0.0, 0.1)
    if mod is not None and "norm" in type(mod).__name__.lower() and name.endswith(".weight"):
        return ("normal", 0.0, 0.2) if zero_centred else ("normal", 1.0, 0.2)
    if name.endswith("embed_tokens.weight"):
        return ("normal", 0.0, 1.0)
    fan_in = shape[-1] if len(shape) >= 2 else 1
    if name == "lm_head.weight" or name.endswith("mlp.gate.weight"):
        return ("normal", 0.0, 2.0 / math.sqrt(fan_in))   # logits std ~2, decisive routing
    if len(shape) >= 2:
        return ("normal", 0.0, 1.0 / math.sqrt(fan_in))   # keeps activations O(1)
    return ("normal", 0.0, 0.1)


def draw(torch, rule, shape, seed):
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    t = torch.empty(tuple(shape), dtype=torch.float32)
    dist, a, b = rule
    if dist == "normal":
        t.normal_(a, b, generator=g)
    elif dist == "uniform":
        t.uniform_(a, b, generator=g)
    elif dist == "log_uniform":
        t.uniform_(a, b, generator=g)
        t = t.log()
    else:
        raise ValueError(dist)
    return t


def reinit_weights(torch, model, arch, base_seed, notes):
    """Every persistent tensor gets values drawn from a generator seeded by its
    checkpoint name, so values do not depend on transformers' layout (4.x
    per-expert modules vs 5.x fused 3-D expert tensors)."""
    sd = model.state_dict(keep_vars=True)
    modules = dict(model.named_modules())
    norm_kinds = {}
    plan = []  # (tensor view writer, canonical name, shape, rule)
    for key in sorted(sd.keys()):
        t = sd[key]
        if not torch.is_floating_point(t):
            say(notes, "NOTE non-float state %s (%s) left as is" % (key, t.dtype))
            continue
        modname, _, attr = key.rpartition(".")
        mod = modules.get(modname)
        if key.endswith("experts.gate_up_proj") and t.dim() == 3:
            E, two_i, h = t.shape
            inter = two_i // 2
            prefix = key[: -len("gate_up_proj")]
            for e in range(E):
                for part, sl in (("gate_proj", slice(0, inter)), ("up_proj", slice(inter, two_i))):
                    cname = "%s%d.%s.weight" % (prefix, e, part)
                    plan.append((t, (e, sl), cname, (inter, h), init_rule(cname, (inter, h), None, False)))
            continue
        if key.endswith("experts.down_proj") and t.dim() == 3:
            E, h, inter = t.shape
            prefix = key[: -len("down_proj")]
            for e in range(E):
                cname = "%s%d.down_proj.weight" % (prefix, e)
                plan.append((t, (e,), cname, (h, inter), init_rule(cname, (h, inter), None, False)))
            continue
        zc = False
        if mod is not None and "norm" in type(mod).__name__.lower() and attr == "weight":
            zc, how = norm_is_zero_centred(mod, t.detach())
            norm_kinds[type(mod).__name__] = ("zero-centred (1+w)" if zc else "standard (w)") + " by " + how
        plan.append((t, None, key, tuple(t.shape), init_rule(key, tuple(t.shape), mod, zc)))

    for cls_name, kind in sorted(norm_kinds.items()):
        say(notes, "norm %s: %s" % (cls_name, kind))
    if arch == "qwen3_next":
        if not norm_kinds.get("Qwen3NextRMSNorm", "").startswith("zero-centred"):
            raise RuntimeError("qwen3_next: Qwen3NextRMSNorm not detected as zero-centred: %r" % norm_kinds)
        for c, k in norm_kinds.items():
            if "Gated" in c and k.startswith("zero-centred"):
                raise RuntimeError("qwen3_next: gated norm %s detected as zero-centred" % c)
    else:
        for c, k in norm_kinds.items():
            if k.startswith("zero-centred"):
                raise RuntimeError("%s: norm %s unexpectedly zero-centred" % (arch, c))

    unclassified = []
    for t, index, cname, shape, rule in plan:
        vals = draw(torch, rule, shape, stable_seed(base_seed, arch, cname))
        vals = vals.to(torch.bfloat16).to(torch.float32)  # on the BF16 grid: saving is lossless
        dst = t.data if index is None else t.data[index]
        if tuple(dst.shape) != tuple(shape):
            raise RuntimeError("shape mismatch writing %s: %s vs %s" % (cname, tuple(dst.shape), shape))
        dst.copy_(vals.to(dst.dtype))
        if len(shape) <= 1 and rule == ("normal", 0.0, 0.1) and not cname.endswith(".bias"):
            unclassified.append(cname)
    if unclassified:
        say(notes, "NOTE 1-D tensors without a specific rule got normal(0,0.1): %s" % unclassified)


def check_nonzero(torch, sd, where):
    bad = []
    for k, t in sd.items():
        if not torch.is_floating_point(t):
            continue
        tf = t.detach().float()
        if not bool(torch.isfinite(tf).all()):
            bad.append("%s non-finite" % k)
        elif float(tf.abs().max()) == 0.0:
            bad.append("%s all-zero" % k)
    if bad:
        raise RuntimeError("%s: bad tensors: %s" % (where, bad))


# ---------------------------------------------------------- checkpoint ------
def to_checkpoint_layout(sd):
    """In-memory state dict -> HF checkpoint naming (5.x fused experts split
    back into experts.<e>.{gate,up,down}_proj.weight)."""
    out = {}
    for k, t in sd.items():
        if k.endswith("experts.gate_up_proj") and t.dim() == 3:
            prefix = k[: -len("gate_up_proj")]
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                out["%s%d.gate_proj.weight" % (prefix, e)] = t[e, :inter].contiguous()
                out["%s%d.up_proj.weight" % (prefix, e)] = t[e, inter:].contiguous()
        elif k.endswith("experts.down_proj") and t.dim() == 3:
            prefix = k[: -len("down_proj")]
            for e in range(t.shape[0]):
                out["%s%d.down_proj.weight" % (prefix, e)] = t[e].contiguous()
        else:
            out[k] = t.contiguous()
    return out


def read_checkpoint(path):
    from safetensors import safe_open
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    tensors = {}
    for f in files:
        with safe_open(f, framework="pt") as fh:
            for k in fh.keys():
                if k in tensors:
                    raise RuntimeError("tensor %s appears in two files" % k)
                tensors[k] = fh.get_tensor(k)
    return files, tensors


def diff_checkpoint(torch, expected, got):
    problems = []
    for k in sorted(set(expected) - set(got)):
        problems.append("missing in file: %s" % k)
    for k in sorted(set(got) - set(expected)):
        problems.append("unexpected in file: %s %s %s" % (k, got[k].dtype, tuple(got[k].shape)))
    for k in sorted(set(expected) & set(got)):
        a, b = expected[k], got[k]
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            problems.append("%s: file %s%s vs expected %s%s" % (k, b.dtype, tuple(b.shape), a.dtype, tuple(a.shape)))
        elif not torch.equal(a.cpu(), b.cpu()):
            problems.append("%s: values differ" % k)
    return problems


def save_and_verify(torch, model, out_dir, sd_saved, notes):
    try:
        model.save_pretrained(out_dir, safe_serialization=True)
    except TypeError as e:
        if "safe_serialization" not in str(e):
            raise
        say(notes, "FALLBACK save: save_pretrained() refuses safe_serialization (%s); saving without it" % e)
        model.save_pretrained(out_dir)
    expected = to_checkpoint_layout(sd_saved)
    files, got = read_checkpoint(out_dir)
    if not files:
        raise RuntimeError("save_pretrained wrote no *.safetensors in %s: %s" % (out_dir, os.listdir(out_dir)))
    problems = diff_checkpoint(torch, expected, got)
    if problems:
        fused = [k for k in got if re.search(r"experts\.(gate_up_proj|down_proj)$", k)]
        if not fused:
            raise RuntimeError("saved checkpoint differs from the model:\n  " + "\n  ".join(problems[:40]))
        say(notes, "FALLBACK save: file has fused expert tensors %s...; rewriting model.safetensors in the "
                   "per-expert layout of real checkpoints" % fused[:2])
        from safetensors.torch import save_file
        for f in files:
            os.remove(f)
        idx = os.path.join(out_dir, "model.safetensors.index.json")
        if os.path.exists(idx):
            os.remove(idx)
        save_file({k: v.detach().cpu().contiguous() for k, v in expected.items()},
                  os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        files, got = read_checkpoint(out_dir)
        problems = diff_checkpoint(torch, expected, got)
        if problems:
            raise RuntimeError("rewritten checkpoint still differs:\n  " + "\n  ".join(problems[:40]))
    manifest = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                for k, v in sorted(got.items())}
    nbytes = sum(os.path.getsize(f) for f in files)
    return files, manifest, nbytes


def fix_config_json(arch, spec, out_dir, notes):
    """Make config.json carry the keys real checkpoints carry (transformers 5.x
    writes only rope_parameters, num_local_experts, ...).  Only adds missing
    (or null) keys, never changes one; the reload below proves the model is
    unchanged (same tensors, same RoPE frequencies)."""
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        cj = json.load(f)
    if cj.get("model_type") != arch:
        raise RuntimeError("config.json model_type is %r" % cj.get("model_type"))
    added = {}
    rp = cj.get("rope_parameters") if isinstance(cj.get("rope_parameters"), dict) else {}
    if "rope_theta" not in cj:
        added["rope_theta"] = rp.get("rope_theta", ROPE_THETA)
    prf = spec["kwargs"].get("partial_rotary_factor")
    if prf is not None and "partial_rotary_factor" not in cj:
        added["partial_rotary_factor"] = rp.get("partial_rotary_factor", prf)
    # every key we asked for, under the name real checkpoints use (5.x writes
    # e.g. Qwen3-MoE's num_experts only as num_local_experts, and YaRN only
    # inside rope_parameters)
    requested = dict(spec["kwargs"])
    requested.update(spec["settable"])
    requested.update(spec["info"])
    for k, v in requested.items():
        if (cj.get(k) is None and v is not None) and k not in added:
            added[k] = copy.deepcopy(v)
        elif k in cj and json.dumps(cj[k], sort_keys=True) != json.dumps(v, sort_keys=True):
            say(notes, "NOTE config.json %s = %s (requested %s)" % (k, json.dumps(cj[k], sort_keys=True),
                                                                   json.dumps(v, sort_keys=True)))
    if added:
        cj.update(added)
        with open(path, "w") as f:
            json.dump(cj, f, indent=2, sort_keys=True)
            f.write("\n")
        say(notes, "CONFIG config.json: added keys real checkpoints carry: %s" % sorted(added))
    rope_info = {k: cj.get(k) for k in ("rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor")
                 if k in cj}
    dtype_info = cj.get("torch_dtype", cj.get("dtype"))
    say(notes, "config.json: architectures=%s dtype=%s rope=%s" % (cj.get("architectures"), dtype_info,
                                                                   json.dumps(rope_info, sort_keys=True)))
    if spec["expect"].get("yarn"):
        ok = any(isinstance(d, dict) and rope_type_of(d) == "yarn"
                 for d in (cj.get("rope_scaling"), cj.get("rope_parameters")))
        if not ok:
            raise RuntimeError("config.json does not carry YaRN")
    return cj


# --------------------------------------------------------------- reload ------
def load_reference(torch, transformers, lm_cls, out_dir, device, notes):
    tv = tf_version_tuple(transformers.__version__)
    kw = dict(attn_implementation="eager", local_files_only=True, output_loading_info=True)
    if tv >= (4, 56):
        kw["dtype"] = torch.float32
    else:
        kw["torch_dtype"] = torch.float32
    if tv[0] >= 5:
        kw["experts_implementation"] = "eager"
    while True:
        try:
            res = transformers.AutoModelForCausalLM.from_pretrained(out_dir, **kw)
            break
        except TypeError as e:
            msg = str(e)
            for opt in ("experts_implementation", "output_loading_info"):
                if opt in msg and opt in kw:
                    kw.pop(opt)
                    say(notes, "FALLBACK load: from_pretrained() refuses %s (%s); retrying without it" % (opt, e))
                    break
            else:
                raise
    if isinstance(res, tuple):
        model, info = res
    else:
        model, info = res, None
    if type(model) is not lm_cls and type(model).__name__ != lm_cls.__name__:
        raise RuntimeError("reloaded %s, expected %s" % (type(model).__name__, lm_cls.__name__))
    problems = []
    if isinstance(info, dict):
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            v = info.get(k)
            if v:
                problems.append("%s: %s" % (k, sorted(str(x) for x in v)[:20]))
    model = model.float().eval().to(device)
    return model, problems


def compare_state(torch, model, sd_saved):
    sd = model.state_dict()
    problems = []
    for k in sorted(set(sd_saved) - set(sd)):
        problems.append("missing after reload: %s" % k)
    for k in sorted(set(sd) - set(sd_saved)):
        problems.append("new after reload: %s" % k)
    for k in sorted(set(sd) & set(sd_saved)):
        a = sd[k].detach().float().cpu()
        b = sd_saved[k].detach().float().cpu()
        if tuple(a.shape) != tuple(b.shape):
            problems.append("%s: shape %s vs saved %s" % (k, tuple(a.shape), tuple(b.shape)))
        elif not torch.equal(a, b):
            problems.append("%s: max |diff| %.3g" % (k, float((a - b).abs().max())))
    return problems


# ------------------------------------------------------------ reference ------
class RouterProbe(object):
    """Captures the input of every MoE block and recomputes the routing
    decisions to measure how close they are to a tie (diagnostics only: the
    outputs come from transformers' own forward)."""

    def __init__(self, torch, model, spec, cfg):
        self.torch = torch
        self.rule = spec["expect"]["route"]
        self.k = int(getattr(cfg, "num_experts_per_tok", TOPK))
        self.n_group = getattr(cfg, "n_group", None)
        self.topk_group = getattr(cfg, "topk_group", None)
        self.captured = []
        self.handles = []
        self.layers = []
        for i, layer in enumerate(model.model.layers):
            mlp = getattr(layer, "mlp", None)
            gate = getattr(mlp, "gate", None)
            w = getattr(gate, "weight", None)
            if w is None or w.dim() != 2 or tuple(w.shape) != (N_EXPERTS, HIDDEN):
                continue
            self.layers.append(i)
            self.handles.append(self._register(mlp, i))

    def _register(self, mlp, i):
        def hook_kw(mod, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
            self.captured.append((i, mod, x.detach()))

        def hook(mod, args):
            self.captured.append((i, mod, args[0].detach()))
        try:
            return mlp.register_forward_pre_hook(hook_kw, with_kwargs=True)
        except TypeError:
            return mlp.register_forward_pre_hook(hook)

    def reset(self):
        self.captured = []

    def remove(self):
        for h in self.handles:
            h.remove()

    def _grouped(self, sc, gs):
        torch = self.torch
        T, E = sc.shape
        G, tg, k = self.n_group, self.topk_group, self.k
        gsorted = torch.sort(gs, dim=-1, descending=True).values
        gmargin = float((gsorted[:, tg - 1] - gsorted[:, tg]).min()) if tg < G else float("inf")
        gidx = torch.topk(gs, tg, dim=-1).indices
        gmask = torch.zeros_like(gs)
        gmask.scatter_(1, gidx, 1.0)
        emask = gmask.bool().unsqueeze(-1).expand(T, G, E // G).reshape(T, E)
        masked = sc.masked_fill(~emask, 0.0)
        ms = torch.sort(masked, dim=-1, descending=True).values
        emargin = float((ms[:, k - 1] - ms[:, k]).min())
        sel = torch.topk(masked, k, dim=-1).indices
        return sel, emargin, gmargin

    def stats(self):
        torch = self.torch
        out = dict(expert_margin=float("inf"), group_margin=float("inf"), tokens=0,
                   group_changed=0, bias_changed=0)
        for i, mod, x in self.captured:
            x = x.reshape(-1, x.shape[-1]).float()
            logits = x @ mod.gate.weight.float().t()
            T = logits.shape[0]
            out["tokens"] += T
            if self.rule == "softmax_topk":
                p = torch.softmax(logits, dim=-1)
                s = torch.sort(p, dim=-1, descending=True).values
                out["expert_margin"] = min(out["expert_margin"], float((s[:, self.k - 1] - s[:, self.k]).min()))
                continue
            if self.rule == "softmax_group_max":
                sc = torch.softmax(logits, dim=-1)
                gs = sc.view(T, self.n_group, -1).max(dim=-1).values
            else:
                s = torch.sigmoid(logits)
                sc = s + mod.gate.e_score_correction_bias.float()[None, :]
                gs = sc.view(T, self.n_group, -1).topk(2, dim=-1).values.sum(dim=-1)
            sel, em, gm = self._grouped(sc, gs)
            out["expert_margin"] = min(out["expert_margin"], em)
            out["group_margin"] = min(out["group_margin"], gm)
            free = torch.topk(sc, self.k, dim=-1).indices
            srt = lambda a: torch.sort(a, dim=-1).values  # noqa: E731
            out["group_changed"] += int((srt(sel) != srt(free)).any(dim=-1).sum())
            if self.rule == "sigmoid_bias_group_top2":
                gs0 = s.view(T, self.n_group, -1).topk(2, dim=-1).values.sum(dim=-1)
                sel0, _, _ = self._grouped(s, gs0)
                out["bias_changed"] += int((srt(sel) != srt(sel0)).any(dim=-1).sum())
        return out


def merge_route(a, b):
    if a is None:
        return dict(b)
    return dict(expert_margin=min(a["expert_margin"], b["expert_margin"]),
                group_margin=min(a["group_margin"], b["group_margin"]),
                tokens=a["tokens"] + b["tokens"], group_changed=a["group_changed"] + b["group_changed"],
                bias_changed=a["bias_changed"] + b["bias_changed"])


def forward_logits(torch, model, ids, device):
    x = torch.tensor([ids], dtype=torch.long, device=device)
    out = model(input_ids=x, use_cache=False)
    return out.logits[0].detach().float().cpu()


def top2_margin(torch, logits):
    v = torch.topk(logits, 2, dim=-1).values
    return v[..., 0] - v[..., 1]


def evaluate(torch, model, probe, ids, n_greedy, device):
    probe.reset()
    logits = forward_logits(torch, model, ids, device)
    prefill_route = probe.stats()
    route = dict(prefill_route)
    argmax = logits.argmax(dim=-1).tolist()
    margins = top2_margin(torch, logits).tolist()
    res = dict(ids=list(ids), logits=logits, argmax=argmax, argmax_margins=margins,
               prefill_route=prefill_route)
    seq = list(ids)
    greedy, gmargins = [], []
    for step in range(n_greedy):
        if step == 0:
            last = logits[-1]
        else:
            probe.reset()
            last = forward_logits(torch, model, seq, device)[-1]
            route = merge_route(route, probe.stats())
        nxt = int(last.argmax())
        greedy.append(nxt)
        gmargins.append(float(top2_margin(torch, last)))
        seq.append(nxt)
    res.update(greedy=greedy, greedy_margins=gmargins, route=route)
    res["min_logit_margin"] = min(margins + gmargins)
    res["min_route_margin"] = min(route["expert_margin"], route["group_margin"])
    return res


def choose_prompt(torch, model, probe, seed0, n, n_greedy, device, tries, label, notes):
    best, best_score = None, -1.0
    for t in range(tries):
        g = torch.Generator(device="cpu")
        g.manual_seed(seed0 + t)
        ids = torch.randint(FIRST_TOKEN_ID, VOCAB, (n,), generator=g).tolist()
        res = evaluate(torch, model, probe, ids, n_greedy, device)
        distinct = len(set(res["argmax"]))
        score = min(res["min_logit_margin"] / LOGIT_MARGIN_MIN, res["min_route_margin"] / ROUTE_MARGIN_MIN,
                    distinct / float(MIN_DISTINCT_ARGMAX))
        res["prompt_seed"] = seed0 + t
        res["tries"] = t + 1
        if score >= 1.0:
            if t:
                say(notes, "%s prompt: seed %d (tries %d) clears the tie margins" % (label, seed0 + t, t + 1))
            return res, True
        if score > best_score:
            best, best_score = res, score
    say(notes, "WARNING %s prompt: no seed in %d tries clears logit margin %.0e / route margin %.0e / "
               "%d distinct argmax; keeping the best (min logit margin %.3g, min route margin %.3g)"
        % (label, tries, LOGIT_MARGIN_MIN, ROUTE_MARGIN_MIN, MIN_DISTINCT_ARGMAX,
           best["min_logit_margin"], best["min_route_margin"]))
    return best, False


def rope_check(torch, model, rots):
    name, rot = rots[0]
    d = {"module": name, "inv_freq": [float(x) for x in rot._buffers["inv_freq"].float().cpu()]}
    sc = getattr(rot, "attention_scaling", None)
    if sc is not None:
        d["attention_scaling"] = float(sc)
    attn = getattr(model.model.layers[-1], "self_attn", None)
    if attn is not None and getattr(attn, "scaling", None) is not None:
        d["softmax_scale_last_layer"] = float(attn.scaling)
    return d


def finite_list(xs):
    out = []
    for x in xs:
        x = float(x)
        if not math.isfinite(x):
            raise RuntimeError("non-finite value in reference output")
        out.append(x)
    return out


# ----------------------------------------------------------------- main ------
def make_one(torch, transformers, arch, args):
    spec = SPECS[arch]
    notes = []
    print("\n" + "=" * 78 + "\n%s\n" % arch + "=" * 78, flush=True)
    cfg_cls, lm_cls = resolve_classes(transformers, arch)
    lm_mod = sys.modules.get(lm_cls.__module__)
    out_dir = os.path.join(args.out, arch)
    os.makedirs(out_dir, exist_ok=True)
    for pat in ("*.safetensors", "model.safetensors.index.json", "config.json",
                "generation_config.json", "reference.json"):
        for f in glob.glob(os.path.join(out_dir, pat)):
            os.remove(f)

    cfg = build_config(cfg_cls, arch, spec, notes)
    if arch == "qwen3_next":
        patch_qwen3_next_module(lm_mod, notes)

    # ---- build
    torch.manual_seed(spec["seed"])
    kw = dict(attn_implementation="eager")
    if tf_version_tuple(transformers.__version__)[0] >= 5:
        kw["experts_implementation"] = "eager"
    try:
        model = transformers.AutoModelForCausalLM.from_config(cfg, **kw)
    except TypeError as e:
        if "experts_implementation" not in str(e) or "experts_implementation" not in kw:
            raise
        kw.pop("experts_implementation")
        say(notes, "FALLBACK build: from_config() refuses experts_implementation (%s)" % e)
        model = transformers.AutoModelForCausalLM.from_config(cfg, **kw)
    if type(model).__name__ != lm_cls.__name__:
        raise RuntimeError("from_config built %s, expected %s" % (type(model).__name__, lm_cls.__name__))
    model = model.float().eval()
    if arch == "qwen3_next":
        patch_qwen3_next_instances(model, lm_mod, notes)
    rots = check_structure(arch, spec, model, notes)
    built_inv_freq = {n: m._buffers["inv_freq"].detach().float().clone() for n, m in rots}

    # ---- values
    reinit_weights(torch, model, arch, spec["seed"], notes)
    model = model.to(torch.bfloat16)
    keep_fp32 = [] if args.all_bf16 else [k for k in model.state_dict() if k.endswith("e_score_correction_bias")]
    modules = dict(model.named_modules())
    for k in keep_fp32:
        modname, _, attr = k.rpartition(".")
        m = modules[modname]
        cur = getattr(m, attr)
        if isinstance(cur, torch.nn.Parameter):
            cur.data = cur.data.float()
        else:
            setattr(m, attr, cur.float())
    sd_saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    check_nonzero(torch, sd_saved, "before save")
    for n, p in model.named_parameters():
        if float(p.detach().float().abs().max()) == 0.0:
            raise RuntimeError("parameter %s is all zero" % n)
    n_params = sum(int(v.numel()) for v in sd_saved.values())

    # ---- save
    files, manifest, nbytes = save_and_verify(torch, model, out_dir, sd_saved, notes)
    say(notes, "saved %s: %d tensors, %d bytes" % ([os.path.basename(f) for f in files], len(manifest), nbytes))
    if nbytes > MAX_FILE_BYTES:
        say(notes, "WARNING checkpoint is %d bytes (> %d)" % (nbytes, MAX_FILE_BYTES))
    dtypes = sorted(set(v["dtype"] for v in manifest.values()))
    say(notes, "file dtypes: %s" % dtypes)
    fix_config_json(arch, spec, out_dir, notes)
    del model

    # ---- reload: the reference
    if arch == "qwen3_next":
        patch_qwen3_next_module(lm_mod, notes)
    device = torch.device(args.device)
    ref, load_problems = load_reference(torch, transformers, lm_cls, out_dir, device, notes)
    rcfg = ref.config
    apply_runtime_patches(arch, ref, rcfg, lm_mod, notes)
    att = getattr(rcfg, "_attn_implementation", None)
    say(notes, "reference: %s on %s, attn=%s experts=%s" % (type(ref).__name__, device, att,
                                                            getattr(rcfg, "_experts_implementation", "n/a")))
    if att not in (None, "eager"):
        raise RuntimeError("reference attention implementation is %r, wanted eager" % att)
    state_problems = compare_state(torch, ref, sd_saved)
    if load_problems or state_problems:
        msg = "reloaded model is not the saved one:\n  " + "\n  ".join((load_problems + state_problems)[:40])
        if args.fix_load_mismatch and not load_problems:
            say(notes, "WARNING " + msg + "\nFIX (--fix-load-mismatch): copying the saved values in")
            rs = ref.state_dict(keep_vars=True)
            for k, v in sd_saved.items():
                rs[k].data.copy_(v.to(rs[k].device, rs[k].dtype))
            if compare_state(torch, ref, sd_saved):
                raise RuntimeError("still differs after --fix-load-mismatch")
        else:
            raise RuntimeError(msg)
    check_nonzero(torch, ref.state_dict(), "after reload")
    ref_rots = check_structure(arch, spec, ref, notes)
    for n, m in ref_rots:
        a = m._buffers["inv_freq"].detach().float().cpu()
        b = built_inv_freq.get(n)
        if b is None or tuple(a.shape) != tuple(b.shape) or not torch.allclose(a, b, rtol=0, atol=0):
            raise RuntimeError("%s.inv_freq after reload differs from the built model's (config.json drift?)" % n)
    if spec["expect"].get("yarn"):
        a = ref_rots[0][1]._buffers["inv_freq"].detach().float().cpu()
        rd = ref_rots[0][1]._buffers["inv_freq"].numel() * 2
        plain = 1.0 / (ROPE_THETA ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))
        if torch.allclose(a, plain):
            raise RuntimeError("YaRN is not active: inv_freq equals plain RoPE")

    # ---- reference outputs
    probe = RouterProbe(torch, ref, spec, rcfg)
    if not probe.layers:
        raise RuntimeError("found no MoE router to probe")
    with torch.no_grad():
        short, ok_short = choose_prompt(torch, ref, probe, spec["seed"] * 100, N_PROMPT, N_GREEDY, device,
                                        args.max_prompt_tries, "short", notes)
        long_, ok_long = choose_prompt(torch, ref, probe, spec["seed"] * 100 + 50000, N_LONG_PROMPT, 0, device,
                                       args.max_prompt_tries, "long", notes)
    probe.remove()

    logits = short["logits"]
    logits_std = float(logits.std())
    last = logits[-1]
    quality = []
    if logits_std < LOGITS_STD_MIN:
        quality.append("logits std %.3f < %.1f" % (logits_std, LOGITS_STD_MIN))
    if len(set(short["argmax"])) < MIN_DISTINCT_ARGMAX:
        quality.append("only %d distinct argmax" % len(set(short["argmax"])))
    if not ok_short or not ok_long:
        quality.append("tie margins not cleared")
    if short["greedy"][0] != short["argmax"][-1]:
        raise RuntimeError("greedy[0] != argmax of the last prompt position")
    for q in quality:
        say(notes, "QUALITY WARNING %s" % q)

    route = short["prefill_route"]
    diag = dict(
        probed_moe_layers=probe.layers,
        routing_rule=probe.rule,
        min_expert_margin=short["route"]["expert_margin"],
        min_group_margin=short["route"]["group_margin"] if math.isfinite(short["route"]["group_margin"]) else None,
        prefill_token_layer_decisions=route["tokens"],
        prefill_group_limit_changed=route["group_changed"],
        prefill_bias_changed=route["bias_changed"],
        min_logit_margin=short["min_logit_margin"],
        long_min_logit_margin=long_["min_logit_margin"],
        long_min_route_margin=long_["min_route_margin"],
    )
    if probe.rule != "softmax_topk":
        say(notes, "routing: group limit changed %d/%d token-layer selections; e_score bias changed %d"
            % (route["group_changed"], route["tokens"], route["bias_changed"]))
        if route["group_changed"] == 0:
            quality.append("group limit never changed a selection")
            say(notes, "QUALITY WARNING group-limited routing never changed a selection")
        if probe.rule == "sigmoid_bias_group_top2" and route["bias_changed"] == 0:
            quality.append("e_score_correction_bias never changed a selection")
            say(notes, "QUALITY WARNING e_score_correction_bias never changed a selection")

    reference = {
        "model_type": arch,
        "architecture_class": type(ref).__name__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created_by": "tools/make_fixtures.py",
        "created_unix": int(time.time()),
        "semantics": ("weights: the BF16 (and F32) values in model.safetensors upcast to float32; float32 maths "
                      "on %s; eager attention; no KV cache (every greedy step re-runs the whole sequence); "
                      "prompt_ids fed as they are (no BOS added); greedy never stops at EOS" % device.type),
        "device": str(device),
        "prompt_seed": short["prompt_seed"],
        "prompt_ids": short["ids"],
        "last_logits": finite_list(last.tolist()),
        "argmax": short["argmax"],
        "argmax_margins": finite_list(short["argmax_margins"]),
        "greedy": short["greedy"],
        "greedy_margins": finite_list(short["greedy_margins"]),
        "greedy_steps": N_GREEDY,
        "logits_std": logits_std,
        "last_logits_std": float(last.std()),
        "long_prompt_seed": long_["prompt_seed"],
        "long_prompt_ids": long_["ids"],
        "long_last_logits": finite_list(long_["logits"][-1].tolist()),
        "long_argmax": long_["argmax"],
        "long_argmax_margins": finite_list(long_["argmax_margins"]),
        "special_token_ids": {"pad": COMMON["pad_token_id"], "bos": COMMON["bos_token_id"],
                              "eos": COMMON["eos_token_id"]},
        "config_requested": json.loads(json.dumps(
            dict(spec["kwargs"], **dict(spec["settable"], **spec["info"])), default=str)),
        "rope_check": rope_check(torch, ref, ref_rots),
        "diagnostics": diag,
        "quality_warnings": quality,
        "notes": notes,
        "tensors": manifest,
    }
    if args.dump_all_logits:
        reference["prefill_logits"] = [finite_list(r) for r in logits.tolist()]
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    say(None, "wrote %s" % os.path.join(out_dir, "reference.json"))
    return dict(arch=arch, status="ok" if not quality else "ok*", params=n_params, bytes=nbytes,
                logits_std=logits_std, distinct=len(set(short["argmax"])),
                distinct_greedy=len(set(short["greedy"])), min_margin=short["min_logit_margin"],
                route_margin=short["min_route_margin"], quality=quality)


def main():
    ap = argparse.ArgumentParser(description="Tiny random MoE checkpoints + transformers reference outputs.")
    ap.add_argument("--out", required=True, help="output directory; one sub-directory per architecture")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(ARCHS))
    ap.add_argument("--device", default="cpu", help="device for the reference forward (default cpu)")
    ap.add_argument("--max-prompt-tries", type=int, default=50,
                    help="prompt seeds to try until no decision is within the tie margins")
    ap.add_argument("--all-bf16", action="store_true",
                    help="store e_score_correction_bias as BF16 too (default F32, like real checkpoints)")
    ap.add_argument("--fix-load-mismatch", action="store_true",
                    help="if from_pretrained's values differ from the saved ones, copy the saved values in "
                         "(with a warning) instead of failing")
    ap.add_argument("--dump-all-logits", action="store_true",
                    help="also write prefill logits of every prompt position")
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first failing architecture")
    args = ap.parse_args()

    archs = ARCHS
    if args.only:
        archs = [a.strip() for a in args.only.split(",") if a.strip()]
        bad = [a for a in archs if a not in ARCHS]
        if bad:
            ap.error("unknown architecture(s) %s; choose from %s" % (bad, ARCHS))

    try:
        import torch
        import transformers
        import safetensors  # noqa: F401
    except ImportError as e:
        print("ERROR: needs torch, transformers and safetensors: %s" % e, file=sys.stderr)
        return 1
    torch.set_grad_enabled(False)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        transformers.logging.set_verbosity_error()
    except Exception:
        pass
    print("make_fixtures: transformers %s, torch %s, python %s, device %s, out %s"
          % (transformers.__version__, torch.__version__, platform.python_version(), args.device, args.out),
          flush=True)
    os.makedirs(args.out, exist_ok=True)

    results, skipped, failed = [], [], []
    for arch in archs:
        try:
            results.append(make_one(torch, transformers, arch, args))
        except Skip as e:
            print("SKIP %s: %s" % (arch, e), flush=True)
            skipped.append(arch)
        except Exception:
            traceback.print_exc()
            print("FAILED %s (traceback above)" % arch, flush=True)
            failed.append(arch)
            if args.fail_fast:
                break

    print("\n%-12s %-6s %8s %9s %9s %8s %8s %11s %11s" % (
        "arch", "status", "params", "file KB", "logit std", "argmax#", "greedy#", "min margin", "route marg"))
    for r in results:
        print("%-12s %-6s %8d %9.1f %9.3f %8d %8d %11.3g %11.3g" % (
            r["arch"], r["status"], r["params"], r["bytes"] / 1024.0, r["logits_std"], r["distinct"],
            r["distinct_greedy"], r["min_margin"], r["route_margin"]))
    for a in skipped:
        print("%-12s SKIP" % a)
    for a in failed:
        print("%-12s FAILED" % a)
    warned = [r["arch"] for r in results if r["quality"]]
    if warned:
        print("quality warnings (see reference.json 'quality_warnings'): %s" % warned)
    if failed:
        return 1
    if skipped or warned:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
