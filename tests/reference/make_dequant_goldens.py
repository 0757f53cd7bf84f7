#!/usr/bin/env python3
"""Writes the golden files the C++ dequantization and GGUF tests compare against.

The oracle is python gguf (gguf.quants, gguf.GGUFReader), an implementation
independent of ours that mirrors GGML's reference dequantize_row_* and GGUF
reader. Two kinds of output:

tests/data/dequant/<type>.bin: random blocks of one GGML type and their fp32
  dequantization. Every byte is random except the fp16 scale fields, which get
  sane random values (magnitude 1e-3..1, either sign), so all quant bit
  patterns and sub-scales are exercised without inf/NaN results; block 1 of
  each quantized type uses a subnormal fp16 scale to cover that path. Layout
  (little-endian):
      char[8] "POLARDQ1" | u32 ggml_type | u32 0 | u64 n_elements | u64 n_bytes
      | u8 data[n_bytes] | f32 expected[n_elements]

tests/data/dequant/fp32_to_half.bin: fp32 inputs (random bit patterns, values
  near fp16 rounding ties, the subnormal and overflow edges) with numpy's
  fp32->fp16 result and GGML's fp32->bf16 result (via gguf.quants.BF16):
      char[8] "POLARHF1" | u64 n | f32 in[n] | u16 fp16[n] | u16 bf16[n]
  NaN inputs are left out of this file: numpy's NaN payload handling depends on
  its SIMD path; the C++ test checks NaN separately.

tests/data/gguf/default_model.txt (only when the default model is present):
  facts about the real default model as python gguf reads them (header,
  metadata, the whole tensor table), the first 64 values of a few dequantized
  rows as fp32 bit patterns, and the sequential float64 sum of whole
  dequantized tensors (bit patterns), one record per line.

Run from anywhere: python3 tests/reference/make_dequant_goldens.py
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType
from gguf import quants

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"

# type -> (block elements, block bytes, byte offsets of its fp16 scale fields)
LAYOUTS = {
    T.Q4_0: (32, 18, [0]),
    T.Q4_1: (32, 20, [0, 2]),
    T.Q5_0: (32, 22, [0]),
    T.Q5_1: (32, 24, [0, 2]),
    T.Q8_0: (32, 34, [0]),
    T.Q2_K: (256, 84, [80, 82]),
    T.Q3_K: (256, 110, [108]),
    T.Q4_K: (256, 144, [0, 2]),
    T.Q5_K: (256, 176, [0, 2]),
    T.Q6_K: (256, 210, [208]),
}


def sane_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    magnitude = 10.0 ** rng.uniform(-3.0, 0.0, n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (magnitude * sign).astype(np.float16)


def write_dequant(path: Path, qtype: int, data: np.ndarray, expected: np.ndarray) -> None:
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    expected = np.ascontiguousarray(expected, dtype=np.float32).reshape(-1)
    with open(path, "wb") as f:
        f.write(b"POLARDQ1")
        f.write(struct.pack("<IIQQ", int(qtype), 0, expected.size, data.size))
        f.write(data.tobytes())
        f.write(expected.astype("<f4").tobytes())


def make_quantized(rng: np.random.Generator, qtype: T, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    _, block_bytes, scale_offsets = LAYOUTS[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for offset in scale_offsets:
        scales = sane_f16(rng, n_blocks)
        # Block 1: a subnormal fp16 scale (bits 0x0001..0x03ff, random sign).
        scales[1] = np.array([rng.integers(1, 0x400) | (rng.integers(0, 2) << 15)], dtype=np.uint16).view(np.float16)[0]
        blocks[:, offset:offset + 2] = scales.reshape(n_blocks, 1).view(np.uint8)
    expected = quants.dequantize(blocks.reshape(-1), qtype)
    return blocks, expected


def make_plain(rng: np.random.Generator, qtype: T, n: int) -> tuple[np.ndarray, np.ndarray]:
    if qtype == T.F32:
        values = rng.standard_normal(n).astype(np.float32) * np.float32(10.0) ** rng.integers(-20, 20, n).astype(np.float32)
        return values.view(np.uint8), values
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    # Make sure the special encodings appear: zeros, infinities, quiet and
    # signalling NaNs, the largest subnormals and normals.
    if qtype == T.F16:
        bits[:10] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x03FF, 0x8001, 0x7BFF, 0x0400]
        expected = bits.view(np.float16).astype(np.float32)
    else:
        bits[:10] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x007F, 0x8001, 0x7F7F, 0x0080]
        expected = quants.dequantize(bits.view(np.uint8), qtype)
    return bits.view(np.uint8), expected


def make_conversions(rng: np.random.Generator, path: Path) -> None:
    parts = []
    # Random bit patterns over the whole fp32 range.
    parts.append(rng.integers(0, 1 << 32, size=512, dtype=np.uint64).astype(np.uint32).view(np.float32))
    # Exact ties and near-ties between neighbouring fp16 values, normal and subnormal.
    h = rng.integers(0, 0x7BFF, size=256, dtype=np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).astype(np.uint16).view(np.float16).astype(np.float64)
    mid = (lo + hi) / 2
    for delta in (0.0, 1e-7, -1e-7):
        parts.append((mid * (1 + delta)).astype(np.float32))
        parts.append(-(mid * (1 + delta)).astype(np.float32))
    # Edges: below the smallest subnormal, around 65504/65520, infinities.
    parts.append(np.array([0.0, -0.0, 2.0**-25, 2.0**-25 * 1.0000001, 2.0**-26, 2.0**-24, 2.0**-14,
                           2.0**-14 * 0.99999, 65504.0, 65519.99, 65520.0, 65536.0, 1e30, np.inf, -np.inf,
                           3.4028235e38], dtype=np.float32))
    values = np.concatenate(parts).astype(np.float32)
    values = values[~np.isnan(values)]
    with np.errstate(over="ignore"):  # overflow to inf is part of the test
        fp16 = values.astype(np.float16).view(np.uint16)
    bf16 = quants.quantize(values, T.BF16).view(np.uint16)
    with open(path, "wb") as f:
        f.write(b"POLARHF1")
        f.write(struct.pack("<Q", values.size))
        f.write(values.astype("<f4").tobytes())
        f.write(fp16.astype("<u2").tobytes())
        f.write(bf16.astype("<u2").tobytes())


def f32_hex(values: np.ndarray) -> str:
    return " ".join(f"{b:08x}" for b in np.asarray(values, dtype=np.float32).view(np.uint32).tolist())


def value_kind(field) -> str:
    scalar_kinds = {
        GGUFValueType.UINT8: "uint", GGUFValueType.UINT16: "uint", GGUFValueType.UINT32: "uint",
        GGUFValueType.UINT64: "uint", GGUFValueType.INT8: "int", GGUFValueType.INT16: "int",
        GGUFValueType.INT32: "int", GGUFValueType.INT64: "int", GGUFValueType.FLOAT32: "float",
        GGUFValueType.FLOAT64: "float", GGUFValueType.BOOL: "bool", GGUFValueType.STRING: "string",
    }
    return scalar_kinds[field]


def render(kind: str, value) -> str:
    if kind == "string":
        return value.encode("utf-8").hex() or "-"
    if kind == "bool":
        return "1" if value else "0"
    if kind == "float":
        return float(value).hex()
    return str(int(value))


def make_model_goldens(model: Path, out: Path) -> None:
    reader = GGUFReader(str(model))
    lines = [
        "# Generated by tests/reference/make_dequant_goldens.py from " + model.name,
        f"version {reader.fields['GGUF.version'].contents()}",
        f"alignment {reader.alignment}",
    ]
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            kind = value_kind(field.types[-1])
            contents = field.contents()
            first = render(kind, contents[0]) if contents else "-"
            last = render(kind, contents[-1]) if contents else "-"
            lines.append(f"kv {name} array-{kind} {len(contents)} {first} {last}")
        else:
            kind = value_kind(field.types[0])
            lines.append(f"kv {name} {kind} {render(kind, field.contents())}")
    for t in reader.tensors:
        ne = " ".join(str(int(x)) for x in t.shape)
        lines.append(f"tensor {t.name} {int(t.tensor_type)} {len(t.shape)} {ne} "
                     f"{t.data_offset - reader.data_offset} {t.n_bytes}")
    by_name = {t.name: t for t in reader.tensors}

    def dequantized(name: str) -> np.ndarray:
        t = by_name[name]
        values = quants.dequantize(t.data, t.tensor_type)
        return np.asarray(values, dtype=np.float32).reshape(-1, int(t.shape[0]))

    for name, row in (("token_embd.weight", 100), ("blk.0.attn_q.weight", 7), ("blk.0.attn_norm.weight", 0)):
        values = dequantized(name)[row, :64]
        lines.append(f"row {name} {row} {values.size} {f32_hex(values)}")
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight"):
        values = dequantized(name).reshape(-1).astype(np.float64)
        # A sequential (not pairwise) sum, so the C++ test can reproduce it exactly.
        total = float(np.add.accumulate(values)[-1])
        lines.append(f"sum {name} {values.size} {total.hex()}")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args()

    rng = np.random.default_rng(20240611)
    out = REPO / "tests/data/dequant"
    out.mkdir(parents=True, exist_ok=True)
    for qtype in (T.F32, T.F16, T.BF16):
        data, expected = make_plain(rng, qtype, 512)
        write_dequant(out / f"{qtype.name.lower()}.bin", qtype, data, expected)
    for qtype, (block_elements, _, _) in LAYOUTS.items():
        n_blocks = 16 if block_elements == 32 else 4
        data, expected = make_quantized(rng, qtype, n_blocks)
        write_dequant(out / f"{qtype.name.lower()}.bin", qtype, data, expected)
    make_conversions(rng, out / "fp32_to_half.bin")
    print(f"wrote {out}")

    if args.model.exists():
        gguf_out = REPO / "tests/data/gguf"
        gguf_out.mkdir(parents=True, exist_ok=True)
        make_model_goldens(args.model, gguf_out / "default_model.txt")
        print(f"wrote {gguf_out / 'default_model.txt'}")
    else:
        print(f"{args.model} is absent: default model goldens not written")


if __name__ == "__main__":
    main()
