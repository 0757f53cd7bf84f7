#!/usr/bin/env python3
"""Writes the safetensors seed corpus (tests/fuzz/corpus/safetensors/) with the
reference implementation (PyPI safetensors + numpy).

The python_{f32,f16,bf16}.safetensors files double as interoperability inputs
for tests/unit/model/safetensors_file_test.cc, which recomputes their values
from the same formula: value[i] = (((7*i + k) % 23) - 11) / 8, k = 0 for
"weight" [3, 4] and k = 5 for "bias" [4]; every value is exact in F32, F16 and
BF16. The remaining seeds exercise metadata, an unreadable dtype (I8) and a
zero-size tensor. Run from anywhere:  python3 tests/reference/make_safetensors_seeds.py
"""
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "safetensors")


def values(n, k):
    return np.array([(((7 * i + k) % 23) - 11) / 8.0 for i in range(n)], dtype=np.float32)


def to_bf16_bits(a):
    # The values are exact in bf16, so truncating the low 16 bits is exact.
    bits = a.astype(np.float32).view(np.uint32)
    assert np.all((bits & 0xFFFF) == 0)
    return (bits >> 16).astype(np.uint16)


def write_bf16(path, tensors):
    # numpy has no bfloat16: write the header by hand in the reference layout.
    import json
    import struct
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        raw = to_bf16_bits(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors = {"weight": values(12, 0).reshape(3, 4), "bias": values(4, 5)}
    save_file(tensors, os.path.join(OUT, "python_f32.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, os.path.join(OUT, "python_f16.safetensors"))
    write_bf16(os.path.join(OUT, "python_bf16.safetensors"), tensors)
    save_file({"w": values(6, 1).reshape(2, 3), "empty": np.zeros((0, 3), np.float32)},
              os.path.join(OUT, "metadata.safetensors"), metadata={"format": "pt", "note": "seed"})
    save_file({"ids": np.arange(-3, 5, dtype=np.int8), "x": values(2, 2)}, os.path.join(OUT, "int8.safetensors"))
    # Cross-check with the reference reader.
    from safetensors.numpy import load_file
    for name in ("python_f32.safetensors", "python_f16.safetensors"):
        loaded = load_file(os.path.join(OUT, name))
        for k, v in tensors.items():
            assert np.array_equal(loaded[k].astype(np.float32), v), (name, k)


if __name__ == "__main__":
    main()
