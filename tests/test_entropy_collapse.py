import math

import numpy as np
import pytest
import torch

from diffusion_regimes.collapse import collapse_table, collapse_times, track_nearest
from diffusion_regimes.entropy import entropy_collapse_time, excess_entropy
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.schedule import delta, time_grid
from diffusion_regimes.scores import EmpiricalScore
from diffusion_regimes.theory import gm_collapse_time, gm_excess_entropy


def test_excess_entropy_against_quadrature_in_one_dimension():
    a = torch.tensor([[-1.0], [0.3], [2.0]])
    t = 0.4
    table = excess_entropy(EmpiricalScore(a), np.array([t]), 20000, seed=0, progress=False)
    # f = log n / d + 1/2 + 1/2 log(2 pi Delta) + E[log P_t] by quadrature, d = 1
    x = np.linspace(-8, 8, 40001)
    dt = delta(t)
    comps = np.exp(-(x[:, None] - a.numpy()[:, 0] * math.exp(-t)) ** 2 / (2 * dt)) / math.sqrt(2 * math.pi * dt)
    p = comps.mean(1)
    exact = math.log(3) + 0.5 + 0.5 * math.log(2 * math.pi * dt) + np.trapezoid(p * np.log(p), x)
    assert abs(table["f"][0] - exact) < 3 * table["f_se"][0] + 1e-4


def test_excess_entropy_of_one_point_is_zero(gen):
    table = excess_entropy(EmpiricalScore(torch.randn(1, 50, generator=gen)), np.array([0.1, 1.0]), 500,
                           seed=0, progress=False)
    np.testing.assert_allclose(table["f"], 0.0, atol=1e-12)


def test_gaussian_mixture_excess_entropy_and_collapse_time(gen):
    """Monte Carlo f(t) against the closed form at d = 256, n = 2000, and t_C within 10 %.

    The closed form is the d -> infinity limit; above t_C the finite-size deviation at
    d = 256 stays below 0.12 alpha (its order is the class-mixing entropy log(2)/d).
    """
    d, n = 256, 2000
    lab = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).float()
    a = lab[:, None] + torch.randn(n, d, generator=gen)
    tc = gm_collapse_time(n, d, 1.0)
    t = np.linspace(0.6 * tc, 2.5 * tc, 25)
    table = excess_entropy(EmpiricalScore(a), t, 1000, seed=0, progress=False)
    alpha = math.log(n) / d
    closed = gm_excess_entropy(t, n, d, 1.0)
    above = t > 1.3 * tc
    assert (np.abs(table["f"][above] - closed[above]) < 3 * table["f_se"][above] + 0.12 * alpha).all()
    assert (table["f"][t < 0.8 * tc] < 0.05 * alpha).all()  # collapsed: f ~ 0
    assert entropy_collapse_time(table, d) == pytest.approx(tc, rel=0.1)


def test_collapse_times_from_index_history():
    times = np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    nearest = np.array([[1, 5, 7], [2, 5, 7], [3, 5, 8], [3, 5, 9], [3, 5, 9]])
    np.testing.assert_allclose(collapse_times(times, nearest), [1.0, 3.0, 0.5])


def test_empirical_score_trajectories_end_on_training_points(gen):
    a = torch.randn(30, 20, generator=gen)
    train = EmpiricalScore(a)
    samp = Sampler(time_grid("log_snr", 150, 4.0, 1e-3))
    track = track_nearest(train, samp, train, 40, seed=0, every=5, batch=16)
    assert track.nearest.shape == (len(track.times), 40) and track.times[0] == 4.0
    table = collapse_table(track, train)
    # memorised: the denoised final sample is a training point (they are ~ sqrt(2 d) ~ 6 apart)
    assert (table["d_star"] < 1e-3).all() and table["memorised"].all()
    assert (track.nearest[-1] == track.nearest[-2]).mean() > 0.9
    assert table["t_collapse_null"].isna().all()  # no reference set given
