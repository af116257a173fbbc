"""Speciation without mean separation: the covariance mixture's exact score, its quadrature
of phi, the kappa-limit of t_S, the tree of splits, and cloning on it."""

import copy
import math

import numpy as np
import pytest
import torch

from diffusion_regimes import theory as cv
from diffusion_regimes.cloning import agreement_table
from diffusion_regimes.config import validate_config
from diffusion_regimes.datamodels import for_meta
from diffusion_regimes.datamodels.covariance import CovarianceMixtureScore
from diffusion_regimes.errors import ConfigError
from diffusion_regimes.seeding import generator
from diffusion_regimes.theory import PHI_AT_T_S


@pytest.mark.parametrize("means", [None, [0.3, -0.2, 0.0]])
def test_the_exact_score_is_the_gradient_of_the_log_density(means):
    var, mu, w = cv.cov_class_parameters({"variances": [0.5, 1.5, 3.0], "means": means, "weights": [1, 2, 1]})
    score = CovarianceMixtureScore(var, mu, w)
    x = torch.randn(7, 32, dtype=torch.float64) * 1.3
    for t in (0.05, 0.7, 3.0):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(score.log_density(xg, t).sum(), xg)
        assert torch.allclose(score(x, t), grad, atol=1e-10, rtol=1e-8)


def test_the_float32_score_at_large_d_matches_float64():
    """The reductions run in x's dtype: at d = 16 384 the float32 posterior stays within 0.01
    of the float64 one at the speciation time (where it matters) and at t = 0.05."""
    var, mu, w = cv.cov_class_parameters({"variances": [0.5, 1.5], "means": [0.1, -0.1]})
    score = CovarianceMixtureScore(var, mu, w)
    d = 16384
    x = torch.randn(64, d, dtype=torch.float64) * torch.linspace(0.6, 1.4, 64, dtype=torch.float64)[:, None]
    for t in (0.05, 0.25 * math.log(d / 8)):
        w64 = torch.softmax(score.logits(x, t), 1)
        w32 = torch.softmax(score.logits(x.float(), t), 1)
        assert (w64 - w32).abs().max() < 0.01
        assert torch.allclose(score(x.float(), t).double(), score(x, t), rtol=1e-4, atol=1e-4)


def test_the_quadrature_of_phi_equals_monte_carlo_of_the_posterior():
    d, var, mu, w = 48, np.array([0.4, 1.0, 2.2]), np.array([0.0, 0.15, 0.0]), np.array([0.3, 0.3, 0.4])
    score = CovarianceMixtureScore(var, mu, w)
    t = np.array([0.3, 0.9])
    groups = [((2,), (0, 1))]
    exact = cv.cov_phi(t, d, var, mu, w, groups)
    gen = generator(3)
    m = 200_000
    labels = torch.multinomial(torch.as_tensor(w), m, replacement=True, generator=gen)
    a = torch.as_tensor(mu)[labels, None] + torch.as_tensor(np.sqrt(var))[labels, None] * torch.randn(
        m, d, generator=gen, dtype=torch.float64)
    for i, ti in enumerate(t):
        xt = a * math.exp(-ti) + math.sqrt(-math.expm1(-2 * ti)) * torch.randn(m, d, generator=gen,
                                                                                dtype=torch.float64)
        post = torch.softmax(score.logits(xt, float(ti)), 1)
        mc = (post**2).sum(1)
        assert abs(float(mc.mean()) - exact["phi"][i]) < 4 * float(mc.std()) / math.sqrt(m)
        pa, pb = post[:, 2], post[:, :2].sum(1)
        num, den = pa**2 + pb**2, (pa + pb) ** 2
        assert abs(float(num.mean() / den.mean()) - exact["split2_01"][i]) < 4 * float(num.std()) / math.sqrt(m)


def test_phi_at_the_closed_form_t_S_tends_to_the_level_as_d_grows():
    """kappa = 2 gives phi = 0.7752 only as d -> infinity: the exact phi there approaches it
    (0.7772 at d = 64, 0.7752 from d = 4096 on) and its crossing approaches t_S."""
    var, mu, w = np.array([0.5, 1.5]), np.zeros(2), np.array([0.5, 0.5])
    gaps = []
    for d in (64, 256, 1024, 4096, 16384):
        t_s = cv.cov_pair_speciation_time(d, 0.5, 1.5)
        assert t_s == pytest.approx(0.25 * math.log(d / 8))  # sbar = 1: exactly 1/4 log(d delta^2 / 8)
        gaps.append(abs(cv.cov_phi(np.array([t_s]), d, var, mu, w)["phi"][0] - PHI_AT_T_S))
    assert all(b < a for a, b in zip(gaps, gaps[1:])) and gaps[0] < 0.003 and gaps[-1] < 2e-5
    assert cv.cov_crossing(16384, var, mu, w) == pytest.approx(cv.cov_pair_speciation_time(16384, 0.5, 1.5), rel=1e-3)


def test_mean_separated_classes_give_the_mixture_closed_form():
    """Equal variances and means +-mu: the model is the two-Gaussian mixture; its pair
    speciation time solves kappa = 2 r = 2, and its quadrature is gm_phi."""
    from diffusion_regimes.theory import gm_phi

    d, mu = 100, 0.2
    t = np.array([0.2, 0.8, 1.6])
    phi = cv.cov_phi(t, d, [1.0, 1.0], [-mu, mu], [0.5, 0.5])["phi"]
    assert np.allclose(phi, gm_phi(t, mu * math.sqrt(d), 1.0), atol=1e-9)
    t_s = cv.cov_pair_speciation_time(d, 1.0, 1.0, -mu, mu)
    assert t_s == pytest.approx(0.5 * math.log(mu**2 * d))  # |m| e^{-t} = sqrt(Gamma_t) = 1
    assert gm_phi(t_s, mu * math.sqrt(d), 1.0) == pytest.approx(PHI_AT_T_S, abs=1e-9)


def test_three_classes_split_one_after_another():
    d, var, mu, w = 1024, np.array([0.25, 0.5, 2.25]), np.zeros(3), np.ones(3) / 3
    tree = cv.cov_splits(d, var, mu, w)
    assert [(A, B) for A, B, _ in tree] == [((2,), (0, 1)), ((0,), (1,))]
    assert tree[0][2] > tree[1][2] > 0
    for A, B, t_s in tree:  # each split's exact crossing lies within 3 % of its closed form
        assert cv.cov_crossing(d, var, mu, w, (A, B)) == pytest.approx(t_s, rel=0.03)
    model = for_meta({"source": "covariance_mixture", "d": d, "n": 10, "variances": var.tolist(),
                      "means": mu.tolist(), "weights": w.tolist()})
    trunk = np.array([0, 0, 1, 2])
    clone = np.array([[0, 1, 2, 2], [1, 1, 1, 0]])
    levels = model.agreement_levels(trunk, clone)
    np.testing.assert_array_equal(levels["split2_01"], [[1, 1, 0, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(levels["split0_1"], [[1, 0, np.nan, np.nan], [0, 0, 1, np.nan]])


def test_a_conditional_level_is_a_ratio_of_resampled_means():
    rng = np.random.default_rng(0)
    agree = rng.random((3, 400)) < 0.8
    masked = np.where(rng.random((3, 400)) < 0.5, agree.astype(np.float32), np.nan)
    table, _ = agreement_table(np.array([0.1, 0.2, 0.3]), masked, 200, 1, level=None)
    counted = np.isfinite(masked).sum(1)
    np.testing.assert_allclose(table["phi"], np.nansum(masked, 1) / counted, rtol=1e-6)
    assert (table["n_pairs"] == counted).all()
    # the s.e. of a proportion over the counted pairs
    expected = np.sqrt(table["phi"] * (1 - table["phi"]) / counted)
    np.testing.assert_allclose(table["phi_se"], expected, rtol=0.25)


def test_exact_cloning_follows_the_quadrature():
    """Exact-score cloning on d = 256 (two classes, variances 0.5 and 1.5): phi within 3 s.e.
    + 0.02 of the quadrature at every branch time."""
    from diffusion_regimes.cloning import clone_shared_trunk
    from diffusion_regimes.sampling import Sampler

    d = 256
    model = for_meta({"source": "covariance_mixture", "d": d, "n": 10, "variances": [0.5, 1.5],
                      "means": None, "weights": None})
    t_s = model.speciation_time(1.0)
    times = np.array([0.5, 1.0, 1.5]) * t_s
    samp = Sampler.from_config({"method": "heun", "grid": "log_snr", "steps": 60, "T": 5.0, "t_end": 1e-3,
                                "batch_size": 512})
    res = clone_shared_trunk(model.exact_score(), samp, times, 300, d, model.classify, 5, 300)
    table, _ = agreement_table(res.times, res.clone_labels == res.trunk_labels[None], 200, 2)
    theory = model.theory(np.asarray(res.times))[0]["phi"]
    assert (np.abs(table["phi"] - theory) < 3 * table["phi_se"] + 0.02).all(), (table["phi"], theory)


def test_the_config_refuses_mismatched_or_indistinct_classes():
    base = {"experiments": {"c": {"dataset": {"source": "covariance_mixture", "d": 64, "n": 100,
                                              "variances": [0.5, 1.5]}, "scores": ["exact"]}}}
    cfg = validate_config(copy.deepcopy(base))
    assert cfg["experiments"]["c"]["dataset"]["means"] is None
    bad = copy.deepcopy(base)
    bad["experiments"]["c"]["dataset"]["means"] = [0.0]
    with pytest.raises(ConfigError, match=r"experiments.c.dataset: means has 1 entries for 2 variances"):
        validate_config(bad)
    bad = copy.deepcopy(base)
    bad["experiments"]["c"]["dataset"]["variances"] = [1.0, 1.02]
    with pytest.raises(ConfigError, match="no two classes are told apart at d = 64"):
        validate_config(bad)
