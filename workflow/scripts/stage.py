"""Thin wrapper: run the package's stage named like the rule, logging to the rule's log."""

import logging
import signal
import sys
from pathlib import Path

snakemake = globals()["snakemake"]
# the package in src/, also when it is not pip-installed (e.g. in a conda environment)
sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

import torch  # noqa: E402

from diffusion_regimes import stages  # noqa: E402
from diffusion_regimes.io import InputError  # noqa: E402


def _terminated(signum, frame):  # SLURM's time limit, scancel, Ctrl-C of snakemake: unwind, so that
    raise SystemExit(128 + signum)  # half-written files are removed; training resumes from its state


signal.signal(signal.SIGTERM, _terminated)
real_stderr = sys.stderr
with open(snakemake.log[0], "w", buffering=1) as log_file:
    sys.stdout = sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", force=True)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    try:
        getattr(stages, snakemake.rule)(dict(snakemake.input.items()), dict(snakemake.output.items()),
                                        **dict(snakemake.params.items()))
    except InputError as err:  # bad input: one line, no traceback
        logging.error("%s", err)
        print(f"diffusion-regimes: {err}", file=real_stderr)
        sys.exit(1)
    except BaseException:
        logging.exception("stage %s failed", snakemake.rule)
        raise
