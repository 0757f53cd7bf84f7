"""PyTorch scaled_dot_product_attention on the dense decode shapes of
bench/paged_decode_attention_bench.cu, for side-by-side numbers in one device call.

Each backend (flash, efficient, cudnn) is forced with torch.nn.attention.sdpa_kernel.
q is [B, Hq, 1, D], k and v are [B, Hkv, L, D], contiguous (what PyTorch users get;
no paging). GQA shapes pass enable_gqa=True (K/V are not expanded, so each backend
reads the same bytes as the Polar kernel). Timing: CUDA events around each call,
median after warm-up, inputs rotated over copies totalling >= 1 GiB (and >= 20x L2)
so that L2 holds nothing useful between calls.

Run on the GPU machine:  python3 bench/sdpa_decode_baseline.py [--dtype fp16|bf16]
Prints one markdown table row per shape.
"""
import argparse
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from torch_timing import median_ms  # beside this script: python3 puts bench/ on the path

BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION)]
MODELS = [("OPT-66B 72x128", 72, 72, 128), ("LLaMA-3-8B 32q/8kv x128", 32, 8, 128)]


def shapes():
    """(model, batch, context): the kernel benchmark's grid plus the paper's OPT-66B point."""
    out = [(MODELS[0], 64, 1920)]
    for model in MODELS:
        for batch in [16, 64, 128]:
            for context in [2048, 8192, 16384]:
                out.append((model, batch, context))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, torch {torch.__version__}, dtype {args.dtype}, "
          f"{args.warmup} warm-up + {args.iters} timed calls (median)\n")
    print("| heads | batch | context | KV GB | flash us | efficient us | cudnn us | fastest | "
          "fastest GB/s |\n|---|---|---|---|---|---|---|---|---|")
    rotate_bytes = max(1 << 30, 20 * props.L2_cache_size)
    for (name, hq, hkv, d), batch, context in shapes():
        kv_bytes = 2 * batch * hkv * context * d * 2
        free, _ = torch.cuda.mem_get_info()
        sets = min(math.ceil(rotate_bytes / kv_bytes), int((free - 3e9) // kv_bytes))
        if sets < 1:
            print(f"| {name} | {batch} | {context} | {kv_bytes / 1e9:.2f} | - | - | - | "
                  f"skipped: does not fit | - |", flush=True)
            continue
        inputs = []
        for _ in range(sets):
            q = torch.rand(batch, hq, 1, d, dtype=dtype, device="cuda") * 2 - 1
            k = torch.rand(batch, hkv, context, d, dtype=dtype, device="cuda") * 2 - 1
            v = torch.rand(batch, hkv, context, d, dtype=dtype, device="cuda") * 2 - 1
            inputs.append((q, k, v))
        gqa = hq != hkv
        results = {}
        for backend_name, backend in BACKENDS:
            try:
                with sdpa_kernel([backend]):
                    ms = median_ms(lambda i: F.scaled_dot_product_attention(*inputs[i % len(inputs)],
                                                                            enable_gqa=gqa),
                                   args.warmup, args.iters)
                results[backend_name] = ms * 1e3
            except RuntimeError as e:  # backend does not support the shape
                results[backend_name] = None
                print(f"<!-- {backend_name} {name} B{batch} L{context}: {str(e).splitlines()[0][:120]} -->")
        cells = [f"{results[b]:.1f}" if results[b] is not None else "n/a" for b, _ in BACKENDS]
        ran = {b: us for b, us in results.items() if us is not None}
        fastest = min(ran, key=ran.get) if ran else "-"
        fastest_gbps = kv_bytes / (ran[fastest] * 1e-6) / 1e9 if ran else 0.0
        print(f"| {name} | {batch} | {context} | {kv_bytes / 1e9:.2f} | {' | '.join(cells)} | "
              f"{fastest} | {fastest_gbps:.0f} |", flush=True)
        del inputs
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
