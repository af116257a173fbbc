"""The whole network path against exact theory: a residual MLP trained on the two-Gaussian
mixture (denoising loss, the train stage's code), sampled with the default sampler, its phi(t)
against the closed form and its t_S against 1/2 log Lambda; and memorisation with its null
(the exact score memorises nothing, the empirical score everything)."""

import math

import numpy as np
import pytest
import torch

from diffusion_regimes.cloning import agreement_table, clone_shared_trunk
from diffusion_regimes.collapse import collapse_statistics, collapse_table, track_nearest
from diffusion_regimes.datamodels import data_model
from diffusion_regimes.networks import NetworkScore, load_network, save_network
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.scores import EmpiricalScore
from diffusion_regimes.seeding import generator
from diffusion_regimes.theory import PHI_AT_T_S, gm_phi
from diffusion_regimes.training import train_network

SAMPLER = {"method": "heun", "grid": "log_snr", "steps": 100, "T": 5.0, "t_end": 1e-3}


def mixture(d: int, n: int, seed: int = 0):
    cls = data_model("gaussian_mixture")
    sub = cls.sample({"d": d, "n": n, "mu_tilde": 1.0, "sigma": 1.0}, generator(seed))
    return sub.x, cls({**sub.meta, "d": d, "n": n})


@pytest.mark.slow
def test_mlp_on_the_mixture_speciates_as_the_closed_form(tmp_path):
    """d = 32, n = 4000 (it generalises: 4000 points in 32 dimensions), 6000 steps of the
    residual MLP: phi within 3 s.e. + 0.02 of the closed form at every branch time and t_S
    within 5 % of 1/2 log Lambda, after a save/load round trip of the checkpoint."""
    d = 32
    x, model = mixture(d, 4000)
    train = {"steps": 6000, "batch_size": 256, "lr": 1e-3, "lr_decay": 0.98, "lr_decay_epochs": 50, "ema": 0.999,
             "precision": "fp32", "checkpoint_every": 6000}
    cfg = {"width": 256, "depth": 3, "time_dim": 128, "dropout": 0.0}
    net, _, _ = train_network(x, "mlp", cfg, (d,), train, 1, tmp_path / "state.pt", progress=False)
    save_network(net, "mlp", cfg, {}, tmp_path / "mlp.pt")
    score = NetworkScore(load_network(tmp_path / "mlp.pt"), 4096, "cpu")
    t_S = 0.5 * math.log(1 + d)
    rel = np.array([0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.7, 2.0])
    res = clone_shared_trunk(score, Sampler.from_config(SAMPLER), rel * t_S, 2000, d, model.classify, 3,
                             pair_batch=2000)
    table, cross = agreement_table(res.times, res.agree, 200, 4)
    dphi = table["phi"].to_numpy() - gm_phi(res.times, math.sqrt(d), 1.0)
    assert (np.abs(dphi) <= 3 * table["phi_se"].to_numpy() + 0.02).all(), dphi
    assert cross["crossing"] == pytest.approx(t_S, rel=0.05) and cross["crossing_missed"] == 0
    assert table["phi"].iloc[0] > PHI_AT_T_S > table["phi"].iloc[-1]


def test_memorisation_and_its_null():
    """The exact mixture score memorises nothing; the empirical score memorises every sample;
    against a reference set of fresh draws neither does, and the empirical score's trajectories
    collapse on training points long before the null's 'collapse' on reference points."""
    d, n = 64, 200
    x, model = mixture(d, n)
    ref, _ = mixture(d, n, seed=1)
    train, reference = EmpiricalScore(x), EmpiricalScore(ref)
    samp = Sampler.from_config({**SAMPLER, "steps": 60})
    stats = {}
    for name, score in (("exact", model.exact_score()), ("empirical", train)):
        track = track_nearest(score, samp, train, 64, 0, every=2, batch=64, reference=reference)
        table = collapse_table(track, train, reference)
        stats[name] = collapse_statistics(table, 100, 0)
        assert {"d1", "d2", "memorised", "t_collapse_null", "memorised_null"} <= set(table.columns)
        assert (table["d1"] <= table["d2"]).all()
    assert stats["exact"]["memorised_fraction"] == 0.0 and stats["exact"]["memorised_fraction_null"] == 0.0
    assert stats["empirical"]["memorised_fraction"] == 1.0 and stats["empirical"]["memorised_fraction_null"] == 0.0
    assert math.isnan(stats["exact"]["t_C_memorised"])
    assert stats["empirical"]["t_C_memorised"] > stats["empirical"]["t_C_null"] + 0.1
    assert stats["empirical"]["memorised_fraction_se"] == 0.0


def test_label_flip_correction_inverts_independent_flips():
    from diffusion_regimes.cloning import correct_for_label_flips

    rng = np.random.default_rng(0)
    phi, eps, P = 0.8, 0.1, 400_000
    same = rng.random(P) < phi
    a = rng.random(P) < 0.5
    b = np.where(same, a, ~a)
    flip_a, flip_b = rng.random(P) < eps, rng.random(P) < eps
    observed = ((a ^ flip_a) == (b ^ flip_b)).mean()
    assert observed == pytest.approx(phi + 2 * eps * (1 - eps) * (1 - 2 * phi), abs=3e-3)
    assert correct_for_label_flips(observed, eps) == pytest.approx(phi, abs=4e-3)
    torch.testing.assert_close(torch.tensor(correct_for_label_flips(np.array([0.5, 1.0]), 0.0)),
                               torch.tensor([0.5, 1.0], dtype=torch.float64))
