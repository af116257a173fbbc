"""The memorisation study's measurements: snapshot grids, tau detection on synthetic curves,
the power-law fit, the quality distance, the denoising loss, the memorisation control
(empirical score 100 %, exact score 0 %), and a chain of snapshot trainings against one run."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffusion_regimes.collapse import collapse_statistics, collapse_table, track_nearest
from diffusion_regimes.datamodels.mixtures import gaussian_mixture
from diffusion_regimes.io import load_checkpoint
from diffusion_regimes.memorisation import (
    denoising_loss,
    first_crossing,
    fit_power_law,
    kernel_distance,
    snapshot_steps,
    tau_gen,
    tau_mem,
)
from diffusion_regimes.networks import DEFAULT_TIME_SCALE, EpsilonModel, NetworkScore, load_network, save_network
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.scores import EmpiricalScore, GaussianMixtureScore
from diffusion_regimes.training import train_network


def test_snapshot_grid_is_log_spaced_and_nested():
    steps = snapshot_steps(100, 20000, 4)
    assert steps[:5] == [100, 178, 316, 562, 1000] and steps[-1] == 20000
    assert np.allclose(np.diff(np.log10(steps[:-1])), 0.25, atol=0.01)
    assert set(steps[:-1]) <= set(snapshot_steps(100, 40000, 4))  # a longer run keeps them
    assert set(steps[:-1]) <= set(snapshot_steps(100, 20000, 8))  # so does a finer grid
    assert snapshot_steps(10, 10, 3) == [10] and snapshot_steps(50, 60, 1) == [60]


def _logistic(steps, tau, width=0.3):
    return 1.0 / (1.0 + np.exp(-(np.log10(steps) - np.log10(tau)) / width)) * 0.98


def test_tau_mem_found_on_synthetic_curves():
    steps = np.array(snapshot_steps(10, 100000, 6), dtype=float)
    for tau_true in (300.0, 3000.0, 30000.0):
        p = _logistic(steps, tau_true)
        # the fraction crosses 0.49 (half of 0.98) at tau_true exactly
        assert first_crossing(steps, p, 0.49) == pytest.approx(tau_true, rel=0.05)
        flags = [np.arange(4000) < round(q * 4000) for q in p]  # exact fractions, 4000 samples each
        res = tau_mem(steps, flags, 0.49, 300, seed=1)
        assert res["tau_mem_lo"] <= res["tau_mem"] <= res["tau_mem_hi"]
        assert res["tau_mem_lo"] <= tau_true * 1.05 and res["tau_mem_hi"] >= tau_true * 0.95
        assert res["never_passed"] == 0
    assert res["censored"] == "none"
    never = tau_mem(steps, [np.zeros(100, bool)] * len(steps), 0.1, 50, seed=1)
    assert math.isnan(never["tau_mem"]) and never["tau_mem_hi"] == math.inf and never["never_passed"] == 50
    assert never["censored"] == "right"
    early = tau_mem(steps, [np.ones(100, bool)] * len(steps), 0.1, 50, seed=1)
    assert early["tau_mem"] == steps[0] and early["censored"] == "left"  # only an upper bound


def test_power_law_fit_recovers_gamma_with_its_interval():
    n = np.array([64, 128, 256, 512, 1024], dtype=float)
    rng = np.random.Generator(np.random.PCG64(3))
    tau = 20.0 * n
    reps = [t * np.exp(0.1 * rng.standard_normal(400)) for t in tau]
    fit = fit_power_law(n, tau * np.exp(0.1 * rng.standard_normal(len(n))), reps)
    assert fit["gamma"] == pytest.approx(1.0, abs=0.15)
    assert fit["gamma_lo"] < 1.0 < fit["gamma_hi"] and fit["gamma_hi"] - fit["gamma_lo"] < 0.3
    assert fit["fit_points"] == 5 and fit["replicates_unfit"] == 0
    assert math.isnan(fit_power_law([64, 128], [np.nan, 10.0])["gamma"])  # one finite point: no fit
    # a left-censored point (an upper bound) is left out of the fit and of its interval
    censored = fit_power_law(n, np.r_[5.0, tau[1:]], [np.r_[5.0, 5.0], *[np.r_[t, t] for t in tau[1:]]],
                             use=[False, True, True, True, True])
    assert censored["gamma"] == pytest.approx(1.0) and censored["fit_points"] == 4
    assert censored["gamma_lo"] == pytest.approx(1.0) and censored["gamma_hi"] == pytest.approx(1.0)
    # replicates where a fitted n never passed are counted, not refitted without it
    partial = fit_power_law(n, tau, [np.r_[t, np.nan] if i == 4 else np.r_[t, t] for i, t in enumerate(tau)])
    assert partial["replicates_unfit"] == 1 and partial["gamma_lo"] == pytest.approx(1.0)


def test_power_law_interval_holds_the_scatter_between_runs():
    """Four independent runs per n whose tau scatter by 30 % between runs while each run's own
    bootstrap is tight (2 %): the two-level interval covers the true gamma in most simulated
    studies, where an interval from each run's trajectory bootstrap alone would rarely."""
    n = np.repeat([32.0, 64.0, 128.0, 256.0, 512.0], 4)
    rng = np.random.Generator(np.random.PCG64(5))
    covered, widths = 0, []
    for study in range(200):
        tau = 20.0 * n * np.exp(0.3 * rng.standard_normal(len(n)))  # the runs' own tau
        reps = [t * np.exp(0.02 * rng.standard_normal(400)) for t in tau]
        fit = fit_power_law(n, tau, reps, seed=study)
        covered += fit["gamma_lo"] <= 1.0 <= fit["gamma_hi"]
        widths.append(fit["gamma_hi"] - fit["gamma_lo"])
    assert fit["fit_points"] == 20 and fit["fit_n"] == 5 and fit["runs_per_n"] == 4
    assert covered / 200 >= 0.8, covered
    # the slope's sampling s.d. with this scatter: 0.3 / sqrt(sum (x - mean x)^2) = 0.068 (a 95 %
    # width of 0.27; resampling 4 runs shrinks it by about sqrt(3/4)); each run's own bootstrap
    # alone would give a width of about 0.005
    assert np.median(widths) > 0.6 * 2 * 1.96 * 0.068


def test_replicates_expand_into_independent_runs_of_one_group():
    from diffusion_regimes.config import expand_grids

    memo = {"enabled": True, "replicates": 3}
    out = expand_grids({"m": {"dataset": {"source": "gaussian_mixture", "n": [8, 16]}, "memorisation": memo},
                        "one": {"dataset": {"source": "gaussian_mixture", "n": 8}, "memorisation": memo},
                        "off": {"dataset": {"source": "gaussian_mixture", "n": 8},
                                "memorisation": {"enabled": False, "replicates": 3}}})
    assert list(out) == ["m_n8_r0", "m_n8_r1", "m_n8_r2", "m_n16_r0", "m_n16_r1", "m_n16_r2",
                         "one_r0", "one_r1", "one_r2", "off"]
    assert {out[k]["group"] for k in out if k.startswith("m_")} == {"m"} and out["one_r1"]["group"] == "one"
    assert out["m_n16_r2"]["dataset"]["n"] == 16 and "group" not in out["off"]


def test_group_table_with_runs_per_n():
    import pandas as pd

    from diffusion_regimes.memorisation import group

    def member(n, tau):
        curve = pd.DataFrame({"step": [10, 100], "memorised_fraction": [0.0, 0.5], "memorised_fraction_se": [0, 0.05],
                              "t_C_memorised": [np.nan, 0.1], "t_C_memorised_se": [np.nan, 0.01],
                              "t_C_null": [0.05, 0.05]})
        meta = {"n": n, "tau_mem": tau, "tau_mem_replicates": [tau * 1.01, tau * 0.99] * 10, "tau_gen": 10.0,
                "tau_mem_censored": "none", "tau_gen_loss": 10.0}
        return curve, meta, {"t_C": 0.1}, {}

    table, results = group({"g_n8_r0": member(8, 40.0), "g_n8_r1": member(8, 90.0),
                            "g_n16_r0": member(16, 160.0), "g_n16_r1": member(16, 200.0)})
    assert list(table["n"]) == [8, 8, 16, 16]
    runs = {r["n"]: r for r in results["runs"]}
    assert runs[8]["runs"] == 2 and runs[8]["tau_mem_geometric_mean"] == pytest.approx(60.0)
    assert runs[8]["log_tau_mem_sd_between_runs"] == pytest.approx(np.log(90 / 40) / np.sqrt(2))
    assert results["gamma"] == pytest.approx(np.log(np.sqrt(160 * 200) / 60.0) / np.log(2))
    assert results["gamma_lo"] < results["gamma"] < results["gamma_hi"]


def test_tau_gen_is_the_start_of_the_quality_plateau():
    steps = [10, 30, 100, 300, 1000, 3000]
    quality = [5.0, 1.0, 0.11, 0.10, 0.105, 0.3]
    assert tau_gen(steps, quality, [0.01] * 6) == 100  # within 2 s.e. of the best (0.10 at 300)
    assert tau_gen(steps, quality, [0.001] * 6) == 300


def test_kernel_distance_is_zero_for_the_same_law_and_positive_otherwise(gen):
    a, b = torch.randn(2000, 8, generator=gen), torch.randn(2000, 8, generator=gen)
    same, se, width = kernel_distance(a, b, 10, seed=0)
    assert abs(same) < 3 * se and width == pytest.approx(4.0, rel=0.1)  # median of |a - b| ~ sqrt(2 * 8)
    shifted, se2, _ = kernel_distance(a + 0.5, b, 10, seed=0)
    assert shifted > 10 * se2


class _Optimal(nn.Module):
    """The Bayes-optimal noise prediction for data N(0, I): E[eps | x_t] = sqrt(Delta_t) x_t
    (t read back from c_noise = time_scale t)."""

    def forward(self, x, c_noise):
        t = c_noise / DEFAULT_TIME_SCALE
        return torch.sqrt(-torch.expm1(-2 * t))[:, None] * x


def test_denoising_loss_is_the_posterior_noise_variance(gen):
    """For data N(0, I) the best predictor's loss per coordinate is Var(eps | x_t) = e^{-2t}:
    the network (through the shared network interface) and the exact score (through
    -sqrt(Delta_t) F) both reach it, a predictor that ignores x_t does not."""
    a = torch.randn(400, 6, generator=gen)
    times = [0.1, 0.5, 2.0]
    expected = np.exp(-2 * np.array(times))  # 0.82, 0.37, 0.018
    network = NetworkScore(EpsilonModel(_Optimal(), (6,)), batch_size=128, device="cpu")
    exact = GaussianMixtureScore(torch.zeros(6), 1.0)  # both centres at 0: N(0, I)
    for score in (network, exact):
        mean, se = denoising_loss(score, a, times, 1200, seed=0)
        assert np.all(np.abs(mean - expected) < 4 * se + 1e-3), (mean, expected)
    blind = NetworkScore(EpsilonModel(_Zero(), (6,)), device="cpu")
    mean, se = denoising_loss(blind, a, times, 1200, seed=0)
    assert np.all(np.abs(mean - 1.0) < 4 * se) and mean[0] - expected[0] > 10 * se[0]
    per_sample = network.denoising_loss(a, 0.5, torch.randn(400, 6, generator=gen))
    assert per_sample.shape == (400,) and abs(float(per_sample.mean()) - expected[1]) < 0.05


class _Zero(nn.Module):
    def forward(self, x, c_noise):
        return torch.zeros_like(x)


def test_empirical_score_memorises_and_exact_score_does_not(gen):
    x, _ = gaussian_mixture(8, 16, 1.0, 1.0, gen)
    ref, _ = gaussian_mixture(8, 200, 1.0, 1.0, gen)
    train, reference = EmpiricalScore(x), EmpiricalScore(ref)
    samp = Sampler.from_config({"method": "heun", "grid": "log_snr", "steps": 60, "T": 5.0, "t_end": 1e-3})
    fractions = {}
    for name, score in (("empirical", train), ("exact", GaussianMixtureScore(torch.ones(8), 1.0))):
        table = collapse_table(track_nearest(score, samp, train, 200, seed=2, reference=reference), train, reference)
        fractions[name] = collapse_statistics(table, 50)["memorised_fraction"]
        assert table["memorised_null"].mean() < 0.05  # nothing is a copy of the points it never saw
    assert fractions == {"empirical": 1.0, "exact": 0.0}


def test_snapshot_chain_ends_with_the_weights_of_one_run(tmp_path, gen):
    x = torch.randn(40, 6, generator=gen)
    model, cfg = {"width": 16, "depth": 1, "time_dim": 8, "dropout": 0.0}, {
        "steps": 30, "batch_size": 8, "lr": 1e-3, "lr_decay": 0.9, "lr_decay_epochs": 2, "ema": 0.9}
    straight, log, _ = train_network(x, "mlp", model, (6,), cfg, 5, tmp_path / "one.pt", progress=False)
    previous = None
    for step in (10, 20, 30):  # the chain of the train_snapshot stage, through its files
        net, _, info = train_network(x, "mlp", model, (6,), {**cfg, "steps": step}, 5, tmp_path / "s.pt",
                                     progress=False, start=previous)
        full = load_checkpoint(tmp_path / "s.pt")
        save_network(net, "mlp", model, {}, tmp_path / f"step{step}.pt", extra=full)
        (tmp_path / "s.pt").unlink()
        assert info["resumed_from"] == step - 10
        previous = tmp_path / f"step{step}.pt"
    chained = load_network(previous)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), chained.state_dict().values()))
    assert torch.equal(load_checkpoint(previous)["log"][:, 1], torch.as_tensor(log["loss"].to_numpy().copy()))


MEMO_CONFIG = """
seed: 1
experiments:
  memo:
    dataset: {source: gaussian_mixture, d: 4, n: [8, 16], n_reference: 64}
    scores: [exact]
    sampler: {steps: 20, T: 5.0}
    network_sampler: {steps: 20}
    cloning: {n_pairs: 16, branch_times: [0.5, 1.0, 1.5], n_bootstrap: 20}
    collapse: {n_trajectories: 8, n_pairs: 8, branch_times: [0.2, 0.5], n_bootstrap: 20}
    entropy: {t_min: 0.1, t_max: 3.0, n_t: 4, n_samples: 32}
    theory: {n_t: 20}
    mlp: {width: 16, depth: 1, time_dim: 8}
    train: {steps: STEPS, batch_size: 16, lr: 0.003, lr_decay: 1.0}
    memorisation: {enabled: true, first_step: 10, per_decade: 2, n_samples: 40, n_show: 4, loss_points: 64,
                   quality_blocks: 4, n_bootstrap: 50, threshold: 0.05}
"""


def test_replicate_runs_are_wired_into_one_group(tmp_path):
    """memorisation.replicates: 2 makes two independent chains per n (dry run) gathered by one
    group job."""
    from workflow_api import snakemake

    config = tmp_path / "memo.yaml"
    config.write_text(MEMO_CONFIG.replace("STEPS", "40").replace("threshold: 0.05}", "threshold: 0.05, replicates: 2}"))
    planned = snakemake(tmp_path, dry=True, configfile=config)
    assert {f"results/memo_n{n}_r{r}/models/mlp_snapshots/step40.pt" for n in (8, 16) for r in (0, 1)} <= planned
    assert "results/groups/memo/memorisation.parquet" in planned
    assert not any(p.startswith("results/memo_n8/") for p in planned)


GROUP_TABLE = "results/groups/memo/memorisation.parquet"  # the study alone: not the exact score's measurements


@pytest.mark.slow
def test_snapshot_jobs_run_gather_and_a_longer_run_reuses_them(tmp_path):
    from workflow_api import snakemake

    from diffusion_regimes.io import read_table

    config = tmp_path / "memo.yaml"
    config.write_text(MEMO_CONFIG.replace("STEPS", "40"))
    made = snakemake(tmp_path, configfile=config, targets=[GROUP_TABLE])
    r = tmp_path / "results"
    snaps = {f"results/memo_n{n}/models/mlp_snapshots/step{s}.pt" for n in (8, 16) for s in (10, 32, 40)}
    assert snaps <= made
    table, meta = read_table(r / "groups/memo/memorisation.parquet", stage="memorisation_group")
    assert list(table.columns[:6]) == ["experiment", "n", "tau_mem", "tau_mem_lo", "tau_mem_hi", "tau_gen"]
    assert list(table["n"]) == [8, 16] and set(table["tau_gen"]) <= {10.0, 32.0, 40.0}
    assert {"gamma", "gamma_lo", "gamma_hi", "fit"} <= set(meta)
    curve, cmeta = read_table(r / "memo_n8/mlp/memorisation.parquet", stage="memorisation")
    assert list(curve["step"]) == [10, 32, 40] and len(cmeta["tau_mem_replicates"]) == 50
    loss, _ = read_table(r / "memo_n8/mlp/denoising_loss.parquet")
    assert len(loss) == 3 * 5 and (loss["loss_heldout_se"] > 0).all()
    first = read_table(r / "memo_n8/mlp/memorisation/step10.parquet")[0]
    assert first["sample"].notna().sum() == 4 and first["memorised"].dtype == bool
    for png in ("memorised_fraction", "tau", "nearest", "collapse_entropy"):
        assert (r / f"figures/groups/memo/{png}.png").stat().st_size > 5000
    assert set(table["tau_mem_censored"]) <= {"none", "left", "right"}
    # the experiment's network is its last snapshot's, not trained a second time
    made = snakemake(tmp_path, configfile=config, targets=["results/memo_n8/models/mlp.pt"])
    assert made == {"results/memo_n8/models/mlp.pt", "results/memo_n8/models/mlp_log.parquet"}
    last = load_network(r / "memo_n8/models/mlp_snapshots/step40.pt")
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(),
                                                 load_network(r / "memo_n8/models/mlp.pt").state_dict().values()))
    assert len(read_table(r / "memo_n8/models/mlp_log.parquet")[0]) == 40
    before = {s: (tmp_path / s).stat().st_mtime_ns for s in snaps}
    config.write_text(MEMO_CONFIG.replace("STEPS", "100"))  # train longer: steps 10, 32, 100
    made = snakemake(tmp_path, configfile=config, targets=[GROUP_TABLE])
    new = {p for p in made if "/mlp_snapshots/" in p or "/memorisation/step" in p}
    assert new == {f"results/memo_n{n}/{kind}" for n in (8, 16)
                   for kind in ("models/mlp_snapshots/step100.pt", "mlp/memorisation/step100.parquet")}
    assert all((tmp_path / s).stat().st_mtime_ns == before[s] for s in snaps if "step40" not in s)
    assert list(read_table(r / "memo_n8/mlp/memorisation.parquet")[0]["step"]) == [10, 32, 100]
