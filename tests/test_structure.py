"""The code base's structure: one owner per concept, a torch-free configuration layer,
data models as a registry (a plugin source through the whole DAG), seeding, shipped
schema, one list of dependencies."""

import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tomllib
import torch
import yaml
from packaging.requirements import Requirement
from workflow_api import QUICK_ENV, ROOT, snakemake

from diffusion_regimes import datamodels
from diffusion_regimes.cloning import agreement_table
from diffusion_regimes.config import ConfigError, load_schema, validate_config
from diffusion_regimes.io import read_metadata, read_table
from diffusion_regimes.networks import EpsilonModel, load_network, save_network
from diffusion_regimes.theory import PHI_AT_T_S

SRC = ROOT / "src" / "diffusion_regimes"
TOY = ROOT / "tests" / "plugins" / "toy_source.py"
TOY_SCORE = ROOT / "tests" / "plugins" / "toy_score.py"


def _sources() -> dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text() for p in SRC.rglob("*.py")}


def _where(pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return sorted(name for name, text in _sources().items() if rx.search(text))


@pytest.mark.parametrize("with_plugin", [False, True])
def test_config_layer_and_dag_evaluation_do_not_import_torch(tmp_path, with_plugin):
    code = ("import sys; import diffusion_regimes.config, diffusion_regimes.paths, diffusion_regimes.datamodels, "
            "diffusion_regimes.schedule; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    extra = {}  # a plugin data model and a plugin score model beside the built-in ones
    if with_plugin:
        extra = {"plugins": [str(TOY), str(TOY_SCORE)], "experiments": {"toy": {
            "dataset": {"source": "axis_mixture", "d": 8, "n": 100}, "scores": ["exact", "toy_net"]}}}
    dag = (  # evaluating the whole DAG of the default config (what every cluster job does first)
        "import sys\n"
        "from pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, "
        "ResourceSettings\n"
        f"root = Path({str(ROOT)!r})\n"
        "with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:\n"
        "    wf = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings("
        f"configfiles=[root / 'config/config.yaml'], config={extra!r}), snakefile=root / 'Snakefile', "
        f"workdir=Path({str(tmp_path)!r}))\n"
        "    wf.dag(DAGSettings()).execute_workflow(pseudo_executor='dryrun')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", dag], check=True, capture_output=True, env=QUICK_ENV)


def test_the_noise_convention_is_one_convention():
    """Behaviour, not text: the forward process, the exact score, a network's noise
    prediction and every prediction type agree on one convention, x_t = a e^{-t} +
    sqrt(Delta_t) eps with F = -eps / sqrt(Delta_t) and c_noise = time_scale * t."""
    from diffusion_regimes.networks import DEFAULT_TIME_SCALE, NetworkScore, predicted_noise
    from diffusion_regimes.predictions import PREDICTIONS
    from diffusion_regimes.schedule import delta, forward_noise, gamma
    from diffusion_regimes.scores import GaussianMixtureScore

    gen = torch.Generator().manual_seed(0)
    sigma, d = 0.5, 4
    a = sigma * torch.randn(20000, d, generator=gen)
    exact = GaussianMixtureScore(torch.zeros(d), sigma)  # N(0, sigma^2 I)

    class Optimal(torch.nn.Module):  # E[eps | x_t] for N(0, sigma^2 I), t read from c_noise
        def forward(self, x, c_noise):
            t = (c_noise / DEFAULT_TIME_SCALE).double()
            dt = -torch.expm1(-2 * t)
            return (torch.sqrt(dt) / (dt + sigma**2 * torch.exp(-2 * t)))[:, None].float() * x

    net = NetworkScore(EpsilonModel(Optimal(), (d,)), device="cpu")
    for t in (0.05, 0.5, 2.0):
        eps = torch.randn(a.shape, generator=gen)
        xt = forward_noise(a, torch.full((len(a),), t), eps)
        assert float(xt.var()) == pytest.approx(gamma(t, sigma), rel=0.03)  # Gamma_t = Delta_t + sigma^2 e^{-2t}
        torch.testing.assert_close(xt, a * math.exp(-t) + math.sqrt(delta(t)) * eps)
        torch.testing.assert_close(net(xt[:64], t), exact(xt[:64], t), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(predicted_noise(exact, xt[:64], t), predicted_noise(net, xt[:64], t),
                                   rtol=1e-4, atol=1e-5)
        for kind in PREDICTIONS.values():  # each prediction type's target converts back to the noise
            torch.testing.assert_close(kind.to_eps(kind.target(a[:64], eps[:64], t), xt[:64], t), eps[:64],
                                       rtol=1e-4, atol=1e-4)


def _call(text: str, open_paren: int) -> str:
    """The text of a call from its opening parenthesis to the matching closing one."""
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren:i + 1]
    return text[open_paren:]


def test_every_random_draw_goes_through_seeding():
    assert _where(r"Generator\(\)|manual_seed\(|default_rng\(|np\.random\.\w+\(|torch\.seed\(") == ["seeding.py"]
    assert _where(r"derive_seed\([^)]*\"") == []  # stream names are Stream members, not free strings
    draws = re.compile(r"torch\.(randn|rand|randint|randperm|multinomial|normal|bernoulli|poisson)\(")
    for name, text in _sources().items():  # every draw names its generator (none uses the global one)
        for m in draws.finditer(text):
            call = _call(text, m.end() - 1)
            assert "generator=" in call, (name, call[:100])


def test_stages_are_wiring():
    """One stage module per rule file, each short, reading, calling one library function and
    writing: no file layout of its own, no source or score named, no statistic."""
    rules = {p.stem for p in (ROOT / "workflow/rules").glob("*.smk")} - {"common"}
    modules = {p.stem for p in (SRC / "stages").glob("*.py")} - {"__init__", "common"}
    assert modules == rules
    statistic = re.compile(r"\.mean\(|\.std\(|\.var\(|np\.(mean|std|sqrt|percentile|median)|math\.sqrt|"
                           r"bootstrap|replicate")
    for path in (SRC / "stages").glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 200, path.name
        assert "paths." not in text and "import paths" not in text, path.name  # stages read what the rule declares
        assert not statistic.search(text), (path.name, statistic.search(text).group())
        assert not re.search(r"\"(gaussian_mixture|hierarchical_mixture|curie_weiss|sklearn_digits)\"", text)
        assert not re.search(r"(==|!=|in) *\(?\"(exact|empirical|unet|mlp|external)\"", text), path.name
    for name in ("config.py", "data.py"):  # no ladder of sources by name outside the data models
        assert not re.search(r"source\s*==\s*\"", (SRC / name).read_text()), name
    for path in (ROOT / "workflow/rules").glob("*.smk"):  # the score-model registry decides, not the rules
        text = path.read_text()
        assert not re.search(r"wildcards\.score\s*(==|!=|in\b)|\"(exact|empirical|unet|mlp|external)\"", text), path


def test_summary_columns_are_declared_once():
    from diffusion_regimes import summary

    names = summary.columns()
    assert len(names) == len(set(names))
    declared = [name for _, cols in summary.SOURCES for name, _, _ in cols]
    for name in declared:  # each column declared (name, metadata key, dtype) once in the package
        assert len(_where(rf"\(\"{name}\", \"\w+\", (\"\w+\"|None)\)")) == 1, name


def test_one_phi_level_everywhere():
    assert PHI_AT_T_S == pytest.approx(0.77520, abs=1e-5)
    assert _where(r"0\.775") == ["theory.py"]  # only its docstring states the value
    for doc in ("README.md", "config/README.md", "docs/design.md", "docs/measurements.md", "docs/results.md"):
        text = (ROOT / doc).read_text()
        assert "0.775 " not in text and "0.7753" not in text, doc


def test_schema_ships_in_the_package_and_registry_matches_it():
    schema = load_schema()
    kinds = {n: e["x-kind"] for e in schema["$defs"]["datasets"].values()
             for n in ([e["properties"]["source"]["const"]] if "const" in e["properties"]["source"]
                       else e["properties"]["source"]["enum"])}
    models = {name: cls.kind for name, cls in datamodels.registered_models().items() if cls.__module__.startswith(
        "diffusion_regimes.")}
    assert kinds == models


def test_non_editable_install_runs_describe_model(tmp_path):
    """The package built as a wheel and installed elsewhere (not the source tree) finds its schema."""
    pkg = tmp_path / "pkg"  # a copy, so that the build leaves nothing in the source tree
    shutil.copytree(ROOT / "src", pkg / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, pkg / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(tmp_path / "site"), str(pkg)], check=True, capture_output=True)
    code = ("import diffusion_regimes, sys; from diffusion_regimes.cli import main; "
            f"assert diffusion_regimes.__file__.startswith({str(tmp_path / 'site')!r}), diffusion_regimes.__file__; "
            f"sys.exit(main(['describe-model', '--config', {str(ROOT / 'config/paper.yaml')!r}, "
            "'--experiment', 'cifar2', '--no-classifier']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "U-Net parameters: 25,636,483" in out.stdout


def test_dependencies_are_one_list():
    """pyproject's ranges are the list; constraints.txt pins versions inside them, and the conda
    files (environment.yml, the rules' runtime.yaml) name the same packages with the same bounds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    extras = {Requirement(r).name.lower(): Requirement(r) for group in project["optional-dependencies"].values()
              for r in group}
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    for name, req in {**deps, **extras}.items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req.specifier))
    conda_names = {"torch": "pytorch", "lmdb": "python-lmdb", "matplotlib": "matplotlib-base"}
    optional = project["optional-dependencies"]
    users = {**deps, **{Requirement(r).name.lower(): Requirement(r) for r in optional["test"] + optional["slurm"]}}
    for env_file, names in (("environment.yml", users), ("workflow/envs/runtime.yaml", {
            n: r for n, r in deps.items() if n != "snakemake"})):
        expected = {conda_names.get(n, n): str(r.specifier) for n, r in names.items()}
        listed = {}
        for item in yaml.safe_load((ROOT / env_file).read_text())["dependencies"]:
            if isinstance(item, str) and not item.startswith(("python=", "pip")):
                req = Requirement(item.replace("=", "==", 1) if re.match(r"^[\w-]+=[^=]", item) else item)
                listed[req.name.lower()] = str(req.specifier)
        assert {n: listed.get(n) for n in expected} == expected, env_file


def test_more_shards_than_blocks_are_refused_with_one_line():
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["experiments"]["digits"]["cloning"]["shards"] = 2  # 300 pairs in one block of 1024
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "experiments.digits.cloning.shards" in msg and "only 1 blocks" in msg and "\n" not in msg
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["experiments"]["gmm"]["entropy"]["shards"] = 41
    with pytest.raises(ConfigError, match="entropy.shards"):
        validate_config(cfg)


def test_bootstrap_replicates_without_a_crossing_are_counted():
    rng = np.random.default_rng(0)
    P = 40
    agree = np.stack([rng.random(P) < 0.80, rng.random(P) < 0.76])  # phi barely crosses the level
    table, scalars = agreement_table(np.array([1.0, 2.0]), agree, 400, 3)
    assert 0 < scalars["crossing_missed"] < 400 and math.isfinite(scalars["crossing_se"])
    full = np.ones((2, P), dtype=bool)  # never crosses: every replicate misses
    _, scalars = agreement_table(np.array([1.0, 2.0]), full, 50, 3)
    assert scalars["crossing_missed"] == 50 and math.isnan(scalars["crossing"])


def test_network_checkpoint_records_its_time_scale(tmp_path):
    class Raw(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, c_noise):
            return self.w * x + c_noise[:, None]

    from diffusion_regimes import scoremodels

    @scoremodels.register
    class RawTest(scoremodels.TrainedNetwork):
        name = "raw_test"

        @classmethod
        def input_shape(cls, shape):
            return tuple(shape)

        @classmethod
        def build_network(cls, settings, shape):
            return Raw()

    try:
        save_network(EpsilonModel(Raw(), (3,), time_scale=7.0), "raw_test", {}, {}, tmp_path / "n.pt")
        back = load_network(tmp_path / "n.pt")
    finally:
        del scoremodels.REGISTRY["raw_test"]
    assert back.time_scale == 7.0 and back.shape == (3,)
    x, t = torch.zeros(2, 3), torch.full((2,), 0.5)
    torch.testing.assert_close(back(x, t), torch.full((2, 3), 3.5))  # c_noise = 7 * 0.5


@pytest.mark.slow
def test_a_data_model_from_a_plugin_runs_the_whole_dag(tmp_path):
    """Adding a solvable data model is one class with its schema entry (tests/plugins/toy_source.py)."""
    cfg = {"seed": 1, "plugins": [str(TOY)], "experiments": {"toy": {
        "dataset": {"source": "axis_mixture", "d": 8, "n": 200, "m": 4.0},
        "scores": ["exact", "empirical"],
        "sampler": {"steps": 40, "T": 5.0},
        "cloning": {"n_pairs": 200, "branch_times": [0.5, 0.8, 1.0, 1.2, 1.5], "n_bootstrap": 50},
        "collapse": {"n_trajectories": 16, "n_pairs": 16, "branch_times": [0.2, 0.5], "n_bootstrap": 20},
        "entropy": {"t_min": 0.1, "t_max": 3.0, "n_t": 5, "n_samples": 64},
        "theory": {"n_t": 50},
        # 300 steps of a width-16 net denoise small noise worse than doing nothing (ratio 1.29
        # at 0.1 of the data's std): the sanity check would stop it, so its bound is raised
        "sanity": {"max_ratio": 2.0}}}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    made = snakemake(tmp_path / "work", configfile=tmp_path / "toy.yaml")
    assert "results/summary.parquet" in made and "results/figures/toy/phi.png" in made
    summary, _ = read_table(tmp_path / "work/results/summary.parquet")
    assert list(summary["score"]) == ["exact", "empirical"]
    t_S = 0.5 * math.log(17.0)  # Lambda = 1 + m^2
    exact = summary[summary["score"] == "exact"].iloc[0]
    assert exact["t_S_theory"] == pytest.approx(t_S, rel=0.15)
    assert exact["t_S_measured"] == pytest.approx(exact["t_S_theory"], abs=4 * exact["t_S_measured_se"] + 0.05)
    theory = read_metadata(tmp_path / "work/results/toy/theory.parquet")
    assert theory["model"] == "axis_mixture" and theory["Lambda_population"] == 17.0
    cfg["experiments"]["toy"]["dataset"]["mass"] = 1  # the plugin's schema entry is enforced
    with pytest.raises(ConfigError, match="unknown key 'mass' for source 'axis_mixture'"):
        validate_config(cfg)


@pytest.mark.slow
def test_a_score_model_from_a_plugin_runs_every_measurement(tmp_path):
    """Adding a score kind is one class (tests/plugins/toy_score.py, a small network trained
    by the workflow): cloning, collapse, U-turns and the memorisation study run on it with no
    other file touched."""
    cfg = {"seed": 2, "plugins": [str(TOY_SCORE)], "experiments": {"toy": {
        "dataset": {"source": "gaussian_mixture", "d": 8, "n": 64, "mu_tilde": 1.5},
        "scores": ["toy_net"],
        "toy_net": {"width": 16},
        "network_sampler": {"steps": 30, "T": 4.0},
        "train": {"steps": 300, "batch_size": 64, "lr": 0.003},
        "cloning": {"n_pairs": 128, "branch_times": [0.3, 0.6, 1.0, 1.5, 2.5], "n_bootstrap": 50},
        "collapse": {"n_trajectories": 16, "n_pairs": 16, "branch_times": [0.2, 0.5], "n_bootstrap": 20},
        "uturn": {"enabled": True, "n_points": 64, "branch_times": [0.3, 0.6, 1.0, 1.5, 2.5], "n_bootstrap": 50},
        "entropy": {"t_min": 0.1, "t_max": 3.0, "n_t": 5, "n_samples": 64},
        "memorisation": {"enabled": True, "score": "toy_net", "first_step": 100, "per_decade": 2,
                         "n_samples": 32, "loss_points": 64, "n_show": 4},
        "theory": {"n_t": 50},
        # 300 steps of a width-16 net denoise small noise worse than doing nothing (ratio 1.29
        # at 0.1 of the data's std): the sanity check would stop it, so its bound is raised
        "sanity": {"max_ratio": 2.0}}}}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(cfg))
    made = snakemake(tmp_path / "work", configfile=tmp_path / "toy.yaml")
    for out in ("results/toy/toy_net/cloning.parquet", "results/toy/toy_net/collapse_times.parquet",
                "results/toy/toy_net/uturn.parquet", "results/toy/toy_net/memorisation.parquet",
                "results/figures/toy/memorisation.png", "results/summary.parquet"):
        assert out in made, out
    summary, _ = read_table(tmp_path / "work/results/summary.parquet")
    row = summary[summary["score"] == "toy_net"].iloc[0]
    for col in ("t_S_measured", "t_U_measured", "t_C_measured", "memorised_fraction"):
        assert math.isfinite(row[col]), col
    curve, meta = read_table(tmp_path / "work/results/toy/toy_net/memorisation.parquet")
    assert list(curve["step"]) == [100, 300] and curve["loss_heldout"].notna().all()
    model = load_network(tmp_path / "work/results/toy/models/toy_net.pt")
    assert model.record("toy_net", {})["arch"] == "toy_net" and len(model.net.state_dict()) == 4
    cfg["experiments"]["toy"]["toy_net"]["depth"] = 2  # the plugin's schema of its block is enforced
    with pytest.raises(ConfigError, match="unknown key 'depth'"):
        validate_config(cfg)
