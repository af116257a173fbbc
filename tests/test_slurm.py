"""The workflow on a real SLURM: Debian's slurm-wlm and munge started on localhost
(tests/slurm/start_slurm.sh: one node with this machine's CPUs and memory, one fake GPU,
no accounting database, MinJobAge 600 s), the tiny config with sharded sampling run
through profiles/slurm by snakemake-executor-plugin-slurm, outputs checked against a
workstation run. Needs root (to install and start the daemons): deselect with
``-m "not slurm"`` elsewhere."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from diffusion_regimes.io import read_table

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny_config.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0 and shutil.which("sbatch") is None:
        pytest.fail("the SLURM integration test starts a local SLURM and needs root; "
                    "run it as root or deselect it with -m 'not slurm'")
    subprocess.run(["bash", str(ROOT / "tests/slurm/start_slurm.sh")], env={**os.environ, "FAKE_GPUS": "1"},
                   check=True, timeout=900, capture_output=True)
    yield
    subprocess.run(["bash", str(ROOT / "tests/slurm/stop_slurm.sh")], timeout=120, capture_output=True)


def _local_profile(tmp: Path) -> Path:
    """profiles/slurm with the memory and threads of the one small node of this machine."""
    prof = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    prof["default-resources"]["mem_mb"] = 1500
    prof["set-resources"] = {rule: {**res, "mem_mb": 1500} for rule, res in prof["set-resources"].items()}
    prof["set-threads"] = {rule: 1 for rule in prof["set-threads"]}
    prof["slurm-init-seconds-before-status-checks"] = 2
    prof["seconds-between-status-checks"] = 2  # a 1-node test cluster: squeue every 2 s, not every 10 s
    prof["retries"] = 0
    prof["slurm-keep-successful-logs"] = True  # to check them below
    (tmp / "profile").mkdir()
    (tmp / "profile" / "config.yaml").write_text(yaml.safe_dump(prof))
    return tmp / "profile"


def test_tiny_config_runs_through_slurm(slurm, tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    # the mixture's exact score (sharded) and the digits' U-Net (the GPU stages); the Curie-Weiss
    # grid, the empirical scores, symmetry and U-turns would only add more jobs of the same kinds
    # (each job costs seconds of SLURM and Snakemake start-up; they are tested on the workstation)
    del cfg["experiments"]["cw"]
    cfg["experiments"]["gmm"]["scores"] = ["exact"]
    cfg["experiments"]["digits"]["scores"] = ["unet"]
    for key in ("symmetry", "uturn"):
        cfg["experiments"]["gmm"][key]["enabled"] = False
    cfg["experiments"]["gmm"]["cloning"].update(shards=2, pair_batch=32)  # 64 pairs: two blocks, one per shard
    cfg["experiments"]["gmm"]["collapse"].update(shards=2, pair_batch=8)  # 16 trajectories and pairs: two blocks
    cfg["experiments"]["gmm"]["entropy"]["shards"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    t0 = time.time()
    proc = subprocess.run([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--profile",
                           str(_local_profile(tmp_path)), "--configfile", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, timeout=2400)
    wall = time.time() - t0
    out = proc.stdout + proc.stderr
    (tmp_path / "snakemake.out").write_text(out)
    assert proc.returncode == 0, out[-3000:]
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    print(f"\nSLURM run: {len(submitted)} sbatch jobs in {wall:.0f} s")
    assert len(submitted) >= 20  # 30 jobs, a few of them local rules
    # every job left a SLURM log in the plugin's log folder, the GPU stages asked for a GPU
    logs = {p.parent.parent.name for p in (work / ".snakemake/slurm_logs").glob("rule_*/*/*.log")}
    assert {"rule_train", "rule_classifier", "rule_cloning_shard", "rule_entropy_shard"} <= logs
    jobs = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True).stdout
    gpu_jobs = [line for line in jobs.splitlines()
                if re.search(r"JobId=(\d+)", line).group(1) in submitted and "TresPerJob=gres:gpu:1" in line]
    assert any("rule_train" in line for line in gpu_jobs), "the train job did not ask SLURM for a GPU"
    r = work / "results"
    assert sorted(p.name for p in (r / "gmm/exact/shards").glob("cloning_*.parquet")) == [
        "cloning_0.parquet", "cloning_1.parquet"]
    summary, _ = read_table(r / "summary.parquet")
    assert len(summary) == 2 and summary["t_S_measured"][summary["experiment"] == "gmm"].notna().all()
    for fig in ["gmm/phi.png", "digits/samples.png"]:
        assert (r / "figures" / fig).stat().st_size > 10_000
    # the same tables as a workstation run of the same config
    local = tmp_path / "local"
    targets = ["results/gmm/exact/cloning.parquet", "results/gmm/entropy.parquet",
               "results/gmm/exact/collapse_times.parquet"]
    subprocess.run([SNAKEMAKE, *targets, "-s", str(ROOT / "Snakefile"), "-d", str(local), "--cores", "2",
                    "--configfile", str(tmp_path / "config.yaml")], check=True, capture_output=True, timeout=900)
    for t in targets:
        assert read_table(work / t)[0].equals(read_table(local / t)[0]), t
