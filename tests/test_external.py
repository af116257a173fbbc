"""Models trained elsewhere: diffusers folders, EDM-style denoisers and entry points, their
conversion to the OU score against the exact mixture score, and U-turns."""

import importlib.util
import math
import textwrap

import numpy as np
import pytest
import torch
import yaml
from workflow_api import ROOT

from diffusion_regimes import external
from diffusion_regimes.errors import InputError
from diffusion_regimes.sampling import Sampler
from diffusion_regimes.schedule import delta, forward_noise, ou_time
from diffusion_regimes.scores import GaussianMixtureScore
from diffusion_regimes.seeding import generator
from diffusion_regimes.theory import gm_phi
from diffusion_regimes.uturn import u_turn

TIMES = [0.02, 0.3, 1.0, 2.0, 4.0]


def mixture(d: int = 16) -> GaussianMixtureScore:
    return GaussianMixtureScore(torch.ones(d), sigma=1.0)


def _x(d: int = 16, n: int = 64) -> torch.Tensor:
    return torch.randn(n, d, generator=generator(1), dtype=torch.float64) * 2


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_scheduler_alpha_bar_is_diffusers_own(schedule):
    from diffusers import DDPMScheduler

    cfg = {"num_train_timesteps": 1000, "beta_schedule": schedule, "beta_start": 1e-4, "beta_end": 2e-2}
    if schedule == "scaled_linear":
        cfg.update(beta_start=0.00085, beta_end=0.012)
    ours = external.scheduler_alpha_bar(cfg)
    theirs = DDPMScheduler(**cfg).alphas_cumprod.double().numpy()
    # diffusers keeps float32 products: compare the OU times, t_k = -1/2 log abar_k
    np.testing.assert_allclose(ou_time(ours), ou_time(theirs), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_discrete_predictions_convert_to_the_exact_score(prediction):
    """An oracle network of a discrete (linear) schedule that predicts eps, v or x0 from the
    exact mixture score: its converted score is the exact score at any OU time."""
    exact = mixture()
    clock = external.DiscreteTime(external.scheduler_alpha_bar({"beta_schedule": "linear"}))

    def oracle(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        t = clock.time(float(step[0]))
        alpha, s = math.exp(-t), math.sqrt(delta(t))
        f = exact(x.double(), t)
        eps = -s * f
        x0 = (x + s * s * f) / alpha
        return {"epsilon": eps, "v_prediction": alpha * eps - s * x0, "sample": x0}[prediction]

    score = external.DiscreteScore(oracle, (16,), clock, prediction)
    x = _x()
    worst = 0.0
    for t in TIMES:
        f = exact(x, t)
        worst = max(worst, float((score(x, t) - f).abs().max() / f.abs().max()))
    assert worst < 1e-5, worst  # float32 precision: the network runs in float32
    with pytest.raises(InputError, match="beyond the model's last step"):
        score(x, clock.t_max + 0.1)


def test_discrete_steps_are_diffusers_noise_levels():
    """Step k of the clock is the OU time at which diffusers' add_noise puts x_k, and its
    get_velocity is the v of our conversion."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    clock = external.DiscreteTime(external.scheduler_alpha_bar(dict(sched.config)))
    x0, eps = torch.randn(8, 16, generator=generator(2)), torch.randn(8, 16, generator=generator(3))
    for k in (0, 10, 500, 999):
        t = clock.time(k)
        assert clock.step(t) == pytest.approx(k)
        steps = torch.full((8,), k)
        torch.testing.assert_close(sched.add_noise(x0, eps, steps), forward_noise(x0, t, eps), rtol=1e-5, atol=1e-5)
        alpha, s = math.exp(-t), math.sqrt(delta(t))
        torch.testing.assert_close(sched.get_velocity(x0, eps, steps), alpha * eps - s * x0, rtol=1e-5, atol=1e-5)


def test_edm_coefficients_are_karras_table_1():
    """Against the formulas of Karras et al. (2022), Table 1, written out here."""
    sigma, sd = 0.8, 0.5
    expected_edm = (sd**2 / (sigma**2 + sd**2), sigma * sd / math.sqrt(sigma**2 + sd**2),
                    1 / math.sqrt(sigma**2 + sd**2), math.log(sigma) / 4)
    assert external.edm_coefficients(sigma, "edm") == pytest.approx(expected_edm)
    assert external.edm_coefficients(sigma, "ve") == pytest.approx((1.0, sigma, 1.0, math.log(sigma / 2)))
    c_skip, c_out, c_in, c_noise = external.edm_coefficients(sigma, "vp")
    assert (c_skip, c_out, c_in) == pytest.approx((1.0, -sigma, 1 / math.sqrt(sigma**2 + 1)))
    t_vp = c_noise / 999  # c_noise = (M - 1) sigma^{-1}(sigma), sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)
    assert math.sqrt(math.expm1(0.5 * 19.9 * t_vp**2 + 0.1 * t_vp)) == pytest.approx(sigma)


@pytest.mark.parametrize("preconditioning", ["edm", "ve", "vp", "denoiser"])
def test_edm_denoisers_convert_to_the_exact_score(preconditioning):
    """D(x_VE; sigma) of the mixture (Tweedie in the VE scale), as a denoiser or as the raw
    network of a preconditioning: the OU score is exact at any time."""
    exact = mixture()

    def denoiser(y: torch.Tensor, sigma: float) -> torch.Tensor:
        t = 0.5 * math.log1p(sigma**2)
        x = y.double() * math.exp(-t)
        return math.exp(t) * (x + delta(t) * exact(x, t))

    def raw(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = sigma_of[float(c_noise[0])]
        c_skip, c_out, c_in, _ = external.edm_coefficients(sigma, preconditioning)
        y = x_in / c_in
        return (denoiser(y, sigma) - c_skip * y) / c_out

    sigma_of = {}
    for t in TIMES:  # the raw oracle recovers sigma from c_noise
        sigma = math.sqrt(math.expm1(2 * t))
        if preconditioning != "denoiser":
            sigma_of[external.edm_coefficients(sigma, preconditioning)[3]] = sigma
    net = (lambda y, s: denoiser(y, float(s[0]))) if preconditioning == "denoiser" else raw
    score = external.DenoiserScore(net, (16,), preconditioning)
    x = _x()
    worst = max(float((score(x, t) - exact(x, t)).abs().max() / exact(x, t).abs().max()) for t in TIMES)
    assert worst < 1e-5, worst


def test_entry_points_and_their_errors(tmp_path):
    (tmp_path / "mine.py").write_text(textwrap.dedent("""
        import torch

        def make(d=4):
            return (lambda x, t: -x), (d,)

        def wrong():
            return 3
    """))
    score = external.external_score({"kind": "python", "entry": f"{tmp_path}/mine.py:make", "options": {"d": 4}}, 4)
    assert torch.equal(score(torch.ones(2, 4), 1.0), -torch.ones(2, 4))
    with pytest.raises(InputError, match="shape \\(4,\\), but the data have d = 5"):
        external.external_score({"kind": "python", "entry": f"{tmp_path}/mine.py:make"}, 5)
    with pytest.raises(InputError, match="must return \\(score, shape\\)"):
        external.external_score({"kind": "python", "entry": f"{tmp_path}/mine.py:wrong"}, 4)
    with pytest.raises(InputError, match="cannot load it"):
        external.external_score({"kind": "python", "entry": f"{tmp_path}/none.py:make"}, 4)
    (tmp_path / "broken.py").write_text("undefined_name + 1\n")
    with pytest.raises(InputError, match="cannot load it \\(NameError"):
        external.external_score({"kind": "python", "entry": f"{tmp_path}/broken.py:make"}, 4)
    with pytest.raises(InputError, match="failed with options .* \\(TypeError"):
        external.external_score({"kind": "python", "entry": f"{tmp_path}/mine.py:make", "options": {"e": 1}}, 4)
    with pytest.raises(InputError, match="no scheduler_config.json"):
        external.external_inputs({"kind": "diffusers", "path": str(tmp_path)})


def test_u_turns_of_the_mixture_follow_the_closed_form():
    """phi_U(t) of the exact score from population points, against gm_phi, within 3 s.e."""
    d, n = 64, 1500
    exact = mixture(d)
    labels = (torch.rand(n, generator=generator(5)) < 0.5).long()
    sign = 1.0 - 2.0 * labels.double()
    points = (sign[:, None] + torch.randn(n, d, generator=generator(6), dtype=torch.float64)).float()
    sampler = Sampler.from_config({"method": "heun", "grid": "log_snr", "steps": 60, "T": 6.0, "t_end": 1e-3})
    t_S = 0.5 * math.log(d + 1.0)
    times, kept = u_turn(exact, sampler, points, np.array([0.5, 0.8, 1.0, 1.2, 1.6]) * t_S,
                         lambda x: (x.sum(1) < 0).long(), seed=7, batch=512)
    assert np.array_equal((points.sum(1) < 0).long().numpy(), labels.numpy())  # the labeller's c is the class
    phi = kept.mean(1)
    se = np.sqrt(phi * (1 - phi) / n).clip(1e-3)
    theory = gm_phi(times, math.sqrt(d), 1.0)
    assert np.all(np.abs(phi - theory) <= 3 * se), (phi, theory, se)
    assert phi[0] > 0.99 and phi[-1] < 0.75  # kept below t_S, lost above it


def tiny_diffusers_model(folder, data: np.ndarray, steps: int = 30) -> None:
    """The README's example model (examples/train_diffusers_digits.py), tiny: a UNet2DModel
    trained a few steps with diffusers' own DDPMScheduler, saved with save_pretrained."""
    spec = importlib.util.spec_from_file_location("train_diffusers_digits",
                                                  ROOT / "examples" / "train_diffusers_digits.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    images = torch.as_tensor(data, dtype=torch.float32).view(-1, 1, 16, 16)
    example.train(images, folder, steps, batch_size=16, width=4, progress=False)


def test_bad_diffusers_folders_give_one_line(tmp_path):
    import pickle

    tiny_diffusers_model(tmp_path / "m", np.zeros((4, 256), np.float32), steps=1)
    weights = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"not safetensors at all")
    with pytest.raises(InputError, match="not a readable safetensors file") as err:
        external.load_diffusers(tmp_path / "m")
    assert "\n" not in str(err.value)
    weights.unlink()  # a .bin holding a pickle payload is refused, never run

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    (tmp_path / "m" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(InputError, match="diffusion_pytorch_model.bin"):
        external.load_diffusers(tmp_path / "m")


def edited_diffusers_model(folder, edit) -> None:
    """A tiny diffusers model whose config.json and scheduler_config.json ``edit(model, scheduler)``
    changes (in place, as dicts)."""
    import json

    tiny_diffusers_model(folder, np.zeros((4, 256), np.float32), steps=1)
    model_cfg, sched_cfg = folder / "config.json", folder / "scheduler_config.json"
    m, sch = json.loads(model_cfg.read_text()), json.loads(sched_cfg.read_text())
    edit(m, sch)
    model_cfg.write_text(json.dumps(m))
    sched_cfg.write_text(json.dumps(sch))


@pytest.mark.parametrize("edit, words", [
    (lambda m, s: s.update(rescale_betas_zero_snr=True), "rescale_betas_zero_snr is not supported"),
    (lambda m, s: [s.pop("beta_schedule"), s.update(_class_name="ScoreSdeVeScheduler")], "has no beta schedule"),
    (lambda m, s: m.update(time_embedding_type="fourier"), "time_embedding_type fourier"),
    (lambda m, s: m.update(num_class_embeds=10), "class-conditional"),
    (lambda m, s: m.update(out_channels=2), "out_channels 2 != in_channels 1"),
])
def test_diffusers_models_that_would_be_misread_are_refused(tmp_path, edit, words):
    edited_diffusers_model(tmp_path / "m", edit)
    with pytest.raises(InputError, match=words) as err:
        external.load_diffusers(tmp_path / "m")
    assert "\n" not in str(err.value)


WRONG_TYPES = [  # (edit of config.json / scheduler_config.json, the file named, words)
    (lambda m, s: s.update(num_train_timesteps=0), "scheduler_config.json", "num_train_timesteps is 0"),
    (lambda m, s: s.update(num_train_timesteps="1000"), "scheduler_config.json", "not an integer >= 2"),
    (lambda m, s: s.update(trained_betas="abc"), "scheduler_config.json", "trained_betas is not a list"),
    (lambda m, s: s.update(trained_betas=[0.1, 0.2]), "scheduler_config.json", "has 2 values"),
    (lambda m, s: s.update(beta_end=1.5), "scheduler_config.json", "beta_end is 1.5, not a number in (0, 1)"),
    (lambda m, s: s.update(beta_start=0.5, beta_end=0.1), "scheduler_config.json", "exceeds beta_end"),
    (lambda m, s: s.update(beta_schedule=3), "scheduler_config.json", "beta_schedule 3 is not one of"),
    (lambda m, s: s.update(prediction_type="banana"), "scheduler_config.json", "'banana' is not one of"),
    (lambda m, s: m.update(sample_size="16"), "config.json", "sample_size is '16'"),
    (lambda m, s: m.update(in_channels=1.5), "config.json", "in_channels is 1.5"),
    (lambda m, s: m.update(_class_name="UNet2DConditionModel"), "config.json", "not a UNet2DModel"),
]


@pytest.mark.parametrize("edit, file, words", WRONG_TYPES)
def test_diffusers_configs_of_wrong_types_are_refused_at_validation_and_load(tmp_path, edit, file, words):
    """Family 5: valid JSON with wrong types or ranges is one line naming the file, from the
    config validation (check-config, the workflow) and from the loader, before any job."""
    from diffusion_regimes.config import ConfigError, validate_config

    edited_diffusers_model(tmp_path / "m", edit)
    ext = {"kind": "diffusers", "path": str(tmp_path / "m")}
    cfg = {"experiments": {"d": {"dataset": {"source": "sklearn_digits", "classes": [1, 8], "size": 16},
                                 "scores": ["external"], "external": ext}}}
    for call, error in ((lambda: validate_config(cfg), ConfigError),
                        (lambda: external.load_diffusers(tmp_path / "m"), InputError)):
        with pytest.raises(error) as err:
            call()
        assert f"m/{file}: " in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


def test_check_config_on_a_broken_model_folder_is_one_line(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    tiny_diffusers_model(tmp_path / "m", np.zeros((4, 256), np.float32), steps=1)
    sched_cfg = tmp_path / "m" / "scheduler_config.json"
    sched_cfg.write_text(json.dumps({**json.loads(sched_cfg.read_text()), "trained_betas": "abc"}))
    (tmp_path / "c.yaml").write_text(json.dumps({"experiments": {"d": {
        "dataset": {"source": "sklearn_digits", "classes": [1, 8], "size": 16}, "scores": ["external"],
        "external": {"kind": "diffusers", "path": str(tmp_path / "m")}}}}))
    cli = str(Path(sys.executable).parent / "diffusion-regimes")
    proc = subprocess.run([cli, "check-config", str(tmp_path / "c.yaml")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "scheduler_config.json: trained_betas is not a list" in proc.stderr


def test_sampler_outside_the_models_steps_is_refused_at_validation(tmp_path):
    import json

    from diffusion_regimes.config import ConfigError, validate_config

    tiny_diffusers_model(tmp_path / "m", np.zeros((4, 256), np.float32), steps=1)
    sched_cfg = tmp_path / "m" / "scheduler_config.json"
    sched_cfg.write_text(json.dumps({**json.loads(sched_cfg.read_text()), "beta_schedule": "scaled_linear",
                                     "beta_start": 0.00085, "beta_end": 0.012}))  # Stable Diffusion's: t_max 2.68
    ext = {"kind": "diffusers", "path": str(tmp_path / "m")}
    cfg = {"experiments": {"d": {"dataset": {"source": "sklearn_digits", "classes": [1, 8], "size": 16},
                                 "scores": ["external"], "external": ext}}}
    with pytest.raises(ConfigError, match="experiments.d.network_sampler: its grid .* leaves the model's steps"):
        validate_config(cfg)
    cfg["experiments"]["d"]["network_sampler"] = {"T": 2.5}
    assert validate_config(cfg)["experiments"]["d"]["network_sampler"]["T"] == 2.5


@pytest.mark.slow
def test_a_diffusers_model_measured_through_the_workflow(tmp_path):
    from workflow_api import snakemake

    from diffusion_regimes.data import make_subset
    from diffusion_regimes.io import read_table

    dataset = {"source": "sklearn_digits", "classes": [1, 8], "size": 16, "holdout": 0.5}
    table, *_ = make_subset(dataset, generator(0))
    model_dir = tmp_path / "model"
    tiny_diffusers_model(model_dir, np.stack(table.column("x").to_numpy(zero_copy_only=False)))
    # the weights load through safetensors, never through pickle
    assert (model_dir / "diffusion_pytorch_model.safetensors").exists()
    score = external.load_diffusers(model_dir)
    assert score.shape == (1, 16, 16) and score.prediction.name == "epsilon"
    cfg = {"seed": 0, "experiments": {"digits": {
        "dataset": dataset, "scores": ["external"], "external": {"kind": "diffusers", "path": str(model_dir)},
        "network_sampler": {"steps": 20, "T": 5.0},
        "cloning": {"n_pairs": 16, "branch_times": [0.5, 1.0, 2.0], "n_bootstrap": 20},
        "collapse": {"n_trajectories": 8, "n_pairs": 8, "branch_times": [0.2, 0.5], "n_bootstrap": 20},
        "uturn": {"enabled": True, "n_points": 16, "branch_times": [0.5, 1.0, 2.0], "n_bootstrap": 20},
        "entropy": {"t_min": 0.05, "t_max": 2.0, "n_t": 4, "n_samples": 32}, "theory": {"n_t": 20},
        "classifier": {"epochs": 40, "min_accuracy": 0.5}}}}
    cfg_file = tmp_path / "external.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    made = snakemake(work, configfile=cfg_file)
    assert "results/digits/external/cloning.parquet" in made and "results/digits/external/uturn.parquet" in made
    clo, meta = read_table(work / "results/digits/external/cloning.parquet", stage="cloning")
    assert len(clo) == 3 and clo["phi"].between(0, 1).all() and meta["config"]["sampler"]["T"] == 5.0
    times, col = read_table(work / "results/digits/external/collapse_times.parquet", stage="collapse")
    assert (times["d1"] <= times["d2"]).all() and (times["memorised"] == (times["d1"] < times["d2"] / 3)).all()
    assert col["memorised_fraction"] == pytest.approx(times["memorised"].mean())
    assert col["memorised_fraction_null"] == pytest.approx(times["memorised_null"].mean())
    summ, _ = read_table(work / "results/summary.parquet", stage="summary")
    assert list(summ["score"]) == ["external"] and "t_U_measured" in summ
    turns, umeta = read_table(work / "results/digits/external/uturn.parquet", stage="uturn")
    assert list(turns["n_points"]) == [16] * 3 and turns["phi"].between(0, 1).all() and umeta["start"] == "training"
    # new weights re-run what uses the model, and nothing else
    tiny_diffusers_model(model_dir, np.stack(table.column("x").to_numpy(zero_copy_only=False)), steps=5)
    again = snakemake(work, dry=True, configfile=cfg_file)
    assert "results/digits/external/cloning.parquet" in again and "results/digits/spectrum.parquet" not in again
