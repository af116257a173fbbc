"""The whole DAG on a tiny config through Snakemake's Python API, re-run behaviour,
determinism, and a bad config through the command line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from workflow_api import QUICK_ENV, ROOT, TINY, snakemake

from diffusion_regimes.io import read_metadata, read_table


def test_whole_dag_outputs_follow_the_contract(tiny_run):
    work, made = tiny_run
    r = work / "results"
    expected_columns = {
        "gmm/data.parquet": ["label", "source_index", "x"],
        "gmm/spectrum.parquet": ["rank", "eigenvalue"],
        "digits/models/unet_log.parquet": ["step", "loss", "lr"],
        "gmm/exact/cloning.parquet": ["t", "phi", "phi_se", "phi_lo", "phi_hi", "n_pairs"],
        "digits/unet/cloning.parquet": ["t", "phi", "phi_se", "phi_lo", "phi_hi", "n_pairs"],
        "gmm/empirical/collapse_times.parquet": ["trajectory", "t_collapse", "nearest_index", "d_star", "d1", "d2",
                                                 "memorised", "t_collapse_null", "memorised_null"],
        "gmm/exact/collapse_times.parquet": ["trajectory", "t_collapse", "memorised", "t_collapse_null"],
        "gmm/reference.parquet": ["label", "source_index", "x"],
        "digits/reference.parquet": ["label", "source_index", "x"],
        "digits/unet/phi_c.parquet": ["t", "phi_c", "phi_c_se"],
        "gmm/exact/uturn.parquet": ["t", "phi", "phi_se", "phi_lo", "phi_hi", "n_points"],
        "gmm/entropy.parquet": ["t", "f", "f_se"],
        "gmm/theory.parquet": ["t", "phi", "f"],
        "summary.parquet": ["experiment", "score", "n", "d", "Lambda", "t_S_theory", "t_S_measured",
                            "t_C_entropy", "t_C_measured", "t_C_theory_gm"],
    }
    for rel, cols in expected_columns.items():
        names = pq.read_schema(r / rel).names
        assert all(c in names for c in cols), (rel, names)
    data_schema = pq.read_schema(r / "gmm/data.parquet")
    assert data_schema.field("label").type == pa.int8() and data_schema.field("source_index").type == pa.int64()
    x_type = data_schema.field("x").type
    assert pa.types.is_fixed_size_list(x_type) and x_type.list_size == 32
    assert x_type.value_type == pa.float32()
    contract_metadata = {
        "gmm/data.parquet": {"shape", "mean", "classes", "source"},
        "gmm/spectrum.parquet": {"Lambda", "t_S"},
        "gmm/exact/cloning.parquet": {"nfe", "t_S_measured"},
        "gmm/entropy.parquet": {"alpha", "t_C"},
        "gmm/theory.parquet": {"t_S", "t_C"},
    }
    for rel, keys in contract_metadata.items():
        meta = read_metadata(r / rel)
        assert keys <= set(meta) and {"config", "seed", "version"} <= set(meta), (rel, meta.keys())
    from diffusion_regimes.classifier import classifier_labeller, load_classifier
    from diffusion_regimes.data import load_subset

    net, shape, accuracy = load_classifier(r / "digits/classifier.pt")  # the accuracy cloning records is the
    assert read_metadata(r / "digits/unet/cloning.parquet")["accuracy"] == accuracy  # classifier's own
    x, labels, _ = load_subset(str(r / "digits/data.parquet"))  # and the labeller names the digits' classes
    assert float((classifier_labeller(net, shape, device="cpu")(x) == labels).float().mean()) > 0.9
    table1, _ = read_table(r / "table1.parquet")
    assert list(table1["experiment"]) == ["gmm", "cw_d8", "cw_d12", "digits"] and "ratio_exact" in table1
    assert "| experiment" in (r / "table1.md").read_text()
    summary, _ = read_table(r / "summary.parquet")
    assert len(summary) == 6 and set(summary["score"]) == {"exact", "empirical", "unet"}
    for col in ("memorised_fraction", "memorised_fraction_se", "t_C_memorised", "t_C_null", "t_C_entropy_lo",
                "t_C_entropy_hi", "t_C_theory_gm_finite_d", "t_S_measured_corrected", "t_S_gaussian",
                "t_S_gaussian_se", "t_S_heldout", "t_S_heldout_se"):
        assert col in summary, col
    assert "t_S_measured_corrected_generated" not in summary  # a bound under an assumption, not a measurement
    assert {"t_S_gaussian", "t_S_heldout_se"} <= set(table1) and summary["t_S_gaussian"].notna().all()
    for _, row in summary.drop_duplicates("experiment").iterrows():  # the references near 1/2 log Lambda
        for ref in ("gaussian", "heldout"):
            assert abs(row[f"t_S_{ref}"] - row["t_S_theory"]) < 0.35 * row["t_S_theory"], (row["experiment"], ref)
    gmm = summary[summary["experiment"] == "gmm"].set_index("score")
    assert gmm.loc["exact", "memorised_fraction"] == 0 and gmm.loc["empirical", "memorised_fraction"] == 1
    assert gmm.loc["exact", "t_C_entropy_lo"] < gmm.loc["exact", "t_C_entropy"] < gmm.loc["exact", "t_C_entropy_hi"]
    assert gmm.loc["exact", "t_C_theory_gm_finite_d"] > gmm.loc["exact", "t_C_theory_gm"]
    assert "t_U_measured" in summary and summary[summary["experiment"] != "gmm"]["t_U_measured"].isna().all()
    turns, umeta = read_table(r / "gmm/exact/uturn.parquet", stage="uturn")
    assert list(turns["n_points"]) == [64] * 3 and turns["phi"].iloc[0] > turns["phi"].iloc[-1]
    assert umeta["start"] == "training" and umeta["level"] == pytest.approx(0.7752, abs=1e-4)
    digits = read_metadata(r / "digits/data.parquet")
    assert digits["n"] == 178 and read_metadata(r / "digits/reference.parquet")["n"] == 178  # holdout 0.5
    assert not (set(pq.read_table(r / "digits/data.parquet").column("source_index").to_pylist())
                & set(pq.read_table(r / "digits/reference.parquet").column("source_index").to_pylist()))
    unet = read_metadata(r / "digits/unet/cloning.parquet")  # the gather's confidence is the shards' mean
    shard = read_metadata(r / "digits/unet/shards/cloning_0.parquet")
    assert unet["confidence_mean"] == pytest.approx(shard["confidence_sum"] / shard["labelled"])
    assert unet["low_confidence_fraction"] == pytest.approx(shard["low_confidence"] / shard["labelled"])
    assert shard["labelled"] == 32 * 4 and "label_noise_if_phi_latest_1" in unet  # 32 trunks + 3 branch times
    for fig in ["gmm/phi.png", "gmm/collapse.png", "gmm/symmetry.png", "digits/phi.png", "digits/collapse.png",
                "digits/samples.png", "groups/cw/speciation.png", "groups/cw/collapse.png", "cw_d12/phi.png"]:
        assert (r / "figures" / fig).stat().st_size > 10_000
    sym, meta = read_table(r / "gmm/symmetry.parquet")
    assert list(sym.columns) == ["t", "t_rel", "q"] and len(sym) == 3 * 64 and meta["d"] == 32
    theory_cw = read_metadata(r / "cw_d12/theory.parquet")
    assert theory_cw["model"] == "curie_weiss" and theory_cw["Lambda_population"] > 1
    assert not list(r.rglob(".*.tmp"))


def test_rerun_does_only_what_a_change_feeds(tiny_run):
    work, _ = tiny_run
    # (c) an unchanged re-run does nothing
    assert snakemake(work, dry=True) == set()
    # run options cannot change a result, so changing them re-runs nothing either
    options = {"checkpoint_every": 7, "compile": True, "channels_last": True}
    assert snakemake(work, dry=True, config={"experiments": {"digits": {"train": options}}}) == set()
    # (a) a cloning parameter: the cloning shards and their gather, then summary, table and figures
    changed = snakemake(work, dry=True, config={"experiments": {"gmm": {"cloning": {"n_pairs": 80}}}})
    assert changed == {
        "results/gmm/exact/shards/cloning_0.parquet", "results/gmm/exact/shards/snapshots_0.parquet",
        "results/gmm/empirical/shards/cloning_0.parquet", "results/gmm/empirical/shards/snapshots_0.parquet",
        "results/gmm/exact/cloning.parquet", "results/gmm/exact/snapshots.parquet",
        "results/gmm/empirical/cloning.parquet", "results/gmm/empirical/snapshots.parquet",
        "results/summary.parquet", "results/summary.tsv", "results/table1.parquet", "results/table1.md",
        "results/figures/gmm/phi.png", "results/figures/gmm/collapse.png", "results/report_landing.rst"}
    # the bootstrap is the gather's alone: no re-sampling
    changed = snakemake(work, dry=True, config={"experiments": {"gmm": {"cloning": {"n_bootstrap": 60}}}})
    assert not any("/shards/" in f for f in changed) and "results/gmm/exact/cloning.parquet" in changed
    # (b) a training parameter: training and everything downstream of the network, not subset, spectrum,
    # entropy, the classifier or the empirical score's jobs
    changed = snakemake(work, dry=True, config={"experiments": {"digits": {"train": {"lr": 0.002}}}})
    assert {"results/digits/models/unet.pt", "results/digits/unet/cloning.parquet",
            "results/digits/unet/collapse_times.parquet", "results/summary.parquet"} <= changed
    untouched = ("data.parquet", "spectrum.parquet", "entropy.parquet", "classifier.pt", "/empirical/")
    assert not [f for f in changed if any(u in f for u in untouched)], changed
    assert all(f.startswith(("results/digits/", "results/figures/digits/")) or f.startswith(
        ("results/summary", "results/table1", "results/report_landing")) for f in changed), changed


def test_shards_merge_to_the_single_job_result(tiny_run, tmp_path):
    work, _ = tiny_run
    targets = ["results/gmm/empirical/cloning.parquet", "results/gmm/empirical/collapse_times.parquet",
               "results/gmm/empirical/phi_c.parquet", "results/gmm/entropy.parquet"]
    sharded = {"experiments": {"gmm": {"cloning": {"shards": 3, "pair_batch": 16},
                                       "collapse": {"shards": 2, "pair_batch": 8},
                                       "entropy": {"shards": 4}}}}
    single = {"experiments": {"gmm": {"cloning": {"pair_batch": 16}, "collapse": {"pair_batch": 8}}}}
    made = snakemake(tmp_path / "sharded", targets=targets, config=sharded)
    assert sum("shards/cloning_" in f for f in made) == 3 and sum("shards/entropy_" in f for f in made) == 4
    snakemake(tmp_path / "single", targets=targets, config=single)
    for t in targets:
        a, ma = read_table(tmp_path / "sharded" / t)
        b, mb = read_table(tmp_path / "single" / t)
        assert a.equals(b), t
        assert {k: v for k, v in ma.items() if k not in ("config", "shards")} == {
            k: v for k, v in mb.items() if k not in ("config", "shards")}, t
        assert ma.get("shards") in (2, 3, 4) and mb.get("shards") == 1


def test_same_seed_gives_identical_tables(tiny_run, tmp_path):
    work, _ = tiny_run
    targets = ["results/gmm/exact/cloning.parquet", "results/digits/unet/cloning.parquet",
               "results/gmm/entropy.parquet"]
    snakemake(tmp_path, targets=targets)
    for t in targets:
        a, b = pq.read_table(work / t), pq.read_table(tmp_path / t)
        assert a.equals(b) and a.schema.metadata == b.schema.metadata, t


def test_bad_config_stops_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"]["gmm"]["cloning"]["n_pair"] = 3
    bad.write_text(yaml.safe_dump(cfg))
    exe = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run([exe, "-n", "--cores", "1", "--configfile", str(bad),
                           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)],
                          capture_output=True, text=True, env=QUICK_ENV)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "diffusion-regimes:" in ln]
    assert proc.returncode != 0
    assert lines == ["diffusion-regimes: config error at experiments.gmm.cloning: unknown key 'n_pair' (allowed: "
                     "branch_times, n_bootstrap, n_pairs, pair_batch, shards, time_unit); see config/README.md"]
    assert not (tmp_path / "results").exists()


def test_report_collects_every_figure_and_the_summary(tiny_run):
    work, _ = tiny_run
    exe = str(Path(sys.executable).parent / "snakemake")
    proc = subprocess.run([exe, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(TINY),
                           "--report", str(work / "report.html")], capture_output=True, text=True, timeout=600,
                          env=QUICK_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (work / "report.html").read_text(errors="replace")
    figures = sorted(p.relative_to(work).as_posix() for p in (work / "results/figures").rglob("*.png"))
    # gmm 3 (with symmetry), digits 3, cw_d8 2, cw_d12 2, group cw 3 (a grid over d: t_S against d too)
    assert len(figures) == 13 and "results/figures/groups/cw/t_S_against_d.png" in figures
    for name in figures + ["results/summary.tsv", "results/table1.md"]:
        assert name in html, name
    for category in ["gmm", "digits", "cw_d8", "cw", "Summary", "speciation", "collapse", "symmetry breaking"]:
        assert category in html, category
    # the landing page opens on the results: the headline table and the figures inline
    landing = (work / "results/report_landing.rst").read_text()
    assert "The headline numbers" in landing and landing.count(".. image::\n   data:image/png;base64,") == 8
    assert "The headline numbers" in html and "gmm" in html.split("The headline numbers", 1)[1][:5000]


@pytest.mark.slow
def test_sigterm_mid_training_leaves_no_output_and_resumes(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["experiments"] = {"digits": cfg["experiments"]["digits"]}
    cfg["experiments"]["digits"]["train"].update({"steps": 600, "checkpoint_every": 25})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    exe = str(Path(sys.executable).parent / "snakemake")
    cmd = [exe, "results/digits/models/unet.pt", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", "1",
           "--configfile", str(tmp_path / "config.yaml")]
    state = work / "results/digits/models/.state/unet.pt"
    model = work / "results/digits/models/unet.pt"
    output = tmp_path / "output.txt"
    with open(output, "w") as out:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=subprocess.STDOUT, env=QUICK_ENV)
    deadline = time.time() + 600
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.exists(), "training never wrote its first checkpoint"
    os.killpg(proc.pid, signal.SIGTERM)  # what SLURM sends to the job at its time limit
    proc.wait(timeout=120)
    assert proc.returncode != 0 and not model.exists()
    assert not list(state.parent.glob(".*.tmp"))
    text = output.read_text()  # the interrupt is one line, in the job's log and on the console: no traceback
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-2000:]
    job_log = (work / "logs/digits/unet/train.log").read_text()
    assert "train interrupted (SIGTERM)" in job_log and "Traceback" not in job_log, job_log[-2000:]
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 25 <= killed_at < 600
    subprocess.run(cmd, check=True, capture_output=True, timeout=900, env=QUICK_ENV)
    meta = read_metadata(work / "results/digits/models/unet_log.parquet")
    assert meta["resumed_from"] == killed_at and meta["steps"] == 600
