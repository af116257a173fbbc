"""Thin wrapper: run the package's stage named like the rule, logging to the rule's log.

Bad input (:class:`InputError`) ends the job with one line on stderr and no traceback;
any other failure is logged with its traceback and re-raised once the standard streams
point at the terminal again."""

import logging
import signal
import sys
from pathlib import Path

snakemake = globals()["snakemake"]
# the package in src/, also when it is not pip-installed (e.g. in a conda environment)
sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

from diffusion_regimes.config import job_options  # noqa: E402
from diffusion_regimes.datamodels import load_plugins  # noqa: E402
from diffusion_regimes.errors import InputError  # noqa: E402


def _terminated(signum, frame):  # SLURM's time limit, scancel, Ctrl-C of snakemake: unwind, so that
    raise SystemExit(128 + signum)  # half-written files are removed; training resumes from its state


signal.signal(signal.SIGTERM, _terminated)
terminal = sys.stdout, sys.stderr
failure = None
with open(snakemake.log[0], "w", buffering=1) as log_file:
    sys.stdout = sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", force=True)
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
        from diffusion_regimes import stages

        load_plugins(snakemake.config.get("plugins", []))
        getattr(stages, snakemake.rule)(dict(snakemake.input.items()), dict(snakemake.output.items()),
                                        **dict(snakemake.params.items()),
                                        **job_options(snakemake.rule, snakemake.config, snakemake.wildcards))
    except InputError as err:  # bad input: one line, no traceback
        logging.error("%s", err)
        failure = err
    except BaseException as err:
        logging.exception("stage %s failed", snakemake.rule)
        failure = err
    finally:
        sys.stdout, sys.stderr = terminal  # the streams leave the log file before it closes
        logging.basicConfig(stream=terminal[1], level=logging.WARNING, force=True)
if isinstance(failure, InputError):
    print(f"diffusion-regimes: {failure}", file=sys.stderr)
    sys.exit(1)
if failure is not None:
    raise failure
