"""Run the workflow from tests through Snakemake's Python API."""

import os
import tempfile
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny_config.yaml"


def snakemake(workdir: Path, dry: bool = False, config: dict | None = None, targets=None,
              configfile: Path = TINY) -> set[str]:
    """Run (or dry-run) the workflow on ``configfile``; returns the outputs that were (or
    would be) made."""
    updated: list[str] = []
    quiet = {Quietness.ALL} if dry else {Quietness.PROGRESS}
    with SnakemakeApi(OutputSettings(quiet=quiet)) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=2),
                          config_settings=ConfigSettings(configfiles=[configfile], config=config or {}),
                          snakefile=ROOT / "Snakefile", workdir=workdir)
        dag = wf.dag(DAGSettings(targets=set(targets or [])))
        dag.execute_workflow(pseudo_executor="dryrun" if dry else None, updated_files=updated)
    return set(updated)


def _quick_env() -> dict:
    """The environment for snakemake command lines in tests: SLURM's client may be installed
    (CI installs it for test_slurm.py) while no controller runs, and snakemake's SLURM plugin
    asks ``scontrol show config`` when it is imported, which then waits about 10 s per
    command. A stub ``scontrol`` that fails at once comes first on the PATH."""
    stub = Path(tempfile.mkdtemp(prefix="diffusion-regimes-bin-"))
    (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (stub / "scontrol").chmod(0o755)
    return {**os.environ, "PATH": f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"}


#: environment of snakemake subprocesses outside the SLURM test (see :func:`_quick_env`)
QUICK_ENV = _quick_env()
