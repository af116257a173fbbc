"""The solvable models: Curie–Weiss (exact score, exact sampler, Lambda), the hierarchical
mixture (eigenvalues, score, two-level cloning), the symmetry-breaking potential, and
config grids."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffusion_regimes import theory
from diffusion_regimes.cloning import clone_shared_trunk
from diffusion_regimes.config import ConfigError, validate_config
from diffusion_regimes.datamodels.curie_weiss import (
    CurieWeissScore,
    cw_lambda,
    enumerate_log_density,
    magnetisation_law,
    sample_spins,
)
from diffusion_regimes.datamodels.mixtures import hierarchical_centres, hierarchical_mixture
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.schedule import time_grid
from diffusion_regimes.scores import GaussianMixtureScore, MixtureScore
from diffusion_regimes.spectrum import covariance_eigenvalues


@pytest.mark.parametrize("d,beta,h,t", [(6, 0.5, 0.0, 0.3), (9, 1.0, 0.0, 1.5), (10, 1.6, 0.2, 0.05),
                                        (12, 2.0, 0.0, 0.7), (8, 1.3, -0.4, 0.005), (12, 0.9, 0.0, 4.0)])
def test_curie_weiss_score_matches_enumeration(d, beta, h, t, gen):
    x = 1.5 * torch.randn(16, d, generator=gen, dtype=torch.float64)
    cw = CurieWeissScore(d, beta, 1.0, h)
    brute = enumerate_log_density(x, t, beta, 1.0, h)
    assert torch.allclose(cw.log_density(x, t), brute, rtol=0, atol=1e-10)
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(enumerate_log_density(xr, t, beta, 1.0, h).sum(), xr)
    assert torch.allclose(cw(x, t), grad, rtol=1e-10, atol=1e-9 * grad.abs().max().item())
    assert cw(x.float(), t).dtype == torch.float32


@pytest.mark.parametrize("d,beta,h", [(50, 0.6, 0.0), (200, 1.4, 0.0), (31, 1.1, 0.15)])
def test_curie_weiss_sampler_magnetisation_law(d, beta, h, gen):
    n = 20000
    a = sample_spins(n, d, beta, 1.0, h, gen)
    assert set(torch.unique(a).tolist()) <= {-1.0, 1.0}
    M, p = magnetisation_law(d, beta, 1.0, h)
    counts = np.bincount(((a.sum(1).numpy().astype(int) + d) // 2), minlength=d + 1)
    expected = n * p
    # pool the sparse tails so every cell expects at least 5
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1] * obs[:-1].sum() / exp[:-1].sum()
    chi2 = stats.chisquare(obs, exp)
    assert chi2.pvalue > 1e-3


def test_curie_weiss_spins_are_exchangeable(gen):
    a = sample_spins(40000, 10, 1.2, 1.0, 0.0, gen)
    # every spin has mean 0 and the same pair correlation
    assert a.mean(0).abs().max() < 4 / math.sqrt(40000)
    c = (a.T @ a / len(a)).numpy()
    off = c[~np.eye(10, dtype=bool)]
    assert off.std() < 4 / math.sqrt(40000)


def test_curie_weiss_lambda_against_samples(gen):
    d, beta = 100, 1.3
    a = sample_spins(20000, d, beta, 1.0, 0.0, gen)
    top = float(covariance_eigenvalues(a, 1, "dense")[0])
    lam = cw_lambda(d, beta)
    assert top == pytest.approx(lam, rel=4 * math.sqrt(2 / 20000) + 0.01)
    assert cw_lambda(4000, 0.5) == pytest.approx(1 / (1 - 0.5), rel=0.01)  # paramagnet: 1/(1 - beta J)


def test_mixture_score_against_autograd(gen):
    centres = hierarchical_centres(16, 1.0, 0.3)
    score = MixtureScore(centres, 0.8)
    x = torch.randn(5, 16, generator=gen, dtype=torch.float64)
    for t in (0.05, 0.7, 3.0):
        xr = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(score.log_density(xr, t).sum(), xr)
        assert torch.allclose(score(x, t), grad, atol=1e-10)
    # two centres +-m: the two-Gaussian mixture's score
    m = torch.full((16,), 0.7)
    two = MixtureScore(torch.stack([-m, m]), 1.0)
    assert torch.allclose(two(x.float(), 0.4), GaussianMixtureScore(m, 1.0)(x.float(), 0.4), atol=1e-5)


def test_hierarchical_eigenvalues_against_closed_form(gen):
    d, n = 64, 20000
    x, labels = hierarchical_mixture(d, n, 1.0, 0.4, 1.0, gen)
    assert np.bincount(labels).tolist() == [n // 4] * 4
    ev = covariance_eigenvalues(x, 3, "dense")
    lam1, lam2, bulk = theory.hierarchical_lambdas(d, 1.0, 0.4, 1.0)
    tol = 4 * math.sqrt(2 / n)
    assert float(ev[0]) == pytest.approx(lam1, rel=tol)
    assert float(ev[1]) == pytest.approx(lam2, rel=tol)
    # the bulk edge: Marchenko-Pastur for ratio d/n
    assert float(ev[2]) < bulk * (1 + math.sqrt(d / n)) ** 2 * 1.05


def test_hierarchical_cloning_at_both_levels_matches_theory():
    d = 64
    centres = hierarchical_centres(d, 1.0, 0.35)
    score = MixtureScore(centres, 1.0)
    sampler = Sampler(time_grid("log_snr", 150, 6.0, 1e-3))
    lam1, lam2, _ = theory.hierarchical_lambdas(d, 1.0, 0.35, 1.0)
    times = np.array([0.5 * math.log(lam2), 0.5 * math.log(lam1), 0.5 * (math.log(lam1) + math.log(lam2)) / 2])
    res = clone_shared_trunk(score, sampler, times, 3000, d, score.classify, 0)
    sup, sub, full = theory.hierarchical_phi(res.times, d, 1.0, 0.35, 1.0)
    for measured, expected in ((res.clone_labels // 2 == res.trunk_labels // 2, sup),
                               (res.clone_labels % 2 == res.trunk_labels % 2, sub), (res.agree, full)):
        phi = measured.mean(1)
        se = np.sqrt(expected * (1 - expected) / measured.shape[1])
        assert np.all(np.abs(phi - expected) < 4 * se + 0.02), (phi, expected)


def test_potential_gives_the_projected_backward_drift():
    d, mu = 64, 0.8
    m = torch.full((d,), mu, dtype=torch.float64)
    for sigma in (1.0, 0.6):
        score = GaussianMixtureScore(m, sigma)
        for t in (0.3, 1.5, 3.0):
            for q in (-2.0, 0.3, 1.7):
                x = (q * math.sqrt(d) / (m @ m) * m)[None]  # any x with x . m / sqrt(d) = q
                drift = float(((x + 2 * score(x, t)) @ m / math.sqrt(d))[0])  # -dq/dt of the backward SDE
                eps = 1e-5
                dv = (theory.gm_potential(q + eps, t, d, mu, sigma) - theory.gm_potential(q - eps, t, d, mu, sigma))
                assert drift == pytest.approx(-float(dv) / (2 * eps), rel=1e-5, abs=1e-6)


def test_grid_expands_into_grouped_experiments():
    cfg = {"experiments": {"cw": {"dataset": {"source": "curie_weiss", "d": [16, 32], "n": 100,
                                              "beta": [0.5, 1.5]}, "scores": ["exact"]}}}
    validate_config(cfg)
    assert sorted(cfg["experiments"]) == ["cw_d16_beta0p5", "cw_d16_beta1p5", "cw_d32_beta0p5", "cw_d32_beta1p5"]
    member = cfg["experiments"]["cw_d32_beta1p5"]
    assert member["group"] == "cw" and member["dataset"]["d"] == 32 and member["dataset"]["beta"] == 1.5
    with pytest.raises(ConfigError, match="needs image data"):
        validate_config({"experiments": {"cw": {"dataset": {"source": "curie_weiss", "d": 8, "n": 10, "beta": 1.0},
                                                "scores": ["unet"]}}})
    with pytest.raises(ConfigError, match="symmetry"):
        validate_config({"experiments": {"cw": {"dataset": {"source": "curie_weiss", "d": 8, "n": 10, "beta": 1.0},
                                                "scores": ["exact"], "symmetry": {"enabled": True}}}})


def test_sampled_projections_follow_the_exact_marginal():
    from diffusion_regimes.sampling import sample_projections

    d, mu = 64, 1.0
    m = torch.full((d,), mu)
    sampler = Sampler(time_grid("log_snr", 300, 6.0, 1e-3))
    times, q = sample_projections(GaussianMixtureScore(m, 1.0), sampler, 3000, m / math.sqrt(d),
                                  np.array([0.8, 2.0, 3.5]), 0)
    for t, row in zip(times, q):
        c, sd = mu**2 * math.sqrt(d) * math.exp(-t), mu  # Gamma_t = 1 for sigma = 1
        cdf = lambda v, c=c, sd=sd: 0.5 * (stats.norm.cdf(v, c, sd) + stats.norm.cdf(v, -c, sd))  # noqa: E731
        assert stats.kstest(row, cdf).pvalue > 1e-3, t
        grid = np.linspace(-3 * c - 5, 3 * c + 5, 2001)
        dens = theory.gm_projection_density(grid, t, d, mu)
        assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)


def test_projections_at_times_on_one_grid_point_are_all_filled():
    from diffusion_regimes.sampling import sample_projections

    d = 8
    m = torch.ones(d)
    sampler = Sampler(time_grid("uniform", 10, 5.0, 1e-3))
    times, q = sample_projections(GaussianMixtureScore(m, 1.0), sampler, 50, m / math.sqrt(d),
                                  np.array([2.0, 2.05, 3.0]), 0)
    assert times[0] == times[1] and np.isfinite(q).all() and np.array_equal(q[0], q[1])
