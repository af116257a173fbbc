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
#: training steps of the diffusers model of the pixel-convention test: enough to denoise (its
#: denoising ratio at 1500 steps: 0.26 on its own scale, 1.12 on the other)
TRAIN_STEPS = 800


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
        "sanity": {"max_ratio": 1.5},  # a 30-step model reads about 1.07: the conversion's plumbing only
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


@pytest.mark.slow
def test_a_model_trained_on_minus_one_to_one_is_measured_on_its_own_scale(tmp_path):
    """Models trained on the digits in [-1, 1] uncentred (diffusers' usual convention) and in
    [0, 1] centred. A diffusers UNet2DModel trained on [-1, 1], measured without the option,
    stops at the sanity check with one line naming the option; with it, it passes. Then the
    same model trained on either scale (a class-conditional Gaussian fitted to the subset: a
    small diffusers model at a test's budget generates mostly one class, and cloning needs
    both) measures on each scale the speciation and U-turn times that the data of that scale
    predict (phi_G's crossing), and the same memorisation; Lambda is 4 times that of [0, 1]."""
    from test_bad_input import assert_one_line
    from test_bad_input import snakemake as snakemake_cli

    from diffusion_regimes.data import load_subset
    from diffusion_regimes.io import read_table

    base = {"source": "sklearn_digits", "classes": [1, 8], "size": 16, "holdout": 0.5, "split_seed": 0}
    pm1 = {**base, "pixel_range": [-1, 1], "centre": False}
    common = {"network_sampler": {"steps": 40, "T": 5.0},
              "cloning": {"n_pairs": 192, "branch_times": [0.4, 0.7, 1.0, 1.3, 1.6, 2.0], "n_bootstrap": 200},
              "collapse": {"n_trajectories": 64, "n_pairs": 8, "branch_times": [0.2, 0.5], "n_bootstrap": 100},
              "uturn": {"enabled": True, "n_points": 178, "branch_times": [0.4, 0.7, 1.0, 1.3, 1.6, 2.0],
                        "n_bootstrap": 200},
              "entropy": {"t_min": 0.05, "t_max": 2.0, "n_t": 4, "n_samples": 32}, "theory": {"n_t": 20},
              "classifier": {"epochs": 40, "min_accuracy": 0.9}}

    def config(name: str, experiments: dict) -> object:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"seed": 0, "experiments": {
            exp: {**common, "dataset": dataset, "scores": ["external"], "external": external}
            for exp, (dataset, external) in experiments.items()}}))
        return path

    work = tmp_path / "work"
    work.mkdir()
    runs = {"zero_one": base, "minus_one": pm1}
    # the subsets to train on, as a user makes them (a config that names no model yet: with the
    # split seed, the same split as the experiments that measure the models)
    cfg = tmp_path / "subsets.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 0, "experiments": {
        exp: {"dataset": dataset, "scores": ["empirical"]} for exp, dataset in runs.items()}}))
    proc = snakemake_cli(work, *(f"results/{exp}/data.parquet" for exp in runs), configfile=cfg)
    assert proc.returncode == 0, proc.stderr[-2000:]
    x, _, _ = load_subset(str(work / "results/minus_one/data.parquet"))
    assert -1.0 <= float(x.min()) < -0.9 and 0.9 < float(x.max()) <= 1.0  # uncentred, on [-1, 1]
    spec = importlib.util.spec_from_file_location("train_diffusers_digits",
                                                  ROOT / "examples" / "train_diffusers_digits.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.train(x.view(-1, 1, 16, 16), tmp_path / "mpm1", steps=TRAIN_STEPS, batch_size=32, width=8, progress=False)
    example.write_training_data(tmp_path / "mpm1", work / "results/minus_one/data.parquet")
    diffusers = {"kind": "diffusers", "path": str(tmp_path / "mpm1")}
    # without the option: one line at the sanity check, naming the options to set
    proc = snakemake_cli(work, "results/wrong/external/sanity.parquet",
                         configfile=config("wrong", {"wrong": (base, diffusers)}))
    assert_one_line(proc, "wrong/external: denoising", "set dataset.pixel_range: [-1.0, 1.0] and dataset.centre: false")
    assert not list(work.glob("results/wrong/external/*.parquet"))
    # with it: the check passes, with the model's provenance and no overlap with the reference set;
    # "other" measures it on a split drawn from another name: its training images are in that reference set
    other = {k: v for k, v in pm1.items() if k != "split_seed"}
    proc = snakemake_cli(work, "results/right/external/sanity.parquet", "results/other/external/sanity.parquet",
                         configfile=config("right", {"right": (pm1, diffusers), "other": (other, diffusers)}))
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, meta = read_table(work / "results/right/external/sanity.parquet", stage="sanity")
    assert meta["passed"] and meta["ratio_training"] < 1 and meta["training_reference_overlap"] == 0
    assert meta["provenance"]["weights_sha256"] and meta["provenance"]["prediction_type"] == "epsilon"
    _, meta = read_table(work / "results/other/external/sanity.parquet", stage="sanity")
    assert meta["training_reference_overlap"] > 0
    log = (work / "logs/other/external/sanity.log").read_text()
    assert f"{meta['training_reference_overlap']} of the 178 images the model records it was trained on" in log
    # the same model trained on each scale measures the same regimes
    (tmp_path / "fitted.py").write_text(textwrap.dedent("""
        import math
        import torch
        from diffusion_regimes.data import load_subset

        class FittedGaussians:
            # class-conditional Gaussians fitted to a training subset: mean and covariance per class
            def __init__(self, data):
                x, labels, _ = load_subset(data)
                x = x.double()
                labels = torch.as_tensor(labels)
                self.means, self.vals, self.vecs, self.logw = [], [], [], []
                for c in labels.unique():
                    xc = x[labels == c]
                    m = xc.mean(0)
                    vals, vecs = torch.linalg.eigh((xc - m).T @ (xc - m) / len(xc))
                    self.means.append(m); self.vals.append(vals.clamp_min(0)); self.vecs.append(vecs)
                    self.logw.append(math.log(len(xc) / len(x)))

            def __call__(self, x, t):
                xd, e, dt = x.double(), math.exp(-t), -math.expm1(-2 * t)
                logits, grads = [], []
                for m, vals, vecs, logw in zip(self.means, self.vals, self.vecs, self.logw):
                    g = vals * e * e + dt
                    y = (xd - m * e) @ vecs
                    logits.append(logw - 0.5 * torch.log(g).sum() - 0.5 * (y * y / g).sum(1))
                    grads.append(-(y / g) @ vecs.T)
                w = torch.softmax(torch.stack(logits, 1), 1)
                return (w[:, :, None] * torch.stack(grads, 1)).sum(1).to(x.dtype)

        def fitted(data):
            return FittedGaussians(data), (1, 16, 16)
    """))
    fitted = {exp: {"kind": "python", "entry": f"{tmp_path}/fitted.py:fitted",
                    "options": {"data": str(work / f"results/{exp}/data.parquet")}} for exp in runs}
    proc = snakemake_cli(work, "results/summary.parquet",
                         configfile=config("both", {exp: (runs[exp], fitted[exp]) for exp in runs}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summ, _ = read_table(work / "results/summary.parquet", stage="summary")
    rows = {r.experiment: r for r in summ.itertuples()}
    a, b = rows["zero_one"], rows["minus_one"]
    assert b.Lambda == pytest.approx(4 * a.Lambda, rel=1e-4)
    assert b.t_S_theory == pytest.approx(a.t_S_theory + 0.5 * math.log(4), rel=1e-4)
    # each against the reference from its own data (phi_G: the class-conditional Gaussians of the
    # subset, this model's exact phi); the OU noise is not scale-free, so ½ log 4 is only roughly
    # the shift between the scales (1.175 - 0.482 for ½ log Lambda, 0.815 - 0.355 for phi_G)
    for col in ("t_S_measured", "t_U_measured"):
        da, db = getattr(a, col) - a.t_S_gaussian, getattr(b, col) - b.t_S_gaussian
        se = math.hypot(getattr(a, f"{col}_se"), getattr(b, f"{col}_se"), a.t_S_gaussian_se, b.t_S_gaussian_se)
        assert abs(da - db) < 3 * se + 0.02, (col, da, db, se)
        for r in (a, b):
            gap = abs(getattr(r, col) - r.t_S_gaussian)
            assert gap < 3 * math.hypot(getattr(r, f"{col}_se"), r.t_S_gaussian_se) + 0.02, (col, r.experiment)
    se = math.hypot(a.memorised_fraction_se, b.memorised_fraction_se)
    assert abs(a.memorised_fraction - b.memorised_fraction) <= 3 * se + 0.05
    for exp in runs:
        _, meta = read_table(work / f"results/{exp}/external/sanity.parquet", stage="sanity")
        assert meta["passed"] and meta["ratio_training"] < 1, (exp, meta["ratio_training"])
    assert a.model != b.model


def test_a_hub_id_resolves_from_the_local_cache_only(tmp_path, monkeypatch):
    """``external.path`` as a Hugging Face Hub id: its snapshot in the cache as the hub library
    lays it out (models--owner--name/refs/main -> snapshots/{commit}), nothing downloaded."""
    from diffusion_regimes.config import ConfigError, validate_config
    from diffusion_regimes.scoremodels.external import model_folder, model_provenance

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    entry = tmp_path / "hub" / "models--someone--digits-ddpm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = entry / "snapshots" / commit
    tiny_diffusers_model(tmp_path / "saved", np.zeros((4, 256), np.float32), steps=1)
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "scheduler").mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):  # the hub keeps blobs behind links
        blob = entry / "blobs" / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes((tmp_path / "saved" / name).read_bytes())
        (snapshot / "unet" / name).symlink_to(blob)
    sched = (tmp_path / "saved" / "scheduler_config.json").read_text()
    (snapshot / "scheduler" / "scheduler_config.json").write_text(sched)
    cfg = {"experiments": {"d": {"dataset": {"source": "sklearn_digits", "classes": [1, 8], "size": 16},
                                 "scores": ["external"], "network_sampler": {"T": 5.0},
                                 "external": {"kind": "diffusers", "path": "someone/digits-ddpm"}}}}
    with pytest.raises(ConfigError, match="someone/digits-ddpm is not a folder, nor a Hugging Face Hub id in the "
                       "local cache .* no snapshot for 'main'"):  # no ref yet
        validate_config(yaml.safe_load(yaml.safe_dump(cfg)))
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit + "\n")
    assert model_folder("someone/digits-ddpm") == snapshot and model_folder(f"someone/digits-ddpm@{commit}") == snapshot
    validate_config(yaml.safe_load(yaml.safe_dump(cfg)))
    found = model_provenance(cfg["experiments"]["d"]["external"])
    assert found["hub_id"] == "someone/digits-ddpm" and found["path"] == str(snapshot.resolve())
    assert found["id"].startswith("someone/digits-ddpm sha256:")
    score = external.load_diffusers("someone/digits-ddpm")
    assert score.shape == (1, 16, 16)
    # describe-model describes the external model itself
    from diffusion_regimes.cli import describe_model

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    text = describe_model(str(tmp_path / "c.yaml"), "d")
    assert text.startswith("# d: external, a model trained elsewhere (diffusers)")
    assert "sample shape (1, 16, 16) (d = 256; the dataset block gives d = 256)" in text
    assert "prediction epsilon, schedule DDPMScheduler linear betas 0.0001 ... 0.02 over 1000 steps" in text
    assert "valid OU times [5e-05, 5.059]; the network sampler's grid [0.001, 5]" in text
    assert "parameters: " in text and "U-Net" not in text
    with pytest.raises(InputError, match="someone/digits-ddpm@v2 is not a folder"):
        model_folder("someone/digits-ddpm@v2")


@pytest.mark.slow
def test_two_external_models_in_one_experiment_keep_their_own_results(tmp_path):
    """external.models: {a: ..., b: ...} are the score models external_a and external_b, each
    measured on the same subset into its own results folder, with its own provenance."""
    from test_bad_input import snakemake as snakemake_cli

    from diffusion_regimes.config import ConfigError, validate_config
    from diffusion_regimes.io import read_table

    (tmp_path / "models.py").write_text(textwrap.dedent("""
        import torch
        from diffusion_regimes.scores import GaussianMixtureScore

        def mixture(d, mu):
            return GaussianMixtureScore(torch.full((d,), float(mu)), 1.0), (d,)
    """))
    entry = f"{tmp_path}/models.py:mixture"
    cfg = {"seed": 0, "experiments": {"g": {
        "dataset": {"source": "gaussian_mixture", "d": 16, "n": 200}, "scores": ["external_a", "external_b"],
        "external": {"models": {"a": {"kind": "python", "entry": entry, "options": {"d": 16, "mu": 1.0}},
                                "b": {"kind": "python", "entry": entry, "options": {"d": 16, "mu": 0.6}}}},
        "network_sampler": {"steps": 30, "T": 5.0},
        # model b's own t_S (0.96) is 0.67 of the data's (1.42): branch times reach below it
        "cloning": {"n_pairs": 128, "branch_times": [0.25, 0.5, 1.0, 1.5], "n_bootstrap": 50},
        "collapse": {"n_trajectories": 16, "n_pairs": 8, "branch_times": [0.2, 0.5], "n_bootstrap": 20},
        "entropy": {"t_min": 0.1, "t_max": 2.0, "n_t": 3, "n_samples": 32}, "theory": {"n_t": 20}}}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake_cli(work, "results/summary.parquet", configfile=path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summ, _ = read_table(work / "results/summary.parquet", stage="summary")
    assert list(summ["score"]) == ["external_a", "external_b"]
    metas = {s: read_table(work / f"results/g/{s}/cloning.parquet", stage="cloning")[1] for s in summ["score"]}
    assert metas["external_a"]["provenance"]["options"] == {"d": 16, "mu": 1.0}
    assert metas["external_b"]["provenance"]["options"] == {"d": 16, "mu": 0.6}
    assert summ["model"].str.contains("models.py:mixture sha256:").all()
    for s in summ["score"]:
        for name in ("sanity.parquet", "collapse_times.parquet", "phi_c.parquet"):
            assert (work / f"results/g/{s}/{name}").exists(), (s, name)
    # the model whose centres are 0.6 instead of 1 speciates later in generation (smaller t_S)
    assert summ["t_S_measured"].iloc[1] < summ["t_S_measured"].iloc[0]
    bad = yaml.safe_load(path.read_text())
    bad["experiments"]["g"]["scores"] = ["external_c"]
    with pytest.raises(ConfigError, match=r"experiments.g.scores: score model 'external_c' needs external.models.c "
                       r"\(the model's block; labels given: \['a', 'b'\]\)"):
        validate_config(bad)
    bad["experiments"]["g"]["scores"] = ["external-c"]
    with pytest.raises(ConfigError, match=r"experiments.g.scores.0: 'external-c' is not one of \["):
        validate_config(bad)
