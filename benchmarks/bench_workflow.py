"""Wall time of the default workflow from an empty results/ folder, and per-stage times.

Runs `snakemake --configfile config/config.yaml` in a fresh copy of the
workflow (a temporary directory), so the repository's results/ are untouched.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="dr-bench-"))
    for item in ["Snakefile", "workflow", "config", "profiles"]:
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    exe = str(Path(sys.executable).parent / "snakemake")
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "--configfile", "config/config.yaml", "--quiet", "all"], cwd=work,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"workflow failed (kept in {work})")
    rows = []
    for tsv in sorted((work / "benchmarks" / "results").rglob("*.tsv")):
        rows.append({"job": str(tsv.relative_to(work / "benchmarks" / "results"))[:-4],
                     "seconds": float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])})
    print(pd.DataFrame(rows).sort_values("seconds", ascending=False).to_string(index=False))
    print(f"default workflow wall time: {wall:.1f} s (target <= 600 s)")
    summary = pd.read_parquet(work / "results" / "summary.parquet")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
