import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from diffusion_regimes import __version__
from diffusion_regimes.config import ConfigError, load_config, validate_config
from diffusion_regimes.io import InputError, load_checkpoint, make_metadata, read_table, save_checkpoint, write_table

ROOT = Path(__file__).resolve().parents[1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_table_roundtrip_with_metadata(tmp_path):
    df = pd.DataFrame({"t": [0.1, 0.2], "phi": [0.9, 0.6]})
    write_table(df, tmp_path / "a.parquet", make_metadata("test", {"k": 1}, 5, {"x": float("nan"), "y": 2}))
    back, meta = read_table(tmp_path / "a.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert meta == {"stage": "test", "version": __version__, "config": {"k": 1}, "seed": 5,
                    "threads": torch.get_num_threads(), "x": None, "y": 2}
    assert oct((tmp_path / "a.parquet").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert not list(tmp_path.glob(".*tmp"))


def test_corrupt_and_unsafe_checkpoints_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError) as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value) and "bad.pt" in str(err.value)

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(InputError, match="unsafe.pt"):
        load_checkpoint(unsafe)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint({"a": torch.ones(2)}, tmp_path / "ok.pt")
    with pytest.raises(InputError, match="lacks keys"):
        load_checkpoint(tmp_path / "ok.pt", required=("state_dict",))


def test_partial_blocks_keep_their_own_defaults():
    cfg = yaml.safe_load((ROOT / "tests/tiny_config.yaml").read_text())
    cfg["experiments"]["digits"]["network_sampler"] = {"steps": 50}
    ns = validate_config(cfg)["experiments"]["digits"]["network_sampler"]
    assert (ns["method"], ns["grid"], ns["steps"], ns["T"]) == ("heun", "log_snr", 50, 5.0)  # its own default T
    assert validate_config(cfg)["experiments"]["cw_d8"]["sampler"]["T"] == 5.0  # set in the file


def test_default_and_test_configs_validate():
    for path, names, method in [("config/config.yaml", {"gmm", "digits"}, "heun"),
                                ("tests/tiny_config.yaml", {"gmm", "cw_d8", "cw_d12", "digits"}, "ddpm")]:
        cfg = load_config(ROOT / path)
        assert set(cfg["experiments"]) == names
        assert cfg["experiments"]["digits"]["network_sampler"]["method"] == method
    paper = set(load_config(ROOT / "config/paper.yaml")["experiments"])
    assert paper == {"mnist", "cifar2", "imagenet16", "imagenet32", "lsun64", "celeba64"}
    solvable = load_config(ROOT / "config/solvable.yaml")["experiments"]
    assert len(solvable) == 14 and {c["group"] for c in solvable.values()} == {
        "gm_speciation", "gm_collapse", "curie_weiss", None}
    assert len(load_config(ROOT / "config/solvable_paper.yaml")["experiments"]) >= 14
    assert set(load_config(ROOT / "config/embedded.yaml")["experiments"]) == {"fashion", "lfw"}
    assert set(load_config(ROOT / "config/networks.yaml")["experiments"]) == {"gm_mlp"}
    assert set(load_config(ROOT / "config/digits_unet.yaml")["experiments"]) == {"digits_unet"}
    scales = validate_config({**yaml.safe_load((ROOT / "config/external_scales.yaml").read_text()),
                              "check_models": False})["experiments"]  # its models are trained from its subsets
    assert {e: (c["dataset"]["pixel_range"], c["dataset"]["centre"]) for e, c in scales.items()} == {
        "digits_zero_one": ([0.0, 1.0], True), "digits_minus_one": ([-1.0, 1.0], False)}


def test_external_config_needs_its_model_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the model folder is relative to the working directory
    with pytest.raises(ConfigError, match="models/diffusers-digits is not a folder"):  # until the example ran
        load_config(ROOT / "config/external.yaml")
    folder = tmp_path / "models/diffusers-digits"
    folder.mkdir(parents=True)
    with pytest.raises(ConfigError, match="no scheduler_config.json"):
        load_config(ROOT / "config/external.yaml")
    (folder / "diffusion_pytorch_model.safetensors").write_text("{}")  # validation checks the layout and the
    (folder / "scheduler_config.json").write_text('{"beta_schedule": "linear"}')  # configs; the job the weights
    (folder / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="config.json: sample_size is None"):
        load_config(ROOT / "config/external.yaml")
    (folder / "config.json").write_text('{"sample_size": 16, "in_channels": 1, "out_channels": 1}')
    cfg = load_config(ROOT / "config/external.yaml")["experiments"]["digits"]
    assert cfg["scores"] == ["external"] and cfg["uturn"]["enabled"]


def test_a_config_whose_model_does_not_exist_yet_validates_without_reading_it(tmp_path, monkeypatch, capsys):
    """check_models: false (check-config --no-model) skips the model's files, so that the subset
    to train it on can be made from the same config; the model's folder is read otherwise, and
    check-config then names what identifies the model."""
    from diffusion_regimes.cli import main

    monkeypatch.chdir(tmp_path)
    config = ROOT / "config/external.yaml"
    assert main(["check-config", str(config)]) == 2
    assert "models/diffusers-digits is not a folder" in capsys.readouterr().err
    assert main(["check-config", "--no-model", str(config)]) == 0
    assert capsys.readouterr().out.strip() == f"{config}: valid, experiments digits"
    raw = yaml.safe_load(config.read_text())
    cfg = validate_config({**raw, "check_models": False})
    assert cfg["experiments"]["digits"]["scores"] == ["external"]
    # the README's command for the subset, through Snakemake (which leaves ``false`` a string)
    from test_bad_input import snakemake

    proc = snakemake(tmp_path / "work", "results/digits/data.parquet", configfile=config,
                     extra=("--config", "check_models=false", "-n"))
    assert proc.returncode == 0 and "rule subset" in proc.stdout, proc.stderr[-1500:]
    folder = tmp_path / "models/diffusers-digits"
    folder.mkdir(parents=True)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    (folder / "scheduler_config.json").write_text('{"beta_schedule": "linear", "prediction_type": "v_prediction"}')
    (folder / "config.json").write_text('{"sample_size": 16, "in_channels": 1, "out_channels": 1}')
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    import hashlib

    digest = hashlib.sha256(b"weights").hexdigest()[:12]
    assert f"digits/external: {folder} sha256:{digest} v_prediction linear 1000 steps" in out
    # the model's sample shape against the data's, before any job
    (folder / "config.json").write_text('{"sample_size": 32, "in_channels": 1, "out_channels": 1}')
    assert main(["check-config", str(config)]) == 2
    assert ("the model takes samples of shape (1, 32, 32) (in_channels x sample_size), but the dataset block gives "
            "(1, 16, 16)") in capsys.readouterr().err


def test_report_without_results_and_the_console_summary(tmp_path, capsys):
    from diffusion_regimes.cli import main
    from diffusion_regimes.summary import console, summary_table

    assert main(["run", "--report", "r.html", "--configfile", str(ROOT / "tests/tiny_config.yaml"),
                 "-d", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffusion-regimes: no results to report") and "run the workflow first" in err
    assert err.count("\n") == 1 and not (tmp_path / "r.html").exists()
    rows = [("digits", "unet", {"spectrum": {"n": 178, "d": 256, "t_S": 0.4129, "Lambda": 2.28}, "cloning": {
                 "t_S_measured": 0.292, "t_S_measured_se": 0.067},
             "collapse": {"memorised_fraction": 0.0, "memorised_fraction_se": 0.0, "memorised_fraction_null": 0.0},
             "entropy": {"t_C": 0.041, "t_C_lo": 0.02, "t_C_hi": 0.08},
             "theory": {"t_S_gaussian": 0.355, "t_S_gaussian_se": 0.01}})]
    write_table(summary_table(rows), tmp_path / "summary.parquet", make_metadata("summary"))
    text = console(tmp_path / "summary.parquet")
    line = text.splitlines()[-1]
    assert "0.292 ± 0.067" in line and "0.355 ± 0.010" in line and "0.000 ± 0.000 (null 0.000)" in line
    assert "0.041 [0.020, 0.080]" in line and line.split()[:2] == ["digits", "unet"] and "0.355 ± 0.010 / -" in line
    assert " - " in line  # no U-turns: shown as missing, not as a number
    # the report's landing: one narrow table per experiment (quantities down, scores across), so
    # that it fits the report's description column beside the rule graph; docutils renders it
    from docutils.core import publish_parts

    from diffusion_regimes.summary import landing_rst
    rst = landing_rst(read_table(tmp_path / "summary.parquet")[0], {})
    assert ".. list-table:: digits" in rst and "   * - t_U\n     - \\-\n" in rst
    assert "   * - score\n     - unet\n   * - t_S theory\n     - 0.413\n" in rst
    html = publish_parts(rst, writer="html", settings_overrides={"report_level": 2})["html_body"]
    assert "system-message" not in html and html.count("<tr") == 1 + 8  # the score row and 8 quantities
    assert "<ul" not in html and "<td>-</td>" in html  # a missing value is a dash, not an empty list


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["experiments"]["gmm"]["cloning"].update(n_pair=3), "experiments.gmm.cloning: unknown key 'n_pair'"),
    (lambda c: c["experiments"]["gmm"]["dataset"].update(d=-4), "experiments.gmm.dataset.d"),
    (lambda c: c["experiments"]["gmm"]["dataset"].update(size=16), "unknown key 'size'"),
    (lambda c: c["experiments"]["gmm"].update(scores=["unet"]), "experiments.gmm.scores"),
    (lambda c: c["experiments"]["digits"]["sampler"].update(method="rk4"), "experiments.digits.sampler.method"),
    (lambda c: c.update(colour="red"), "unknown key 'colour'"),
    (lambda c: c["experiments"]["gmm"]["cloning"].update(branch_times=[2.0, 1.0]), "increasing order"),
    (lambda c: c["experiments"]["gmm"]["cloning"].update(branch_times=[1.0, 1.0]), "strictly increasing"),
    (lambda c: c["experiments"]["digits"]["network_sampler"].update(grid="ddpm", steps=1000), "at most 999 steps"),
    (lambda c: c["experiments"]["gmm"]["dataset"].update(n=1000.0), "experiments.gmm.dataset.n: 1000.0 is not"),
    (lambda c: c["experiments"]["gmm"]["sampler"].update(t_end=7.0), "experiments.gmm.sampler.t_end: must be"),
    (lambda c: c["experiments"]["digits"]["dataset"].update(size=9), "experiments.digits.dataset.size"),
])
def test_bad_config_one_line_error(edit, words):
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert words in str(err.value) and "\n" not in str(err.value)


SPECTRUM = {"top": 16, "method": "auto", "lambda_from": "all"}


def test_bad_data_file_and_model_give_one_line_errors(tmp_path):
    from diffusion_regimes import stages

    data = tmp_path / "data.parquet"
    data.write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError) as err:
        stages.spectrum({"data": str(data)}, {"spectrum": str(tmp_path / "s.parquet")}, SPECTRUM)
    assert "data.parquet" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "s.parquet").exists()

    stages.subset({}, {"data": str(data), "reference": str(tmp_path / "r.parquet")}, "e",
                  {"source": "sklearn_digits", "classes": [1, 8], "size": 16}, 0)
    stages.spectrum({"data": str(data)}, {"spectrum": str(tmp_path / "s.parquet")}, SPECTRUM)
    model = tmp_path / "unet.pt"
    save_checkpoint({"state_dict": {"w": torch.ones(1)}, "network": {
        "arch": "unet", "config": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                   "attention_resolutions": [], "dropout": 0.0},
        "shape": [1, 16, 16], "prediction": "eps", "time_scale": 200.0}}, model)
    with pytest.raises(InputError, match="weights do not fit") as err:
        stages.collapse_shard({"data": str(data), "spectrum": str(tmp_path / "s.parquet"), "model": str(model),
                               "reference": str(tmp_path / "r.parquet")},
                              {"times": str(tmp_path / "t.parquet"), "pairs": str(tmp_path / "p.parquet")}, "e",
                              {"kind": "unet", "settings": {}, "device": "cpu",
                               "sampler": {"method": "ddpm", "grid": "ddpm", "steps": 5}},
                              {"n_trajectories": 2, "track_every": 1, "n_pairs": 2, "pair_batch": 2,
                               "branch_times": [0.5, 1.0], "shards": 1}, 64, 0)
    assert "\n" not in str(err.value)


def test_nested_config_overrides_are_typed_and_merged():
    """What Snakemake makes of ``--config 'experiments={gmm: {cloning: {n_pairs: 48, branch_times: [0.5, 1]}}}'``
    (YAML's base loader: every scalar a string), typed as a file would type it and merged."""
    from diffusion_regimes.config import typed_overrides

    flow = "{gmm: {cloning: {n_pairs: 48, branch_times: [0.5, 1], time_unit: ou}, entropy: {n_t: null}}}"
    override = {"experiments": yaml.load(flow, Loader=yaml.BaseLoader), "seed": 3}
    config = {"seed": 3, "experiments": {"gmm": {"cloning": {"n_pairs": "48", "branch_times": ["0.5", "1"],
                                                             "time_unit": "ou", "n_bootstrap": 50},
                                                 "entropy": {"n_t": "null"}}}}
    typed_overrides(config, override)
    cloning = config["experiments"]["gmm"]["cloning"]
    assert cloning == {"n_pairs": 48, "branch_times": [0.5, 1], "time_unit": "ou", "n_bootstrap": 50}
    assert config["experiments"]["gmm"]["entropy"]["n_t"] is None and config["seed"] == 3


def test_branch_times_on_one_grid_step_are_refused_merged_or_kept(caplog):
    import numpy as np

    from diffusion_regimes.sampling import Sampler
    from diffusion_regimes.schedule import snap_to_grid

    sampler = Sampler.from_config({"method": "heun", "grid": "uniform", "steps": 10, "T": 5.0, "t_end": 1e-3})
    np.testing.assert_array_equal(sampler.snap([1.0, 2.0, 3.0]), [8, 6, 4])
    with pytest.raises(InputError, match="branch times 2.1 and 1.9 fall on the same step .* 2"):
        snap_to_grid(sampler.grid, [2.1, 1.0, 1.9])  # validation (OU times)
    np.testing.assert_array_equal(sampler.snap([1.0, 1.9, 2.1, 3.0]), [8, 6, 4])  # jobs: measured once
    assert "1.9 and 2.1 fall on the same step" in caplog.text and "1 branch time(s) merged" in caplog.text
    assert list(sampler.snap([1.9, 2.1], duplicates="keep")) == [6, 6]  # symmetry times may share a step
    with pytest.raises(InputError, match="outside the sampler's grid"):
        sampler.snap([6.0])


def test_thread_count_follows_affinity_idle_cpus_and_the_environment(monkeypatch):
    from diffusion_regimes import cpus

    assert cpus.thread_count(2, cpus=[0, 1], free=[0, 1]) == 2
    assert cpus.thread_count(2, cpus=[0, 1], free=[1]) == 1  # one core held by another process
    assert cpus.thread_count(2, cpus=[0, 1], free=[]) == 1  # never fewer than one
    assert cpus.thread_count(4, cpus=[3], free=None) == 1  # a taskset / SLURM allocation of one CPU
    usable = cpus.usable_cpus()
    assert set(cpus.idle_cpus(usable, 0.05)) <= set(usable)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpus.prepare_threads(8) == 1  # the environment pins the count
    monkeypatch.delenv("OMP_NUM_THREADS")
    n = cpus.prepare_threads(2)
    assert 1 <= n <= len(usable) and os.environ["OMP_NUM_THREADS"] == str(n)
