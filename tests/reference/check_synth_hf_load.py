#!/usr/bin/env python3
"""Checks that model directories written by Polar's WriteHfModel load in
transformers exactly: config accepted, no missing/unexpected/mismatched
weights, every parameter equal to the safetensors contents (tied ones
included), and logits that are not degenerate.

Produce the directories with the synth unit test, then run this:
  POLAR_SYNTH_EXPORT_DIR=/tmp/polar-synth build/bin/synth_test --gtest_filter='*Export*'
  python3 tests/reference/check_synth_hf_load.py /tmp/polar-synth/*
Needs torch and transformers.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM


def check(directory):
    config = json.load(open(os.path.join(directory, "config.json")))
    hf_config = AutoConfig.from_pretrained(directory)
    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True, dtype=torch.float32)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), (directory, key, info[key])
    stored = load_file(os.path.join(directory, "model.safetensors"))
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, tensor in stored.items():
        assert name in params, (directory, name)
        assert torch.equal(params[name].detach(), tensor.float()), (directory, name)
    if config.get("tie_word_embeddings"):
        embed = model.get_input_embeddings().weight
        assert model.get_output_embeddings().weight.data_ptr() == embed.data_ptr(), directory
    # Architecture facts transformers derived from the config.
    attn = model.model.layers[0].self_attn if hasattr(model.model, "layers") else model.model.decoder.layers[0].self_attn
    assert attn.head_dim == config.get("head_dim", config["hidden_size"] // config["num_attention_heads"]), directory
    if config.get("rope_scaling"):
        assert hf_config.rope_parameters["rope_type"] == config["rope_scaling"]["rope_type"], directory
    with torch.no_grad():
        ids = torch.arange(1, 33).unsqueeze(0) % config["vocab_size"]
        logits = model(ids).logits[0].float().numpy()
    spread = float(np.std(logits, axis=-1).mean())
    assert np.isfinite(logits).all() and spread > 0.3, (directory, spread)
    print(f"ok {os.path.basename(directory)}: {len(stored)} tensors, logit std {spread:.2f}")


if __name__ == "__main__":
    for d in sys.argv[1:]:
        check(d)
