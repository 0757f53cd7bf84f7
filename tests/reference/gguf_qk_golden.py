#!/usr/bin/env python3
"""Golden rows for the GGUF Q/K un-permutation (tests/unit/model/checkpoint_test.cc).

llama.cpp's converter stores q_proj/k_proj of llama models with each head's
rows interleaved: w.reshape(n_head, 2, head_dim // 2, n_in).swapaxes(1, 2).
Polar undoes that on load. This script computes the Hugging Face layout
independently, with the python gguf package (GGUFReader + gguf.quants) and a
numpy reshape of the inverse permutation, and writes a few rows of layer 0's
q_proj and k_proj (the first COLS columns) to
tests/data/model/smollm2_layer0_qk_rows.json.

With --check-transformers it also loads the GGUF with transformers
(AutoModelForCausalLM.from_pretrained(dir, gguf_file=name); needs torch) and
asserts its q_proj/k_proj equal the numpy result, tying the golden to the
reference implementation.

Usage: python3 tests/reference/gguf_qk_golden.py [GGUF] [--check-transformers]
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEFAULT_GGUF = os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "data", "model", "smollm2_layer0_qk_rows.json")
COLS = 96  # three Q4_1 blocks per row


def field(reader, key):
    return reader.fields[key].contents()


def hf_layout(reader, name, n_head):
    t = next(t for t in reader.tensors if t.name == name)
    w = dequantize(t.data, t.tensor_type)  # [rows, n_in], GGUF (interleaved) row order
    rows, n_in = w.shape
    head_dim = rows // n_head
    # Inverse of reshape(n_head, 2, hd/2, n_in).swapaxes(1, 2).
    return w.reshape(n_head, head_dim // 2, 2, n_in).swapaxes(1, 2).reshape(rows, n_in).astype(np.float32)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = args[0] if args else DEFAULT_GGUF
    reader = GGUFReader(path)
    assert field(reader, "general.architecture") == "llama"
    n_head = int(field(reader, "llama.attention.head_count"))
    n_kv = int(field(reader, "llama.attention.head_count_kv"))
    q = hf_layout(reader, "blk.0.attn_q.weight", n_head)
    k = hf_layout(reader, "blk.0.attn_k.weight", n_kv)

    if "--check-transformers" in sys.argv:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                     gguf_file=os.path.basename(path))
        attn = model.model.layers[0].self_attn
        np.testing.assert_array_equal(attn.q_proj.weight.detach().float().numpy(), q)
        np.testing.assert_array_equal(attn.k_proj.weight.detach().float().numpy(), k)
        print("transformers agrees on q_proj and k_proj of layer 0")

    head_dim = q.shape[0] // n_head
    # Rows around head and half-head boundaries, where a wrong permutation shows.
    q_rows = [0, 1, head_dim // 2 - 1, head_dim // 2, head_dim // 2 + 1, head_dim, q.shape[0] - 1]
    k_rows = [0, 1, head_dim // 2, head_dim + 3, k.shape[0] - 1]
    golden = {
        "source": os.path.basename(path),
        "script": "tests/reference/gguf_qk_golden.py",
        "cols": COLS,
        "model.layers.0.self_attn.q_proj.weight": {
            "rows": q_rows, "values": [[float(v) for v in q[r, :COLS]] for r in q_rows]},
        "model.layers.0.self_attn.k_proj.weight": {
            "rows": k_rows, "values": [[float(v) for v in k[r, :COLS]] for r in k_rows]},
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(golden, f)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
