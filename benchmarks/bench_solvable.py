"""Cost of the solvable-model workloads at the paper's sizes.

1. Gaussian-mixture speciation at d = 16 384 with the exact score: shared-trunk cloning,
   branch times 1 ... 10 (OU) in steps of 0.5, T = 10, Euler-Maruyama (`--pairs`, `--steps`;
   the paper: 10 000 pairs, 1000 steps): wall time, score evaluations, peak memory.
2. One time point of the excess-entropy Monte Carlo at d = 4096, n = 20 000 (`--samples`):
   wall time, peak memory, and GFLOP/s as a fraction of this machine's float64 matmul
   throughput on the same shapes, measured in the same run (the estimator runs in float64).

Each part runs in a fresh process so that its peak resident memory is its own.
python benchmarks/bench_solvable.py [--pairs 400 --steps 200 --samples 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def speciation(pairs: int, steps: int, d: int) -> dict:
    from diffusion_regimes.cloning import clone_shared_trunk
    from diffusion_regimes.sampling import Sampler
    from diffusion_regimes.schedule import time_grid
    from diffusion_regimes.scores import GaussianMixtureScore
    from diffusion_regimes.theory import gm_phi

    score = GaussianMixtureScore(torch.ones(d), 1.0)
    sampler = Sampler(time_grid("uniform", steps, 10.0, 1e-3))
    t0 = time.perf_counter()
    res = clone_shared_trunk(score, sampler, np.arange(1.0, 10.01, 0.5), pairs, d, score.classify, 0,
                             pair_batch=200)
    wall = time.perf_counter() - t0
    err = np.abs(res.agree.mean(1) - gm_phi(res.times, math.sqrt(d), 1.0)).max()
    return {"wall_s": wall, "nfe": res.nfe, "max_abs_phi_error": float(err)}


def entropy_point(samples: int, d: int, n: int) -> dict:
    from diffusion_regimes.entropy import excess_entropy
    from diffusion_regimes.scores import EmpiricalScore

    g = torch.Generator().manual_seed(0)
    train = EmpiricalScore(torch.randn(n, d, generator=g), 4096)
    excess_entropy(train, np.array([1.0]), 64, 0, progress=False)  # warm up
    t0 = time.perf_counter()
    excess_entropy(train, np.array([1.5]), samples, 0, progress=False)
    wall = time.perf_counter() - t0
    flops = 2.0 * samples * n * d  # the logits x . a (float64 states against the training points)
    a = torch.randn(4096, d, dtype=torch.float64, generator=g)
    x = torch.randn(2048, d, dtype=torch.float64, generator=g)
    x @ a.T
    t1 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        x @ a.T
    mm = 2.0 * 2048 * 4096 * d * reps / (time.perf_counter() - t1)
    return {"wall_s": wall, "gflops": flops / wall / 1e9, "matmul_gflops": mm / 1e9,
            "fraction": flops / wall / mm}


def child(kind: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = speciation(args.pairs, args.steps, 16384) if kind == "speciation" else entropy_point(args.samples, 4096,
                                                                                                 20000)
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--child", choices=["speciation", "entropy"])
    args = p.parse_args()
    if args.child:
        return child(args.child, args)
    base = [sys.executable, __file__, "--pairs", str(args.pairs), "--steps", str(args.steps), "--samples",
            str(args.samples), "--threads", str(args.threads)]
    for kind in ("speciation", "entropy"):
        r = json.loads(subprocess.run(base + ["--child", kind], check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1])
        if kind == "speciation":
            print(f"GM speciation d=16384, {args.pairs} pairs, {args.steps} EM steps, 19 branch times: "
                  f"{r['wall_s']:.1f} s, {r['nfe']:,} score evaluations, peak memory {r['peak_rss_gib']:.2f} GiB, "
                  f"max |phi - quadrature| = {r['max_abs_phi_error']:.3f}")
        else:
            print(f"entropy f(t), one time point, d=4096, n=20000, {args.samples} samples: {r['wall_s']:.2f} s, "
                  f"{r['gflops']:.1f} GFLOP/s = {r['fraction']:.2f} of float64 matmul ({r['matmul_gflops']:.1f} "
                  f"GFLOP/s), peak memory {r['peak_rss_gib']:.2f} GiB")


if __name__ == "__main__":
    main()
