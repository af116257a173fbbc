"""Discretisation bias of every sampler and grid the config offers: the final variance on
Gaussian targets (unit and narrow) with the exact score, against the exact marginal
variance at the grid's end; the defaults within 2 %."""

import math

import pytest
import torch
import yaml
from workflow_api import ROOT

from diffusion_regimes.config import ConfigError, load_schema, validate_config
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.schedule import gamma

#: |variance / target - 1| at 100 steps (T = 5, t_end = 1e-3 off the ddpm grid) for targets of
#: variance 1, 1e-2, 1e-4, measured (200 000 samples, s.e. 0.003) and rounded up. Documented in
#: config/README.md. None: unstable (not refused where the targets are wide, as the paper's
#: Euler-Maruyama on a uniform grid for unit-variance classes).
BOUNDS = {
    ("heun", "log_snr"): (0.02, 0.02, 0.02),
    ("heun", "ddpm"): (0.03, 0.25, 0.21),
    ("heun", "uniform"): (0.14, 0.60, 0.02),
    ("ddpm", "log_snr"): (0.085, 0.075, 0.02),
    ("ddpm", "ddpm"): (0.09, 0.39, 0.46),
    ("ddpm", "uniform"): (0.23, 0.76, 0.06),
    ("euler_maruyama", "log_snr"): (0.035, 0.11, 0.19),
    ("euler_maruyama", "uniform"): (0.04, None, None),
}
VARIANCES = (1.0, 1e-2, 1e-4)


def final_variance_error(cfg: dict, var: float, n: int = 200_000) -> float:
    samp = Sampler.from_config(cfg)
    sigma = math.sqrt(var)

    def score(x, t):
        return -x / gamma(t, sigma)

    g = torch.Generator().manual_seed(0)
    x = samp.run(score, samp.prior(n, 1, g).double(), g)
    return float(x.var()) / gamma(float(samp.grid[-1]), sigma) - 1.0


def test_the_table_covers_every_combination_the_config_offers():
    defs = load_schema()["$defs"]
    offered = {(m, g) for m in defs["sampler"]["properties"]["method"]["enum"]
               for g in defs["sampler"]["properties"]["grid"]["enum"]} - {("euler_maruyama", "ddpm")}
    assert offered == set(BOUNDS)
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["experiments"]["gmm"]["sampler"] = {"method": "euler_maruyama", "grid": "ddpm"}
    with pytest.raises(ConfigError, match="experiments.gmm.sampler.method: euler_maruyama is unstable"):
        validate_config(cfg)


@pytest.mark.parametrize("method, grid", sorted(BOUNDS))
def test_final_variance_on_gaussian_targets(method, grid):
    cfg = {"method": method, "grid": grid, "steps": 100, "T": 5.0, "t_end": 1e-3}
    for var, bound in zip(VARIANCES, BOUNDS[method, grid]):
        err = final_variance_error(cfg, var)
        if bound is None:
            assert not abs(err) < 0.5, (var, err)  # documented as unstable: still is
        else:
            assert abs(err) <= bound, (var, err)


@pytest.mark.parametrize("block", ["sampler", "network_sampler"])
def test_defaults_are_within_two_percent(block):
    """The schema's default of both sampler blocks, and the samplers of the default config."""
    defaults = validate_config({"experiments": {"e": {"dataset": {"source": "gaussian_mixture", "d": 4, "n": 8},
                                                      "scores": ["exact"]}}})["experiments"]["e"][block]
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    used = [exp.get(block) for exp in cfg["experiments"].values() if exp.get(block)]
    for sampler in [defaults] + [{**defaults, **u} for u in used]:
        for var in VARIANCES:
            assert abs(final_variance_error(sampler, var)) <= 0.02, (sampler, var)
