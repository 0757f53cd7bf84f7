#!/usr/bin/env python3
"""Compares Polar's tokenization with llama.cpp's on a model (not run in CI).

Polar's side is the CLI (`polar tokenize --model PATH TEXT`, which prints a
JSON array of ids; --no-bos / --no-special turn off add_special /
parse_special); llama.cpp's side is llama-cpp-python with vocab_only. Texts:
the varied set of make_tokenizer_goldens.py (prose, code, numbers, scripts,
emoji, whitespace runs, special-token markup, invalid UTF-8), seeded random
strings, and optionally files (--file: whole file is one text; --lines: one
text per line). Prints PASS/FAIL per text and mode, then a summary; exits 1 on
any mismatch.

Usage:
  python3 tests/reference/compare_tokenizer_llamacpp.py --model .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      [--polar-bin build/bin/polar] [--random 150] [--file a.txt ...] [--lines b.txt ...]
"""
import argparse
import json
import os
import subprocess
import sys

import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tokenizer_goldens import fixed_texts, random_texts, safe_for_llama  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (label, add_special, parse_special)
MODES = [("special", True, True), ("plain", False, False)]


def polar_ids(polar_bin, model, data, add_special, parse_special):
    cmd = [polar_bin, "tokenize", "--model", model]
    if not add_special:
        cmd.append("--no-bos")
    if not parse_special:
        cmd.append("--no-special")
    cmd += ["--", data] if data.startswith(b"-") else [data]
    out = subprocess.run(cmd, capture_output=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode("utf-8", "replace").strip())
    return json.loads(out.stdout)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--polar-bin", default=os.path.join(ROOT, "build/bin/polar"))
    ap.add_argument("--random", type=int, default=150, help="number of seeded random texts")
    ap.add_argument("--file", action="append", default=[], help="a file whose content is one text")
    ap.add_argument("--lines", action="append", default=[], help="a file with one text per line")
    ap.add_argument("--quiet", action="store_true", help="print failures only")
    args = ap.parse_args()

    # argv cannot carry NUL bytes: the random texts here leave them out.
    texts = fixed_texts() + random_texts(seed=4321, count=args.random, allow_nul=False)
    for path in args.file:
        with open(path, "rb") as f:
            texts.append((path, f.read()))
    for path in args.lines:
        with open(path, "rb") as f:
            texts += [(f"{path}:{i + 1}", line.rstrip(b"\n")) for i, line in enumerate(f)]

    llama = llama_cpp.Llama(args.model, vocab_only=True, verbose=False)
    passed = failed = skipped = 0
    for name, data in texts:
        if b"\x00" in data or not safe_for_llama(data):
            # argv cannot carry NUL; llama.cpp aborts on code points > U+10FFFF.
            print(f"SKIP {name}")
            skipped += 1
            continue
        for label, add_special, parse_special in MODES:
            want = llama.tokenize(data, add_bos=add_special, special=parse_special)
            try:
                got = polar_ids(args.polar_bin, args.model, data, add_special, parse_special)
            except RuntimeError as e:
                print(f"FAIL {name} [{label}]: polar failed: {e}")
                failed += 1
                continue
            if got == want:
                passed += 1
                if not args.quiet:
                    print(f"PASS {name} [{label}] ({len(want)} tokens)")
            else:
                failed += 1
                i = first_difference(got, want)
                print(f"FAIL {name} [{label}]: first difference at {i}: polar {got[i:i + 8]} llama.cpp {want[i:i + 8]}"
                      f" (lengths {len(got)} / {len(want)})")
    print(f"\nsummary: {passed} passed, {failed} failed, {skipped} texts skipped "
          f"({len(texts)} texts x {len(MODES)} modes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
