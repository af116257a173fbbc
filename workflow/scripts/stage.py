"""Thin wrapper: run the package's stage named like the rule, logging to the rule's log.

Bad input (:class:`InputError`), an interrupt (SIGTERM from a scheduler, Ctrl-C), the
config's ``job_time_limit`` (SIGALRM; a job stuck in native code is ended a minute later)
and a file system that refuses a write (read-only, full, no permission) end the job with
one line on stderr and no traceback; any other failure is logged with its traceback and
re-raised once the standard streams point at the terminal again."""

import errno
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

snakemake = globals()["snakemake"]
# the package in src/, also when it is not pip-installed (e.g. in a conda environment)
sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1] / "src"))

from diffusion_regimes.config import job_options  # noqa: E402
from diffusion_regimes.cpus import prepare_threads  # noqa: E402
from diffusion_regimes.datamodels import load_plugins  # noqa: E402
from diffusion_regimes.errors import InputError  # noqa: E402

#: errors of a file system that refuses a write, and what to do about each
FILE_SYSTEM = {errno.EROFS: "make the results folder writable", errno.EACCES: "make the results folder writable",
               errno.EPERM: "make the results folder writable", errno.ENOSPC: "free disk space",
               errno.EDQUOT: "free space in your quota"}


def _terminated(signum, frame):  # SLURM's time limit, scancel, Ctrl-C of snakemake: unwind, so that
    raise SystemExit(128 + signum)  # half-written files are removed; training resumes from its state


class TimeLimit(BaseException):  # not an Exception: no ``except Exception`` in a stage swallows it
    """The job ran past the config's ``job_time_limit``."""


#: minutes this job may run (the config's job_time_limit; None: no limit)
LIMIT = snakemake.config.get("job_time_limit")
LIMIT_LINE = (f"{snakemake.rule} stopped after {LIMIT} min, its time limit (job_time_limit in the config): a score "
              "or entry point that never returns, or a job longer than allowed; fix the model or raise "
              "job_time_limit (null: none), then run again")


def _time_limit(signum, frame):  # SIGALRM: unwind as for an interrupt
    raise TimeLimit(LIMIT_LINE)


def _hard_stop():  # the job did not unwind within a minute of its limit (stuck in native code)
    os.write(terminal_fd, f"diffusion-regimes: {LIMIT_LINE}\n".encode())
    os._exit(1)


def _one_line(err: BaseException) -> tuple[str, int] | None:
    """(the line to print, the exit code) for the failures that are no bug, else None."""
    if isinstance(err, (InputError, TimeLimit)):
        return str(err), 1
    if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code not in (0, None)):
        code = 130 if isinstance(err, KeyboardInterrupt) else int(err.code)
        name = signal.Signals(code - 128).name if 128 < code < 160 else f"exit {code}"
        return (f"{snakemake.rule} interrupted ({name}): its partial outputs are removed; run again to go on "
                "(training resumes from its last state)"), code
    if isinstance(err, OSError) and err.errno in FILE_SYSTEM:
        return (f"{snakemake.rule} cannot write {err.filename or 'its output'}: {err.strerror}; "
                f"{FILE_SYSTEM[err.errno]} and run again"), 1
    return None


signal.signal(signal.SIGTERM, _terminated)
terminal = sys.stdout, sys.stderr
terminal_fd = os.dup(sys.stderr.fileno())
if LIMIT:
    signal.signal(signal.SIGALRM, _time_limit)
    signal.alarm(max(1, math.ceil(60 * LIMIT)))
    watchdog = threading.Timer(60 * LIMIT + 60, _hard_stop)
    watchdog.daemon = True
    watchdog.start()
failure = None
with open(snakemake.log[0], "w", buffering=1) as log_file:
    sys.stdout = sys.stderr = log_file
    logging.basicConfig(stream=log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", force=True)
    try:
        threads = prepare_threads(snakemake.threads)  # before torch starts its OpenMP threads
        import torch

        torch.set_num_threads(threads)
        logging.info("%d CPU threads (the rule asked for %s; idle usable CPUs decide)", threads, snakemake.threads)
        from diffusion_regimes import stages

        load_plugins(snakemake.config.get("plugins", []))
        getattr(stages, snakemake.rule)(dict(snakemake.input.items()), dict(snakemake.output.items()),
                                        **dict(snakemake.params.items()),
                                        **job_options(snakemake.rule, snakemake.config, snakemake.wildcards))
    except BaseException as err:
        failure = err
        known = _one_line(err)
        if known is not None:  # no bug: one line, no traceback
            logging.error("%s", known[0])
        else:
            logging.exception("stage %s failed", snakemake.rule)
    finally:
        signal.alarm(0)
        sys.stdout, sys.stderr = terminal  # the streams leave the log file before it closes
        logging.basicConfig(stream=terminal[1], level=logging.WARNING, force=True)
if failure is not None:
    known = _one_line(failure)
    if known is None:
        raise failure
    print(f"diffusion-regimes: {known[0]}", file=sys.stderr)
    sys.exit(known[1])
