"""The whole DAG on a tiny config through Snakemake's Python API, re-run behaviour,
determinism, and a bad config through the command line."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

from diffusion_regimes.io import read_metadata, read_table

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny_config.yaml"


def snakemake(workdir: Path, dry: bool = False, config: dict | None = None, targets=None) -> set[str]:
    """Run (or dry-run) the workflow; returns the outputs that were (or would be) made."""
    updated: list[str] = []
    quiet = {Quietness.ALL} if dry else {Quietness.PROGRESS}
    with SnakemakeApi(OutputSettings(quiet=quiet)) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=2),
                          config_settings=ConfigSettings(configfiles=[TINY], config=config or {}),
                          snakefile=ROOT / "Snakefile", workdir=workdir)
        dag = wf.dag(DAGSettings(targets=set(targets or [])))
        dag.execute_workflow(pseudo_executor="dryrun" if dry else None, updated_files=updated)
    return set(updated)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    made = snakemake(work)
    return work, made


def test_whole_dag_outputs_follow_the_contract(tiny_run):
    work, made = tiny_run
    r = work / "results"
    expected_columns = {
        "gmm/data.parquet": ["label", "source_index", "x"],
        "gmm/spectrum.parquet": ["rank", "eigenvalue"],
        "digits/models/unet_log.parquet": ["step", "loss", "lr"],
        "gmm/exact/cloning.parquet": ["t", "phi", "phi_se", "phi_lo", "phi_hi", "n_pairs"],
        "digits/unet/cloning.parquet": ["t", "phi", "phi_se", "phi_lo", "phi_hi", "n_pairs"],
        "gmm/empirical/collapse_times.parquet": ["trajectory", "t_collapse", "nearest_index", "d_star"],
        "digits/unet/phi_c.parquet": ["t", "phi_c", "phi_c_se"],
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
    assert read_metadata(r / "digits/unet/cloning.parquet")["accuracy"] >= 0.5
    table1, _ = read_table(r / "table1.parquet")
    assert list(table1["experiment"]) == ["gmm", "cw_d8", "cw_d12", "digits"] and "ratio_exact" in table1
    assert "| experiment" in (r / "table1.md").read_text()
    summary, _ = read_table(r / "summary.parquet")
    assert len(summary) == 6 and set(summary["score"]) == {"exact", "empirical", "unet"}
    for fig in ["gmm/phi.png", "gmm/collapse.png", "gmm/symmetry.png", "digits/phi.png", "digits/collapse.png",
                "digits/samples.png", "cw/speciation.png", "cw/collapse.png", "cw_d12/phi.png"]:
        assert (r / "figures" / fig).stat().st_size > 10_000
    sym, meta = read_table(r / "gmm/symmetry.parquet")
    assert list(sym.columns) == ["t", "t_rel", "q"] and len(sym) == 3 * 64 and meta["d"] == 32
    theory_cw = read_metadata(r / "cw_d12/theory.parquet")
    assert theory_cw["model"] == "curie_weiss" and theory_cw["Lambda_population"] > 1
    assert not list(r.rglob(".*.tmp"))


def test_rerun_does_only_what_a_change_feeds(tiny_run):
    work, _ = tiny_run
    assert snakemake(work, dry=True) == set()
    changed = snakemake(work, dry=True, config={"experiments": {"gmm": {"cloning": {"n_pairs": 80}}}})
    assert changed == {
        "results/gmm/exact/cloning.parquet", "results/gmm/exact/snapshots.parquet",
        "results/gmm/empirical/cloning.parquet", "results/gmm/empirical/snapshots.parquet",
        "results/summary.parquet", "results/table1.parquet", "results/table1.md",
        "results/figures/gmm/phi.png", "results/figures/gmm/collapse.png"}


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
                          capture_output=True, text=True)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "diffusion-regimes:" in ln]
    assert proc.returncode != 0
    assert lines == ["diffusion-regimes: config error at experiments.gmm.cloning: unknown key 'n_pair' "
                     "(allowed: branch_times, n_bootstrap, n_pairs, pair_batch, time_unit); see config/README.md"]
    assert not (tmp_path / "results").exists()
