"""Radii of generated samples of the covariance mixture (docs/results.md, "Speciation without
mean separation", the MLP): r = |x|^2/d of 2000 samples of the exact score and of trained
networks, classified at t = 0 by the exact posterior. Run after config/covariance.yaml:

    python benchmarks/covariance_radii.py results/cov_mlp/data.parquet results/cov_mlp/models/mlp.pt [more .pt]
"""

import sys

import torch

from diffusion_regimes.data import load_subset
from diffusion_regimes.datamodels.covariance import CovarianceMixtureScore
from diffusion_regimes.networks import NetworkScore, load_network
from diffusion_regimes.sampling import Sampler

SAMPLER = {"method": "heun", "grid": "log_snr", "steps": 100, "T": 5.0, "t_end": 0.001}  # cov_mlp's


def radii(name: str, score, exact: CovarianceMixtureScore, d: int, n: int = 2000) -> None:
    sampler = Sampler.from_config(SAMPLER)
    gen = torch.Generator().manual_seed(5)
    y = sampler.run(score, sampler.prior(n, d, gen), gen)
    r = (y.double() ** 2).mean(1)
    post = torch.softmax(exact.logits(y, 0.0), 1)
    c = post.argmax(1)
    print(f"{name}: class-1 share {c.double().mean():.3f}, mean r per class "
          f"{[round(float(r[c == k].mean()), 3) for k in (0, 1)]}, sd of r per class "
          f"{[round(float(r[c == k].std()), 4) for k in (0, 1)]}, "
          f"r in (0.8, 1.2): {((r > 0.8) & (r < 1.2)).double().mean():.3f}")


def main() -> None:
    data, nets = sys.argv[1], sys.argv[2:]
    x, labels, meta = load_subset(data)
    exact = CovarianceMixtureScore(meta["variances"], meta["means"], meta["weights"])  # the subset's own model
    r = (x.double() ** 2).mean(1)
    print("data: mean r per class", [round(float(r[torch.as_tensor(labels) == k].mean()), 3) for k in (0, 1)])
    radii("exact score", exact, exact, x.shape[1])
    for path in nets:
        radii(path, NetworkScore(load_network(path), 4096, "cpu"), exact, x.shape[1])


if __name__ == "__main__":
    main()
