"""Score evaluations (nfe) of shared-trunk cloning against rerun-per-branch, same settings.

Runs both schemes on the default config's gmm settings (exact score, d = 256)
and prints nfe, wall time and the ratio (target: shared / rerun <= 0.55).
"""

import math
import time

import numpy as np
import torch

from diffusion_regimes.cloning import agreement_table, clone_rerun_per_branch, clone_shared_trunk
from diffusion_regimes.config import load_config
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.scores import GaussianMixtureScore
from diffusion_regimes.theory import gm_lambda


def main() -> None:
    exp = load_config("config/config.yaml")["experiments"]["gmm"]
    d, mu, sigma = exp["dataset"]["d"], exp["dataset"]["mu_tilde"], exp["dataset"]["sigma"]
    score = GaussianMixtureScore(torch.full((d,), mu), sigma)
    branch = np.asarray(exp["cloning"]["branch_times"]) * 0.5 * math.log(gm_lambda(d, mu, sigma))
    n_pairs = exp["cloning"]["n_pairs"]
    out = {}
    for name, fn in [("shared trunk", clone_shared_trunk), ("rerun per branch", clone_rerun_per_branch)]:
        samp = Sampler.from_config(exp["sampler"])
        t0 = time.perf_counter()
        res = fn(score, samp, branch, n_pairs, d, score.classify, 0)
        wall = time.perf_counter() - t0
        table, cross = agreement_table(res.times, res.agree, 200, 0)
        out[name] = (res.nfe, wall, cross["crossing"])
        print(f"{name:>17}: nfe {res.nfe:>10,d}  wall {wall:6.2f} s  t_S measured {cross['crossing']:.4f}")
    K, steps = len(branch), samp.steps
    print(f"settings: d={d}, {n_pairs} pairs, {K} branch times, {steps} steps")
    print(f"nfe ratio shared/rerun = {out['shared trunk'][0] / out['rerun per branch'][0]:.3f} "
          f"(target <= 0.55); wall-time ratio = {out['shared trunk'][1] / out['rerun per branch'][1]:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
