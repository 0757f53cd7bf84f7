#!/usr/bin/env python3
"""Writes the seed corpus of the GGUF fuzzer (tests/fuzz/gguf_fuzzer.cc).

Small valid GGUF files made with python gguf's GGUFWriter, an independent
writer, so the fuzzer starts from what real tools produce: every metadata
value kind, every tensor type Polar reads, a custom alignment, a v2 header and
a metadata-only file. The seeds stay well under 50 KB in total.

    python3 tests/fuzz/make_gguf_seeds.py        # rewrites tests/fuzz/corpus/gguf/
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, GGUFWriter, quants

OUT = Path(__file__).resolve().parent / "corpus" / "gguf"

# Types without a python quantizer get random blocks with sane fp16 scales at
# these byte offsets.
K_LAYOUTS = {T.Q2_K: (84, [80, 82]), T.Q3_K: (110, [108]), T.Q4_K: (144, [0, 2]),
             T.Q5_K: (176, [0, 2]), T.Q6_K: (210, [208])}


def write(name: str, build, version: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        writer = GGUFWriter(path, "llama")
        build(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        data = bytearray(Path(path).read_bytes())
    if version != 3:
        data[4:8] = version.to_bytes(4, "little")
    (OUT / name).write_bytes(bytes(data))


def every_kind(writer: GGUFWriter) -> None:
    rng = np.random.default_rng(7)
    writer.add_uint8("v.u8", 200)
    writer.add_int8("v.i8", -100)
    writer.add_uint16("v.u16", 60000)
    writer.add_int16("v.i16", -30000)
    writer.add_uint32("v.u32", 4000000000)
    writer.add_int32("v.i32", -2000000000)
    writer.add_float32("v.f32", 1.5)
    writer.add_uint64("v.u64", 2**63 + 5)
    writer.add_int64("v.i64", -(2**62))
    writer.add_float64("v.f64", -2.25e300)
    writer.add_bool("v.bool", True)
    writer.add_string("v.string", "héllo wörld")
    writer.add_key_value("a.u8", [1, 2, 255], GGUFValueType.ARRAY, GGUFValueType.UINT8)
    writer.add_key_value("a.i32", [-1, 0, 7], GGUFValueType.ARRAY, GGUFValueType.INT32)
    writer.add_key_value("a.f32", [0.5, -1.0], GGUFValueType.ARRAY, GGUFValueType.FLOAT32)
    writer.add_key_value("a.bool", [True, False], GGUFValueType.ARRAY, GGUFValueType.BOOL)
    writer.add_array("a.string", ["a", "", "ccc"])
    values = rng.standard_normal((2, 32)).astype(np.float32)
    writer.add_tensor("f32", values)
    writer.add_tensor("f16", values.astype(np.float16))
    for qtype in (T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        writer.add_tensor(qtype.name.lower(), quants.quantize(values, qtype), raw_dtype=qtype)
    for qtype, (block_bytes, scale_offsets) in K_LAYOUTS.items():
        block = rng.integers(0, 256, size=(1, block_bytes), dtype=np.uint8)
        for offset in scale_offsets:
            block[:, offset:offset + 2] = np.array([0.01], dtype=np.float16).view(np.uint8)
        writer.add_tensor(qtype.name.lower(), block, raw_dtype=qtype)


def tiny_llama(writer: GGUFWriter) -> None:
    rng = np.random.default_rng(8)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>", "a", "b", "ab", "Ġa", "c", "d"])
    writer.add_token_types([3, 3, 1, 1, 1, 1, 1, 1])
    writer.add_token_merges(["a b", "Ġ a"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_tensor("token_embd.weight", rng.standard_normal((8, 32)).astype(np.float32))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    q = rng.standard_normal((32, 32)).astype(np.float32)
    writer.add_tensor("blk.0.attn_q.weight", quants.quantize(q, T.Q4_1), raw_dtype=T.Q4_1)
    writer.add_tensor("blk.0.attn_k.weight", quants.quantize(q[:16], T.Q8_0), raw_dtype=T.Q8_0)
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))


def aligned_64(writer: GGUFWriter) -> None:
    writer.add_custom_alignment(64)
    writer.add_tensor("a", np.arange(3, dtype=np.float32))
    writer.add_tensor("b", np.arange(40, dtype=np.float16).reshape(2, 20))


def metadata_only(writer: GGUFWriter) -> None:
    writer.add_name("metadata only")
    writer.add_uint32("llama.block_count", 30)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    write("every_kind.gguf", every_kind)
    write("tiny_llama.gguf", tiny_llama)
    write("tiny_llama_v2.gguf", tiny_llama, version=2)
    write("aligned_64.gguf", aligned_64)
    write("metadata_only.gguf", metadata_only)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
