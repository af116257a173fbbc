"""Discretisation bias of every sampler and grid the config offers: the final variance on
Gaussian targets (unit and narrow) with the exact score, computed exactly
(:func:`diffusion_regimes.sampling.gaussian_variance_error`: the error on what is left of the
target's own variance at the grid's end), checked against Monte Carlo; the defaults within 2 %."""

import math

import pytest
import torch
import yaml
from workflow_api import ROOT

from diffusion_regimes.config import ConfigError, load_schema, validate_config
from diffusion_regimes.sampling import Sampler, gaussian_variance_error
from diffusion_regimes.schedule import gamma

#: (v_K - Gamma_{t_end}) / (var e^{-2 t_end}) at 100 steps (T = 5, t_end = 1e-3 off the ddpm grid,
#: whose own end is t_1 = 5e-5) for targets of variance 1, 1e-2, 1e-4, computed exactly.
#: Documented in config/README.md. None: unstable (not refused where the targets are wide, as
#: the paper's Euler-Maruyama on a uniform grid for unit-variance classes).
EXPECTED = {
    ("heun", "log_snr"): (-0.006039, -0.005111, -0.0003098),
    ("heun", "ddpm"): (-0.0126, -0.2231, -0.3616),
    ("heun", "uniform"): (-0.119, -0.6876, -0.03422),
    ("ddpm", "log_snr"): (-0.07687, -0.07753, -0.0807),
    ("ddpm", "ddpm"): (-0.07831, -0.3675, -0.8749),
    ("ddpm", "uniform"): (-0.2137, -0.8842, -0.9623),
    ("euler_maruyama", "log_snr"): (0.02077, 0.1146, 3.577),
    ("euler_maruyama", "uniform"): (0.02569, None, None),
}
VARIANCES = (1.0, 1e-2, 1e-4)


def final_variance_error(cfg: dict, var: float) -> float:
    return gaussian_variance_error(Sampler.from_config(cfg), var)


@pytest.mark.parametrize("method, grid, var", [("ddpm", "ddpm", 1e-4), ("heun", "uniform", 1e-2),
                                               ("euler_maruyama", "log_snr", 1.0)])
def test_exact_variance_error_matches_monte_carlo(method, grid, var):
    """The exact recursion against 400 000 samples of the sampler itself (s.e. of the variance
    0.22 %): the same error within 4 s.e."""
    cfg = {"method": method, "grid": grid, "steps": 100, "T": 5.0, "t_end": 1e-3}
    samp = Sampler.from_config(cfg)
    sigma, n = math.sqrt(var), 400_000
    g = torch.Generator().manual_seed(0)
    x = samp.run(lambda y, t: -y / gamma(t, sigma), samp.prior(n, 1, g).double(), g)
    t_end = float(samp.grid[-1])
    v = float(x.var())
    mc = (v - gamma(t_end, sigma)) / (var * math.exp(-2 * t_end))
    se = v * math.sqrt(2 / n) / (var * math.exp(-2 * t_end))
    assert abs(mc - final_variance_error(cfg, var)) < 4 * se, (mc, se)


def test_the_table_covers_every_combination_the_config_offers():
    defs = load_schema()["$defs"]
    offered = {(m, g) for m in defs["sampler"]["properties"]["method"]["enum"]
               for g in defs["sampler"]["properties"]["grid"]["enum"]} - {("euler_maruyama", "ddpm")}
    assert offered == set(EXPECTED)
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["experiments"]["gmm"]["sampler"] = {"method": "euler_maruyama", "grid": "ddpm"}
    with pytest.raises(ConfigError, match="experiments.gmm.sampler.method: euler_maruyama is unstable"):
        validate_config(cfg)


@pytest.mark.parametrize("method, grid", sorted(EXPECTED))
def test_final_variance_on_gaussian_targets(method, grid):
    cfg = {"method": method, "grid": grid, "steps": 100, "T": 5.0, "t_end": 1e-3}
    for var, expected in zip(VARIANCES, EXPECTED[method, grid]):
        err = final_variance_error(cfg, var)
        if expected is None:
            assert not abs(err) < 0.5, (var, err)  # documented as unstable: still is
        else:
            assert err == pytest.approx(expected, rel=1e-3), (var, err)


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
