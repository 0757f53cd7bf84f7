#!/usr/bin/env python3
"""llama.cpp decode throughput at batch 1, the baseline for `polar bench`
(docs/performance-cpu.md puts the two side by side). Not run in CI.

Method: load the GGUF with llama-cpp-python, evaluate a prompt of
--prompt-tokens ids (timed separately as prefill), then generate
--gen-tokens tokens greedily, one llama_decode per token, feeding back the
argmax whatever it is (end-of-text included, so every run decodes the same
number of tokens). Only the decode loop is timed for decode_tokens_per_s;
the argmax over the vocabulary is inside the loop, as a sampler would be.
The prompt is the first --prompt-tokens ids of a fixed English sentence
repeated, so runs are comparable across machines. Each of --repeats runs
starts from a cleared context; the median run is reported.

Usage: python3 tests/reference/bench_llamacpp.py --threads T [--prompt-tokens 128]
         [--gen-tokens 128] [--repeats 3] [--model GGUF]
Prints one JSON line.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODEL = os.path.join(REPO, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT_TEXT = ("The quick brown fox jumps over the lazy dog while the farmer counts his sheep "
               "and the river runs quietly toward the distant sea. ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("POLAR_DEFAULT_MODEL", DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=1, help="only 1 is supported")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.batch != 1:
        sys.exit("bench_llamacpp.py measures batch 1 only")
    if args.prompt_tokens < 1 or args.gen_tokens < 1 or args.repeats < 1:
        sys.exit("--prompt-tokens, --gen-tokens and --repeats must be >= 1")

    import llama_cpp
    from llama_cpp import Llama

    if not os.path.exists(args.model):
        sys.exit(f"model not found: {args.model}")
    n_ctx = args.prompt_tokens + args.gen_tokens + 8
    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_batch=max(args.prompt_tokens, 32),
                n_ubatch=max(args.prompt_tokens, 32), n_threads=args.threads,
                n_threads_batch=args.threads, logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()

    prompt = []
    while len(prompt) < args.prompt_tokens:
        prompt += llm.tokenize(PROMPT_TEXT.encode(), add_bos=not prompt, special=False)
    prompt = prompt[:args.prompt_tokens]

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    runs = []
    for _ in range(args.repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        token = int(last_logits().argmax())
        t1 = time.perf_counter()
        for _ in range(args.gen_tokens - 1):
            llm.eval([token])
            token = int(last_logits().argmax())
        t2 = time.perf_counter()
        # The first generated token comes from the prefill; the loop decodes
        # the remaining gen_tokens - 1.
        decode_steps = args.gen_tokens - 1
        runs.append({
            "prefill_s": t1 - t0,
            "decode_s": t2 - t1,
            "decode_tokens_per_s": decode_steps / (t2 - t1) if decode_steps else None,
            "prefill_tokens_per_s": args.prompt_tokens / (t1 - t0),
        })

    def median(key):
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    print(json.dumps({
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "model": os.path.basename(args.model),
        "batch": 1,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "repeats": args.repeats,
        "decode_tokens_per_s": median("decode_tokens_per_s"),
        "prefill_tokens_per_s": median("prefill_tokens_per_s"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
