"""Throughput of the empirical-score kernel as a fraction of float32 matmul throughput.

The kernel (EmpiricalScore.__call__) does two matrix products per block of
training points, (B, d) x (d, nb) and (B, nb) x (nb, d): 4 B n d flops per call.
Both figures are measured in the same run on the same machine.
"""

import argparse
import time

import torch

from diffusion_regimes.scores import EmpiricalScore


def timed(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20000, help="training points")
    p.add_argument("--d", type=int, default=1024, help="dimension")
    p.add_argument("--batch", type=int, default=512, help="states per call")
    p.add_argument("--block", type=int, default=4096, help="training points per block")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    train = torch.randn(a.n, a.d, generator=g)
    x = torch.randn(a.batch, a.d, generator=g)
    score = EmpiricalScore(train, a.block)
    flops = 4.0 * a.batch * a.n * a.d
    t_kernel = timed(lambda: score(x, 0.5), a.repeat)
    w = torch.randn(a.batch, a.n, generator=g)
    t_mm = timed(lambda: (x @ train.T, w @ train), a.repeat)  # the same two products, unblocked
    gk, gm = flops / t_kernel / 1e9, flops / t_mm / 1e9
    print(f"threads={torch.get_num_threads()} n={a.n} d={a.d} batch={a.batch} block={a.block}")
    print(f"matmul (same products): {gm:7.1f} GFLOP/s ({t_mm * 1e3:.1f} ms)")
    print(f"empirical-score kernel: {gk:7.1f} GFLOP/s ({t_kernel * 1e3:.1f} ms)")
    print(f"fraction of matmul throughput: {gk / gm:.2f} (target >= 0.50)")
    rows = min(a.batch, score.rows)
    print(f"working memory of the kernel ~ rows x (block + 2d) floats = "
          f"{rows * (min(a.block, a.n) + 2 * a.d) * 4 / 2**20:.1f} MiB (training set: {a.n * a.d * 4 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
