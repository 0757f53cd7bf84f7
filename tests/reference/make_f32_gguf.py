#!/usr/bin/env python3
"""Write a GGUF that holds another GGUF's weights dequantized to F32 (same
values exactly), for the llama.cpp control experiment in
docs/accuracy-engine.md (not run in CI).

Why: llama.cpp multiplies quantized weights by activations that it quantizes
too (Q8_1/Q8_0 blocks), so its logits on the default Q4_1 model are not the
exact fp32 forward pass of the weights that the file holds. Given the same
weights stored as F32, llama.cpp multiplies in fp32 and no activation is
quantized. Comparing that run with Polar on the original Q4_1 file
(`compare_llamacpp.py --llamacpp-model OUT`) separates llama.cpp's
quantized-activation arithmetic from everything else.

Method: read every tensor with the python `gguf` package, dequantize it with
gguf.quants.dequantize (the same reference dequantization that transformers
uses to load a GGUF), and write a new GGUF with GGUFWriter: every tensor as
F32 in the original order, every metadata key copied with its type, except
general.file_type, which becomes 0 (LLAMA_FTYPE_ALL_F32). Then the output is
read back and checked: every tensor's bytes must equal the dequantized
original's, and every metadata value must equal the original's.

Usage:
  python3 tests/reference/make_f32_gguf.py [--in GGUF] [--out GGUF]
Defaults: the default model, and .cache/models/<stem>.F32.gguf beside it.
Prints one JSON line (paths, sizes, sha256, tensor counts by source type).
"""

import argparse
import collections
import hashlib
import importlib.metadata
import json
import os
import sys

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_IN = os.path.join(REPO, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LLAMA_FTYPE_ALL_F32 = 0


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def field_value(field):
    """The field's value in the form GGUFWriter.add_key_value takes."""
    value = field.contents()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def dequantized(tensor):
    """Float32 array in numpy order (rows, cols), i.e. GGUF dims reversed."""
    import gguf
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def main():
    import gguf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--in", dest="src", default=os.environ.get("POLAR_DEFAULT_MODEL", DEFAULT_IN))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    src = os.path.abspath(args.src)
    out = args.out
    if out is None:
        stem = os.path.basename(src)
        stem = stem[:-len(".gguf")] if stem.endswith(".gguf") else stem
        stem = stem.rsplit(".", 1)[0] if "." in stem else stem  # drop ".Q4_1"
        out = os.path.join(os.path.dirname(src), stem + ".F32.gguf")
    out = os.path.abspath(out)
    if out == src:
        sys.exit("--out must differ from --in")

    reader = gguf.GGUFReader(src)
    arch = field_value(reader.fields["general.architecture"])
    writer = gguf.GGUFWriter(out, arch)  # writes general.architecture itself
    copied_keys = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # header fields; the writer produces its own
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        if sub_type == gguf.GGUFValueType.ARRAY:
            sys.exit(f"{src}: key {name}: nested arrays are not supported by this script")
        value = field_value(field)
        if name == "general.file_type":
            value = LLAMA_FTYPE_ALL_F32
        writer.add_key_value(name, value, vtype, sub_type=sub_type)
        copied_keys.append(name)

    source_types = collections.Counter()
    for tensor in reader.tensors:
        source_types[tensor.tensor_type.name] += 1
        writer.add_tensor(tensor.name, dequantized(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Read back: the new file must hold exactly the dequantized originals.
    check = gguf.GGUFReader(out)
    if [t.name for t in check.tensors] != [t.name for t in reader.tensors]:
        sys.exit(f"{out}: tensor names or order differ from {src}")
    for orig, new in zip(reader.tensors, check.tensors):
        if new.tensor_type != gguf.GGMLQuantizationType.F32:
            sys.exit(f"{out}: tensor {new.name} is {new.tensor_type.name}, not F32")
        if new.shape.tolist() != orig.shape.tolist():
            sys.exit(f"{out}: tensor {new.name} shape {new.shape.tolist()} != {orig.shape.tolist()}")
        want = dequantized(orig)
        got = np.asarray(new.data, dtype=np.float32).reshape(want.shape)
        if got.tobytes() != want.tobytes():
            sys.exit(f"{out}: tensor {new.name} is not bit-identical to the dequantized original")
    for name in copied_keys:
        want = field_value(reader.fields[name])
        if name == "general.file_type":
            want = LLAMA_FTYPE_ALL_F32
        if field_value(check.fields[name]) != want or check.fields[name].types != reader.fields[name].types:
            sys.exit(f"{out}: metadata key {name} differs from {src}")

    print(json.dumps({
        "in": src, "in_bytes": os.path.getsize(src), "in_sha256": sha256(src),
        "out": out, "out_bytes": os.path.getsize(out), "out_sha256": sha256(out),
        "tensors": len(reader.tensors), "source_tensor_types": dict(source_types),
        "metadata_keys_copied": len(copied_keys),
        "gguf_python": importlib.metadata.version("gguf"),
        "verified": "every tensor bit-identical to gguf.quants.dequantize of the original; "
                    "every metadata value equal (general.file_type set to 0, ALL_F32)",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
