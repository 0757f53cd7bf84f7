"""PyTorch on the MLP shapes of bench/gather_mlp_bench.cu, for side-by-side numbers in one device call.

OPT-6.7B's MLP (hidden 4096, ffn 16384), fp16, fc1 + bias + ReLU + fc2 + bias:
  - dense: F.linear(relu(F.linear(x, w1, b1)), w2, b2) with w2 = w2t.T as nn.Linear stores it
    (what a PyTorch user runs);
  - gather-then-GEMM at density d: index_select of the k selected rows of w1 and w2t (k a
    multiple of 128, as bench/gather_mlp_bench.cu), then the same two GEMMs.
Timing: CUDA events around each call, median after warm-up, inputs rotated over weight copies
totalling >= 1 GiB (and >= 20x L2) and 8 random selections, so L2 holds nothing useful between
calls.

Run on the GPU machine:  python3 bench/mlp_dense_baseline.py [--dtype fp16|bf16]
Prints one markdown table row per batch.
"""
import argparse
import math

import torch
import torch.nn.functional as F

from torch_timing import median_ms  # beside this script: python3 puts bench/ on the path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=16384)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    d, D = args.hidden, args.ffn
    props = torch.cuda.get_device_properties(0)
    set_bytes = 2 * D * d * 2
    sets = math.ceil(max(1 << 30, 20 * props.L2_cache_size) / set_bytes)
    scale = 1.0 / math.sqrt(d)
    weights = []
    for _ in range(sets):
        w1 = (torch.rand(D, d, dtype=dtype, device="cuda") * 2 - 1) * scale
        w2t = (torch.rand(D, d, dtype=dtype, device="cuda") * 2 - 1) * scale
        weights.append((w1, torch.rand(D, dtype=dtype, device="cuda") - 0.5, w2t, w2t.t(),
                        torch.rand(d, dtype=dtype, device="cuda") - 0.5))
    densities = [1.0, 0.75, 0.5, 0.3, 0.2, 0.1]
    print(f"device: {props.name}, torch {torch.__version__}, dtype {args.dtype}, MLP {d} -> {D} -> {d}, "
          f"{sets} weight copies rotated, {args.warmup} warm-up + {args.iters} timed calls (median)\n")
    print("| batch | dense us | " + " | ".join(f"gather-then-GEMM d={x} us" for x in densities[1:]) + " |")
    print("|" + "---|" * (len(densities) + 1))
    for batch in (1, 16, 64):
        xs = [torch.rand(batch, d, dtype=dtype, device="cuda") * 2 - 1 for _ in range(8)]

        def dense(i):
            w1, b1, _, w2, b2 = weights[i % sets]
            return F.linear(F.relu(F.linear(xs[i % 8], w1, b1)), w2, b2)

        cells = [f"{median_ms(dense, args.warmup, args.iters) * 1e3:.1f}"]
        for density in densities[1:]:
            k = max(128, round(density * D / 128) * 128)
            selections = [torch.randperm(D, device="cuda")[:k].sort().values for _ in range(8)]

            def gathered(i, k=k, selections=selections):
                w1, b1, w2t, _, b2 = weights[i % sets]
                idx = selections[(i // sets) % 8]
                h = F.relu(F.linear(xs[i % 8], w1.index_select(0, idx), b1.index_select(0, idx)))
                return torch.addmm(b2, h, w2t.index_select(0, idx))

            cells.append(f"{median_ms(gathered, args.warmup, args.iters) * 1e3:.1f}")
        print(f"| {batch} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
