"""Median time of a CUDA call between two torch.cuda events, shared by the PyTorch baselines
beside it (mlp_dense_baseline.py, sdpa_decode_baseline.py) so that their numbers are measured
alike (and like the kernel benchmarks' single launches: host launch cost included).
"""
import torch


def median_ms(fn, warmup, iters):
    """Median milliseconds of fn(i) for i = warmup .. warmup + iters - 1, after fn(0 .. warmup - 1)."""
    times = []
    for i in range(warmup + iters):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i)
        stop.record()
        stop.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]
