"""Discretisation bias of the samplers against steps: phi(t) on the projected two-Gaussian
dynamics, and the final variance on Gaussian targets, with the exact scores.

The class of the two-Gaussian mixture depends only on the projection of x on m, which follows
the one-dimensional mixture 1/2 N(+|m|, s^2) + 1/2 N(-|m|, s^2) exactly; |m| = 16, s = 1 is the
default mixture (d = 256, mu_tilde = 1). Cloning with 100 000 pairs (phi s.e. about 0.0014)
at t/t_S = 0.6 ... 1.4; the bias is the largest |phi - closed form| over those times. The
variance errors are those of tests/test_samplers.py (targets of variance 1, 1e-2, 1e-4;
exact, relative to what is left of the target's own variance at the grid's end).

python benchmarks/bench_sampler_bias.py [--pairs 100000] [--steps 25 50 100 200 400]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from diffusion_regimes.cloning import clone_shared_trunk
from diffusion_regimes.sampling import Sampler, gaussian_variance_error
from diffusion_regimes.scores import GaussianMixtureScore
from diffusion_regimes.theory import gm_phi

SAMPLERS = [("heun", "log_snr"), ("ddpm", "log_snr"), ("ddpm", "ddpm"), ("euler_maruyama", "log_snr"),
            ("heun", "ddpm")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=100_000)
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    args = p.parse_args()
    m = 16.0
    score = GaussianMixtureScore(torch.tensor([m]), 1.0)
    t_S = 0.5 * math.log(1 + m * m)
    rel = np.array([0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4])
    print(f"projected mixture |m| = {m:g}, t_S = {t_S:.4f}; {args.pairs} pairs (phi s.e. about "
          f"{0.5 / math.sqrt(args.pairs):.4f}); threads {torch.get_num_threads()}")
    print(f"{'method':<15} {'grid':<8} {'steps':>5} {'evals':>6} {'max|dphi|':>9} {'mean dphi':>9} "
          f"{'var err 1':>9} {'1e-2':>8} {'1e-4':>8} {'s':>6}")
    for method, grid in SAMPLERS:
        for steps in args.steps:
            if grid == "ddpm" and steps > 999:
                continue
            cfg = {"method": method, "grid": grid, "steps": steps, "T": 6.0, "t_end": 1e-3}
            samp = Sampler.from_config(cfg)
            t0 = time.perf_counter()
            res = clone_shared_trunk(score, samp, rel * t_S, args.pairs, 1, score.classify, 0, pair_batch=args.pairs)
            dphi = res.agree.mean(1) - gm_phi(res.times, m, 1.0)
            errs = [gaussian_variance_error(Sampler.from_config({**cfg, "T": 5.0}), v) for v in (1.0, 1e-2, 1e-4)]
            evals = samp.steps * (2 if method == "heun" else 1)
            print(f"{method:<15} {grid:<8} {steps:>5} {evals:>6} {np.abs(dphi).max():>9.4f} {dphi.mean():>+9.4f} "
                  f"{errs[0]:>+9.4f} {errs[1]:>+8.4f} {errs[2]:>+8.4f} {time.perf_counter() - t0:>6.1f}")


if __name__ == "__main__":
    main()
