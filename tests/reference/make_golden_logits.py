#!/usr/bin/env python3
"""Golden teacher-forced logits from Hugging Face transformers, for
tests/integration/golden_logits_test.cc.

Why: the engine's forward pass must match the reference implementation of
each architecture to ~1e-3 relative error. This script is the only source of
the expected numbers; the C++ test reads what it writes and never hard-codes
logits.

What it writes (paths relative to tests/data/):
  models/<name>/{config.json,model.safetensors}
      Tiny random models (hidden 64, 2 layers, vocab 512, fp32, < 1 MB each)
      for every architecture variant the engine supports: LLaMA with GQA,
      LLaMA-3 rope scaling with tied embeddings, Qwen2 (qkv bias), Mistral,
      OPT (pre-LN) and OPT-350m-like (post-LN, project_in/out). Norm weights
      and every bias are random too, so none of them can be silently skipped.
  golden/<name>.logits.f32
      Full logits [n, 512] (float32, little-endian, row-major) of a fixed
      random token sequence, teacher-forced, fp32, CPU, eager attention.
  golden/smollm2-135m-q4_1.*.{f32,i32}
      For the default model GGUF (not committed; POLAR_DEFAULT_MODEL), whose
      vocabulary (49152) makes full logits too big to commit: per position the
      top-64 ids and logits, the logits of a fixed random set of 256 ids, the
      log-sum-exp over the full vocabulary and the gap between the two best.
      transformers dequantizes the GGUF to fp32, so the reference is the exact
      fp32 forward pass over the quantized weights.
  golden/manifest.json
      Every golden: model path, tokens, file names and shapes, tolerances.

Usage: python3 tests/reference/make_golden_logits.py [--gguf PATH] [--skip-gguf]
Deterministic: fixed seeds; rerunning reproduces the files (up to the
library versions recorded in the manifest).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig,
                          OPTConfig, Qwen2Config)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(REPO, "tests", "data")
DEFAULT_GGUF = os.path.join(REPO, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

NUM_POSITIONS = 260  # >= 256 teacher-forced positions per tiny model
TINY_VOCAB = 512
GGUF_TOP_K = 64
GGUF_PROBES = 256

# Tolerances the C++ test applies (documented in the manifest).
TOLERANCE = {
    # ||polar - ref||_2 / ||ref||_2 per position, over the stored entries.
    "max_rel_l2": 1e-3,
    # |lse_polar - lse_ref| / |lse_ref| per position (sparse goldens only).
    "max_rel_logsumexp": 1e-3,
    # Top-1 must agree wherever the reference's top-2 gap exceeds this.
    "top1_min_gap": 1e-3,
}

# Public-domain text (the opening of the United States Declaration of
# Independence, 1776) for the GGUF golden. compare_llamacpp.py uses a
# different text on purpose.
DECLARATION = (
    "When in the Course of human events, it becomes necessary for one people to dissolve "
    "the political bands which have connected them with another, and to assume among the "
    "powers of the earth, the separate and equal station to which the Laws of Nature and of "
    "Nature's God entitle them, a decent respect to the opinions of mankind requires that "
    "they should declare the causes which impel them to the separation. We hold these truths "
    "to be self-evident, that all men are created equal, that they are endowed by their "
    "Creator with certain unalienable Rights, that among these are Life, Liberty and the "
    "pursuit of Happiness. That to secure these rights, Governments are instituted among Men, "
    "deriving their just powers from the consent of the governed, That whenever any Form of "
    "Government becomes destructive of these ends, it is the Right of the People to alter or "
    "to abolish it, and to institute new Government, laying its foundation on such principles "
    "and organizing its powers in such form, as to them shall seem most likely to effect "
    "their Safety and Happiness. Prudence, indeed, will dictate that Governments long "
    "established should not be changed for light and transient causes; and accordingly all "
    "experience hath shewn, that mankind are more disposed to suffer, while evils are "
    "sufferable, than to right themselves by abolishing the forms to which they are "
    "accustomed. But when a long train of abuses and usurpations, pursuing invariably the "
    "same Object evinces a design to reduce them under absolute Despotism, it is their right, "
    "it is their duty, to throw off such Government, and to provide new Guards for their "
    "future security. Such has been the patient sufferance of these Colonies; and such is "
    "now the necessity which constrains them to alter their former Systems of Government."
)


def tiny_configs():
    """(name, config) for every tiny model. All: hidden 64, 2 layers, vocab 512."""
    common = dict(vocab_size=TINY_VOCAB, hidden_size=64, num_hidden_layers=2,
                  max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    llama = LlamaConfig(intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                        rms_norm_eps=1e-5, tie_word_embeddings=False, **common)
    llama3 = LlamaConfig(intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                         rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_theta=500000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64},
                         **common)
    qwen2 = Qwen2Config(intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
                        use_sliding_window=False, **common)
    mistral = MistralConfig(intermediate_size=128, num_attention_heads=4, num_key_value_heads=1,
                            rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False,
                            **common)
    opt = OPTConfig(vocab_size=TINY_VOCAB, hidden_size=64, ffn_dim=256, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=64,
                    do_layer_norm_before=True, activation_function="relu", pad_token_id=1,
                    bos_token_id=2, eos_token_id=2)
    opt350 = OPTConfig(vocab_size=TINY_VOCAB, hidden_size=64, ffn_dim=256, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=512,
                       word_embed_proj_dim=32, do_layer_norm_before=False,
                       activation_function="relu", pad_token_id=1, bos_token_id=2,
                       eos_token_id=2)
    return [("tiny-llama", llama), ("tiny-llama3", llama3), ("tiny-qwen2", qwen2),
            ("tiny-mistral", mistral), ("tiny-opt", opt), ("tiny-opt-350m-like", opt350)]


# transformers 5 writes "rope_parameters" (theta and scaling in one dict);
# checkpoints on the Hub written by transformers 4 have top-level "rope_theta"
# and "rope_scaling". These models get the older form so both are covered
# (the reload check below proves transformers reads it the same way).
LEGACY_ROPE_MODELS = ("tiny-llama3", "tiny-qwen2")


def to_legacy_rope(config_path):
    with open(config_path) as f:
        config = json.load(f)
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = rope
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def randomize(model, seed):
    """Every parameter random: matrices ~N(0, 1/sqrt(fan_in)) so activations
    and logits stay O(1) (the default 0.02 init makes the logits nearly flat
    and the top-1 check meaningless); norm weights ~1 + N(0, 0.2); all biases
    ~N(0, 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() == 1:  # RMSNorm / LayerNorm weight
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.2)
            elif "embed" in name and "project" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[-1]))


def teacher_forced_logits(model, ids):
    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


def write_raw(path, array, dtype):
    arr = np.ascontiguousarray(array.astype(dtype))
    arr.astype(arr.dtype.newbyteorder("<")).tofile(path)
    return os.path.relpath(path, DATA)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_tiny(name, config, seed, golden_dir):
    model_dir = os.path.join(DATA, "models", name)
    os.makedirs(model_dir, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                             dtype=torch.float32)
    model.eval()
    randomize(model, seed)
    model.save_pretrained(model_dir, safe_serialization=True)
    for extra in ("generation_config.json",):  # not needed by the engine
        p = os.path.join(model_dir, extra)
        if os.path.exists(p):
            os.remove(p)
    if name in LEGACY_ROPE_MODELS:
        to_legacy_rope(os.path.join(model_dir, "config.json"))

    gen = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, TINY_VOCAB, (NUM_POSITIONS,), generator=gen).tolist()
    logits_mem = teacher_forced_logits(model, ids)
    # The golden comes from the model as read back from disk, so it is what
    # config.json + model.safetensors mean to transformers.
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                    dtype=torch.float32)
    reloaded.eval()
    logits = teacher_forced_logits(reloaded, ids)
    if not np.allclose(logits, logits_mem, rtol=0, atol=1e-5):
        sys.exit(f"{name}: logits of the reloaded model differ from the in-memory model")
    std = float(logits.std())
    if not (0.3 < std < 30.0) or not np.isfinite(logits).all():
        sys.exit(f"{name}: degenerate logits (std {std})")

    logits_file = write_raw(os.path.join(golden_dir, f"{name}.logits.f32"), logits, np.float32)
    sorted_logits = np.sort(logits, axis=1)
    gaps = sorted_logits[:, -1] - sorted_logits[:, -2]
    print(f"{name}: {NUM_POSITIONS} positions, logits std {std:.3f}, "
          f"positions with top-2 gap <= {TOLERANCE['top1_min_gap']}: "
          f"{int((gaps <= TOLERANCE['top1_min_gap']).sum())}, "
          f"model {os.path.getsize(os.path.join(model_dir, 'model.safetensors'))} bytes")
    return {
        "name": name,
        "kind": "full",
        "model": os.path.relpath(model_dir, DATA),
        "model_type": config.model_type,
        "vocab_size": TINY_VOCAB,
        "num_positions": NUM_POSITIONS,
        "tokens": ids,
        "logits_file": logits_file,  # float32 [num_positions, vocab_size]
        "tolerance": TOLERANCE,
    }


def make_gguf(gguf_path, golden_dir, seed):
    name = "smollm2-135m-q4_1"
    model_dir, filename = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=filename,
                                                 dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    ids = tokenizer(DECLARATION, add_special_tokens=False)["input_ids"]
    if len(ids) < 256:
        sys.exit(f"{name}: text has only {len(ids)} tokens, need >= 256")
    logits = teacher_forced_logits(model, ids).astype(np.float64)
    n, vocab = logits.shape

    order = np.argsort(-logits, axis=1, kind="stable")[:, :GGUF_TOP_K]
    top_ids = order.astype(np.int32)
    top_logits = np.take_along_axis(logits, order, axis=1)
    rng = np.random.default_rng(seed)
    probe_ids = np.sort(rng.choice(vocab, size=GGUF_PROBES, replace=False)).astype(np.int32)
    probe_logits = logits[:, probe_ids]
    row_max = logits.max(axis=1)
    lse = row_max + np.log(np.exp(logits - row_max[:, None]).sum(axis=1))
    gap = top_logits[:, 0] - top_logits[:, 1]

    prefix = os.path.join(golden_dir, name)
    files = {
        "top_ids_file": write_raw(prefix + ".top_ids.i32", top_ids, np.int32),
        "top_logits_file": write_raw(prefix + ".top_logits.f32", top_logits, np.float32),
        "probe_logits_file": write_raw(prefix + ".probe_logits.f32", probe_logits, np.float32),
        "logsumexp_file": write_raw(prefix + ".logsumexp.f32", lse, np.float32),
        "top2_gap_file": write_raw(prefix + ".top2_gap.f32", gap, np.float32),
    }
    print(f"{name}: {n} positions, vocab {vocab}, positions with top-2 gap <= "
          f"{TOLERANCE['top1_min_gap']}: {int((gap <= TOLERANCE['top1_min_gap']).sum())}")
    entry = {
        "name": name,
        "kind": "sparse",
        # Not committed: the test takes the path from POLAR_DEFAULT_MODEL.
        "model": "$POLAR_DEFAULT_MODEL",
        "model_file_name": filename,
        "model_file_bytes": os.path.getsize(gguf_path),
        "model_file_sha256": sha256(gguf_path),
        "model_type": model.config.model_type,
        "vocab_size": vocab,
        "num_positions": n,
        "text": DECLARATION,
        "tokens": ids,
        "top_k": GGUF_TOP_K,
        "probe_ids": probe_ids.tolist(),
        "tolerance": TOLERANCE,
    }
    entry.update(files)
    return entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", default=os.environ.get("POLAR_DEFAULT_MODEL", DEFAULT_GGUF))
    parser.add_argument("--skip-gguf", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    golden_dir = os.path.join(DATA, "golden")
    os.makedirs(golden_dir, exist_ok=True)

    goldens = []
    for i, (name, config) in enumerate(tiny_configs()):
        goldens.append(make_tiny(name, config, seed=1000 + 17 * i, golden_dir=golden_dir))
    if not args.skip_gguf:
        if not os.path.exists(args.gguf):
            sys.exit(f"default model not found: {args.gguf} (run scripts/fetch-model or "
                     "pass --skip-gguf)")
        goldens.append(make_gguf(args.gguf, golden_dir, seed=4242))

    manifest = {
        "generator": "tests/reference/make_golden_logits.py",
        "note": "Paths are relative to tests/data. Binary files are little-endian, row-major. "
                "Logits are teacher-forced (row i = prediction after tokens[0..i]), fp32 on "
                "CPU with eager attention.",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "numpy": np.__version__},
        "goldens": goldens,
    }
    with open(os.path.join(golden_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(goldens)} goldens to {os.path.relpath(golden_dir, REPO)}")


if __name__ == "__main__":
    main()
