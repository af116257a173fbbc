import math

import numpy as np
import torch

from diffusion_regimes.cloning import agreement_table, clone_rerun_per_branch, clone_shared_trunk
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.schedule import time_grid
from diffusion_regimes.scores import GaussianMixtureScore
from diffusion_regimes.theory import gm_lambda, gm_phi


def test_gaussian_mixture_cloning_matches_quadrature():
    """phi(t) measured with the exact score at d = 256 agrees with the quadrature within 3 s.e."""
    d = 256
    m = torch.ones(d)
    score = GaussianMixtureScore(m, 1.0)
    samp = Sampler(time_grid("log_snr", 150, 6.0, 1e-3))
    t_s = 0.5 * math.log(gm_lambda(d, 1.0, 1.0))
    res = clone_shared_trunk(score, samp, t_s * np.array([0.6, 0.85, 1.0, 1.15, 1.4]), 2000, d,
                             score.classify, seed=11)
    table, cross = agreement_table(res.times, res.agree, 300, 0)
    theory = gm_phi(table["t"].to_numpy(), math.sqrt(d), 1.0)
    z = np.abs(table["phi"] - theory) / np.maximum(table["phi_se"], 1e-3)
    assert (z < 3).all(), table.assign(theory=theory, z=z)
    assert abs(cross["crossing"] / t_s - 1) < 0.05


def test_shared_trunk_nfe_and_equivalence():
    """Both schemes measure the same phi(t) (within statistical error); the shared trunk
    needs K + sum(K - i_j) evaluations per pair, rerun-per-branch sum(2K - i_j)."""
    d = 8
    score = GaussianMixtureScore(torch.full((d,), 0.5), 1.0)
    samp = Sampler(time_grid("uniform", 40, 4.0, 1e-2))
    bt = np.array([0.3, 0.8, 1.5, 3.0])
    idx = samp.snap(bt)
    P = 1500
    shared = clone_shared_trunk(score, samp, bt, P, d, score.classify, seed=1, pair_batch=400)
    rerun = clone_rerun_per_branch(score, samp, bt, P, d, score.classify, seed=2)
    K = samp.steps
    assert shared.nfe == P * (K + sum(K - i for i in idx))
    assert rerun.nfe == P * sum(K + (K - i) for i in idx)
    assert shared.agree.shape == rerun.agree.shape == (4, P)
    p1, p2 = shared.agree.mean(1), rerun.agree.mean(1)
    se = np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / P)
    assert (np.abs(p1 - p2) < 4 * se + 1e-9).all(), (p1, p2)
    assert p1[0] > p1[-1] + 0.1  # the settings do resolve the speciation
    assert shared.snapshots["trunk"].shape == (4, d) and shared.snapshots["clone_final"].shape == (4, d)


def test_pair_blocks_draw_the_same_numbers_alone_or_together():
    d = 4
    score = GaussianMixtureScore(torch.full((d,), 1.0), 1.0)
    samp = Sampler(time_grid("uniform", 20, 3.0, 1e-2))
    bt = np.array([0.5, 2.0])
    both = clone_shared_trunk(score, samp, bt, 60, d, score.classify, seed=4, pair_batch=30)
    first = clone_shared_trunk(score, samp, bt, 30, d, score.classify, seed=4, pair_batch=30)
    np.testing.assert_array_equal(both.agree[:, :30], first.agree)


def test_clone_at_end_of_grid_always_agrees():
    d = 4
    score = GaussianMixtureScore(torch.full((d,), 1.0), 1.0)
    samp = Sampler(time_grid("uniform", 20, 3.0, 1e-3))
    res = clone_shared_trunk(score, samp, np.array([1e-3, 2.9]), 30, d, score.classify, seed=0)
    assert res.agree[0].all()  # clone made at the last grid time is the trunk itself


def test_agreement_table_bootstrap():
    agree = np.zeros((2, 400), dtype=bool)
    agree[0, :300] = True
    agree[1, :100] = True
    table, cross = agreement_table(np.array([1.0, 2.0]), agree, 400, 0, level=0.5)
    np.testing.assert_allclose(table["phi"], [0.75, 0.25])
    np.testing.assert_allclose(table["phi_se"], np.sqrt([0.75 * 0.25 / 400] * 2), rtol=0.2)
    assert (table["phi_lo"] < table["phi"]).all() and (table["phi_hi"] > table["phi"]).all()
    assert cross["crossing"] == 1.5


def test_label_flip_corrections_two_sided_one_sided_and_the_errors_uncertainty():
    from diffusion_regimes.cloning import agreement_table, correct_for_label_flips, flip_replicates

    rng = np.random.default_rng(0)
    phi, eps, n = 0.8, 0.1, 400_000
    same = rng.random(n) < phi  # the true agreement
    flip_a, flip_b = rng.random(n) < eps, rng.random(n) < eps
    both = (same ^ flip_a ^ flip_b).mean()  # cloning: both clones' labels noisy
    one = (same ^ flip_b).mean()  # U-turns: the start label is the point's own
    assert abs(correct_for_label_flips(both, eps) - phi) < 0.005
    assert abs(correct_for_label_flips(one, eps, one_sided=True) - phi) < 0.005
    assert abs(correct_for_label_flips(one, eps) - phi) > 0.05  # the two-sided formula would be wrong here
    reps = flip_replicates(0.05, 100, 4000, seed=1)
    assert reps.shape == (4000, 1) and abs(reps.mean() - 0.05) < 0.002
    assert abs(reps.std() - math.sqrt(0.05 * 0.95 / 100)) < 0.002  # the held-out set's binomial error
    assert flip_replicates(0.05, None, 10, seed=1) == 0.05
    agree = rng.random((3, 300)) < np.array([[0.95], [0.8], [0.6]])
    times = np.array([0.1, 0.5, 1.0])
    fixed, _ = agreement_table(times, agree, 500, 2, flip=0.05)
    spread, _ = agreement_table(times, agree, 500, 2, flip=0.05, flip_boot=reps[:500])
    np.testing.assert_allclose(fixed["phi"], spread["phi"])
    assert np.all(spread["phi_se"] > fixed["phi_se"])  # the error's uncertainty is in the s.e.
