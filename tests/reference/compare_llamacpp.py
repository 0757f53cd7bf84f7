#!/usr/bin/env python3
"""Ecosystem agreement: Polar's teacher-forced logits vs llama.cpp's on the
same GGUF and the same token ids (not run in CI: needs llama-cpp-python).

Why: the golden test (tests/integration/golden_logits_test.cc) proves Polar
matches Hugging Face's fp32 forward pass on a short text. This script checks
the other reference users compare against, llama.cpp, over a longer text that
no other test uses (tests/data/text/ecosystem_agreement.txt: King James
Genesis 1, the Gettysburg Address and Ecclesiastes 3:1-8, all public domain).
llama.cpp quantizes activations for its quantized matmuls, so agreement is
close but not exact; the thresholds below say how close is enough.

Method: tokenize the text with llama.cpp (the tokenizers themselves are
compared by tests/reference/compare_tokenizer_llamacpp.py), cut the ids into
windows of at most --n-ctx tokens, and for each window get llama.cpp's logits
at every position (logits_all=True, fresh context) and Polar's
(`polar logits --model M --tokens W.json --out W.f32`, raw float32 [n, vocab]).
Report top-1 agreement and mean KL(llama.cpp || Polar) over all positions,
with softmax in float64. Pass: top-1 >= 98% and mean KL <= 5e-3.
Also reported: top-1 agreement restricted to positions where the reference's
own top-2 logit gap exceeds each --gap threshold (a position whose two best
logits are within 0.1 of each other is a coin flip for any arithmetic that
is not bit-identical; a disagreement where the gap is large is a real one).
--with-transformers adds the same numbers for transformers' exact fp32
forward pass (GGUF dequantized) against llama.cpp, which is the best any
exact engine can do, and Polar's distance to transformers.
--llamacpp-model runs llama.cpp on another file holding the same weights
(the control in docs/accuracy-engine.md: the Q4_1 model dequantized to F32 by
make_f32_gguf.py, so llama.cpp multiplies in fp32 and quantizes no
activation), while Polar keeps --model. --llamacpp-kv f32 gives llama.cpp an
fp32 KV cache instead of its default f16 one.

Text files may start with a header of lines beginning with '#' (source and
license notice, see tests/data/text/README.md); it is dropped before
tokenizing. If llama-cpp-python is missing, the script pip-installs the
version pinned in tests/reference/requirements.txt (it builds llama.cpp from
source, several minutes).

Usage:
  python3 tests/reference/compare_llamacpp.py [--model GGUF] [--polar build/bin/polar]
  python3 tests/reference/compare_llamacpp.py --llamacpp-only   # just the llama.cpp half
  python3 tests/reference/compare_llamacpp.py --text tests/data/text/debian-faq-ch1.txt \
      --llamacpp-model .cache/models/SmolLM2-135M-Instruct.F32.gguf --llamacpp-kv f32
Prints one JSON line with the results; exit status 0 on pass, 1 on fail.
"""

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODEL = os.path.join(REPO, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_TEXT = os.path.join(REPO, "tests", "data", "text", "ecosystem_agreement.txt")
DEFAULT_POLAR = os.path.join(REPO, "build", "bin", "polar")
REQUIREMENTS = os.path.join(REPO, "tests", "reference", "requirements.txt")
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1


def import_llama_cpp():
    """llama_cpp, pip-installing the pinned llama-cpp-python if it is missing."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        pass
    pin = "llama-cpp-python"
    with open(REQUIREMENTS) as f:
        for line in f:
            if re.match(r"^llama-cpp-python==", line.strip()):
                pin = line.strip()
    print(f"llama_cpp not importable; pip install {pin} (builds llama.cpp, minutes)",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", pin], check=True,
                   stdout=sys.stderr)
    importlib.invalidate_caches()
    return importlib.import_module("llama_cpp")


def read_text(path):
    """The text with its leading '#' header lines (source, license) removed."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return "".join(lines[start:])


def top2_gap(logits):
    """Per row: largest logit minus the second largest."""
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def log_softmax64(logits):
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def windows(ids, size):
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def llamacpp_logits(llm, window):
    """Teacher-forced logits [len(window), vocab] from a fresh context."""
    llm.reset()
    llm.eval(window)
    return np.array(llm.scores[:len(window)], dtype=np.float32)


def polar_logits(polar, model, window, workdir, threads):
    tokens_path = os.path.join(workdir, "tokens.json")
    out_path = os.path.join(workdir, "logits.f32")
    with open(tokens_path, "w") as f:
        json.dump([int(t) for t in window], f)
    cmd = [polar, "logits", "--model", model, "--tokens", tokens_path, "--out", out_path]
    if threads:
        cmd += ["--threads", str(threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"polar logits failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}")
    logits = np.fromfile(out_path, dtype="<f4")
    if logits.size % len(window) != 0:
        sys.exit(f"polar logits wrote {logits.size} floats, not a multiple of {len(window)} rows")
    return logits.reshape(len(window), -1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("POLAR_DEFAULT_MODEL", DEFAULT_MODEL),
                        help="GGUF that Polar runs (and llama.cpp, unless --llamacpp-model)")
    parser.add_argument("--llamacpp-model", default=None,
                        help="GGUF that llama.cpp runs instead of --model (same weights in "
                             "another storage type, e.g. make_f32_gguf.py's F32 copy)")
    parser.add_argument("--llamacpp-kv", choices=["default", "f16", "f32"], default="default",
                        help="llama.cpp KV-cache type (default: llama.cpp's own, f16)")
    parser.add_argument("--gap", default="0.1,0.5,1.0",
                        help="comma-separated top-2 logit gap thresholds for the restricted "
                             "top-1 agreement")
    parser.add_argument("--polar", default=os.environ.get("POLAR_BIN", DEFAULT_POLAR))
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="0: llama.cpp's default")
    parser.add_argument("--min-positions", type=int, default=1000)
    parser.add_argument("--min-top1", type=float, default=0.98)
    parser.add_argument("--max-kl", type=float, default=5e-3)
    parser.add_argument("--polar-threads", type=int, default=0,
                        help="passed to polar logits --threads when > 0")
    parser.add_argument("--llamacpp-only", action="store_true",
                        help="run only llama.cpp (checks this script's llama.cpp half)")
    parser.add_argument("--with-transformers", action="store_true",
                        help="also score the ids with transformers (GGUF dequantized to fp32): "
                             "reports how close an exact fp32 forward pass gets to llama.cpp "
                             "(the ceiling for any exact engine) and Polar's distance to it")
    args = parser.parse_args()

    llama_cpp = import_llama_cpp()  # imported late so --help works without it
    Llama = llama_cpp.Llama
    gaps = [float(g) for g in args.gap.split(",") if g.strip()]

    llamacpp_model = args.llamacpp_model or args.model
    for path in (args.model, llamacpp_model):
        if not os.path.exists(path):
            sys.exit(f"model not found: {path}")
    text = read_text(args.text)
    kwargs = dict(model_path=llamacpp_model, logits_all=True, n_ctx=args.n_ctx,
                  n_batch=args.n_batch, n_ubatch=args.n_batch, verbose=False)
    if args.threads:
        kwargs.update(n_threads=args.threads, n_threads_batch=args.threads)
    if args.llamacpp_kv != "default":
        kv = GGML_TYPE_F32 if args.llamacpp_kv == "f32" else GGML_TYPE_F16
        kwargs.update(type_k=kv, type_v=kv)
    llm = Llama(**kwargs)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if len(ids) < args.min_positions:
        sys.exit(f"{args.text}: {len(ids)} tokens, need >= {args.min_positions}")

    hf_model = None
    if args.with_transformers:
        import torch
        from transformers import AutoModelForCausalLM
        hf_model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(args.model)), gguf_file=os.path.basename(args.model),
            dtype=torch.float32, attn_implementation="eager")
        hf_model.eval()
    # name -> {"agree", "kl_sum", "kl_max", "gap": {threshold: [positions, agreements]}}
    # over all positions; p (the first logits) is the reference of each pair.
    stats = {}

    def accumulate(name, p_logits, q_logits):
        log_p = log_softmax64(p_logits)
        log_q = log_softmax64(q_logits)
        kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
        agree = p_logits.argmax(axis=1) == q_logits.argmax(axis=1)
        gap = top2_gap(p_logits)
        s = stats.setdefault(name, {"agree": 0, "kl_sum": 0.0, "kl_max": 0.0,
                                    "gap": {g: [0, 0] for g in gaps}})
        s["agree"] += int(agree.sum())
        s["kl_sum"] += float(kl.sum())
        s["kl_max"] = max(s["kl_max"], float(kl.max()))
        for g in gaps:
            above = gap > g
            s["gap"][g][0] += int(above.sum())
            s["gap"][g][1] += int(agree[above].sum())

    def summary(s):
        return {
            "top1_agreement": round(s["agree"] / positions, 6),
            "top1_disagreements": positions - s["agree"],
            "mean_kl": s["kl_sum"] / positions,
            "max_kl": s["kl_max"],
            "top1_where_ref_gap_above": {
                str(g): {"positions": n, "top1_agreement": round(a / n, 6) if n else None,
                         "disagreements": n - a}
                for g, (n, a) in s["gap"].items()},
        }

    positions = 0
    start = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        for window in windows(ids, args.n_ctx):
            ref = llamacpp_logits(llm, window)
            if not np.isfinite(ref).all():
                sys.exit("llama.cpp returned non-finite logits")
            if args.llamacpp_only:
                # Self-consistency of the llama.cpp half: a second fresh
                # evaluation must reproduce the first.
                again = llamacpp_logits(llm, window)
                got = again
            else:
                got = polar_logits(args.polar, args.model, window, workdir, args.polar_threads)
                if got.shape != ref.shape:
                    sys.exit(f"shape mismatch: polar {got.shape} vs llama.cpp {ref.shape}")
            accumulate("main", ref, got)
            if hf_model is not None:
                import torch
                with torch.no_grad():
                    hf = hf_model(input_ids=torch.tensor([window])).logits[0].numpy()
                accumulate("transformers_vs_llamacpp", ref, hf)
                if not args.llamacpp_only:
                    accumulate("polar_vs_transformers", hf, got)
            positions += len(window)

    main_summary = summary(stats["main"])
    top1 = stats["main"]["agree"] / positions
    mean_kl = stats["main"]["kl_sum"] / positions
    passed = top1 >= args.min_top1 and mean_kl <= args.max_kl
    result = {
        "comparison": "llama.cpp-self" if args.llamacpp_only else "polar-vs-llama.cpp",
        "model": os.path.basename(args.model),
        "llamacpp_model": os.path.basename(llamacpp_model),
        "llamacpp_kv": args.llamacpp_kv,
        "text": os.path.relpath(args.text, REPO),
        "positions": positions,
        "vocab": int(ref.shape[1]),
        **main_summary,
        "thresholds": {"min_top1": args.min_top1, "max_mean_kl": args.max_kl},
        "pass": passed,
        **{name: summary(v) for name, v in stats.items() if name != "main"},
        "llama_cpp_python": llama_cpp.__version__,
        "threads": {"llama.cpp": args.threads or "default",
                    "polar": args.polar_threads or "default"},
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
