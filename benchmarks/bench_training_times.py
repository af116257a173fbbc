"""Steps to tolerance of the residual MLP on the two-Gaussian mixture, for each distribution
of training times (``train.times``: ddpm, ddpm_continuous, uniform, log_snr).

The network and data of ``config/networks.yaml`` (d = 256, n = 10 000, mu_tilde = 1, sigma = 1;
3 residual blocks of width 512, batch 256, lr 1e-3, EMA 0.999), trained in one chain per choice
and measured at ``--first`` steps and every ``--every`` steps after it up to ``--steps``: phi(t)
by shared-trunk cloning (1000 pairs, heun on the log-SNR grid, 100 steps, T = 5; branch times
0.4 ... 1.7 t_S), against the closed form. The tolerance: phi at every branch time within
3 s.e. + 0.02 of the closed form and the crossing t_S within 5 % of 1/2 log Lambda = 2.7745.
A choice stops at its first checkpoint within tolerance (``--all`` measures every checkpoint).

python benchmarks/bench_training_times.py [--choices uniform log_snr ddpm_continuous ddpm]
                                         [--first 10000 --steps 20000 --every 5000 --pairs 1000]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_regimes.cloning import agreement_table, branch_times_ou, clone_shared_trunk
from diffusion_regimes.datamodels.mixtures import gaussian_mixture
from diffusion_regimes.networks import NetworkScore
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.schedule import TRAINING_TIMES, time_grid
from diffusion_regimes.scores import GaussianMixtureScore
from diffusion_regimes.seeding import generator
from diffusion_regimes.theory import gm_phi
from diffusion_regimes.training import train_network

D, N = 256, 10_000
MLP = {"width": 512, "depth": 3, "time_dim": 128, "dropout": 0.0}
TRAIN = {"batch_size": 256, "lr": 0.001, "lr_decay": 0.98, "lr_decay_epochs": 50, "ema": 0.999}
BRANCH = [0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.7]


def measure(net, pairs: int, seed: int) -> dict:
    """phi against the closed form: the worst |phi - phi_th| in units of (3 s.e. + 0.02), t_S."""
    exact = GaussianMixtureScore(torch.ones(D), 1.0)
    t_S = 0.5 * math.log(D)
    sampler = Sampler(time_grid("log_snr", 100, 5.0, 1e-3), "heun")
    res = clone_shared_trunk(NetworkScore(net, batch_size=4096), sampler, branch_times_ou(BRANCH, t_S), pairs, D,
                             exact.classify, seed, pair_batch=pairs)
    table, scalars = agreement_table(res.times, res.agree, 200, seed)
    dev = np.abs(table["phi"].to_numpy() - gm_phi(res.times, math.sqrt(D), 1.0))
    ratio = dev / (3 * table["phi_se"].to_numpy() + 0.02)
    worst = int(np.argmax(ratio))
    rel = scalars["crossing"] / t_S - 1
    return {"worst_ratio": float(ratio[worst]), "worst_t": float(res.times[worst]), "worst_dev": float(dev[worst]),
            "t_S": scalars["crossing"], "t_S_se": scalars["crossing_se"], "rel": rel,
            "ok": bool(ratio.max() <= 1 and abs(rel) <= 0.05)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--choices", nargs="+", default=["uniform", "log_snr", "ddpm_continuous", "ddpm"],
                   choices=TRAINING_TIMES)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--first", type=int, default=10_000, help="the first checkpoint measured")
    p.add_argument("--every", type=int, default=5000)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all", action="store_true", help="measure every checkpoint, past the first within tolerance")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x, _ = gaussian_mixture(D, N, 1.0, 1.0, generator(args.seed))
    print(f"MLP {MLP} on the d = {D} mixture, n = {N}; tolerance: every phi within 3 s.e. + 0.02 of the "
          f"closed form and |t_S / 2.7745 - 1| <= 5 %; {args.pairs} pairs")
    print(f"{'times':>16} {'steps':>6} {'train s':>8} {'t_S (s.e.)':>16} {'t_S err':>8} "
          f"{'worst dev/tol (at t)':>22} {'within':>6}")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.choices:
            state, trained, reached = Path(tmp) / f"{kind}.pt", 0.0, None
            for steps in range(args.first, args.steps + 1, args.every):
                t0 = time.perf_counter()
                net, _, _ = train_network(x, "mlp", MLP, (D,), {**TRAIN, "steps": steps, "times": kind}, args.seed,
                                          state, progress=False)
                trained += time.perf_counter() - t0
                m = measure(net, args.pairs, args.seed)
                print(f"{kind:>16} {steps:>6} {trained:>8.0f} {m['t_S']:>9.3f} ({m['t_S_se']:.3f}) "
                      f"{100 * m['rel']:>+7.1f}% {m['worst_ratio']:>11.2f} (t={m['worst_t']:.2f}) "
                      f"{'yes' if m['ok'] else 'no':>6}", flush=True)
                if m["ok"] and reached is None:
                    reached = steps
                    if not args.all:
                        break
            summary.append((kind, reached, trained))
    print("\nsteps to tolerance (first checkpoint within it; '>' = not within it by the last one):")
    for kind, reached, trained in summary:
        print(f"  {kind:>16}: {reached if reached else '> ' + str(args.steps)}  (training {trained:.0f} s)")


if __name__ == "__main__":
    main()
