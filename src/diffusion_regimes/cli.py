"""Command line of diffusion-regimes.

- ``diffusion-regimes check-config FILE [--no-model]``: read and validate a config file; a
  missing file, a YAML syntax error (with its line) or a bad key is one line; each model
  kept outside the project is named with what identifies it (path, weights hash,
  prediction, schedule); ``--no-model`` does not read their files (a config whose model
  does not exist yet).
- ``diffusion-regimes run [SNAKEMAKE ARGUMENTS]``: check every ``--configfile`` first,
  then run ``snakemake`` with the same arguments (Snakemake reads ``--configfile``
  before the workflow's own checks run, and its messages for a missing file or a
  YAML error name neither the file nor the line); after a run that ends well, the
  summary's headline numbers on the console; ``--report`` without results is one line.
- ``diffusion-regimes describe-model --config CONFIG --experiment EXP``: the
  architecture summary and parameter count of an experiment's networks (the U-Net
  for image data, the residual MLP for vectors or when listed, the classifier for
  image data) for the input shape its dataset block will produce, without reading
  the data; for an external model, what identifies it, its sample shape against the
  data's, its parameters, schedule and the OU times it is valid on.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

from .config import load_config, load_yaml, needs_classifier, validate_config
from .datamodels import data_model
from .errors import InputError
from .models import build_classifier, build_network, count_parameters, describe, network_input_shape


def describe_model(config_path: str, experiment: str, classifier: bool = True) -> str:
    """Text summary of the networks of ``experiment`` in the config file."""
    cfg = load_config(config_path)
    exps = cfg["experiments"]
    if experiment not in exps:
        raise InputError(f"experiment {experiment!r} is not in {config_path}: it has {sorted(exps)}")
    exp = exps[experiment]
    source = data_model(exp["dataset"]["source"])
    shape = source.planned_shape(exp["dataset"])
    out = []
    from .scoremodels import score_kind

    for score in exp["scores"]:  # models kept outside the project: what their files say
        kind = score_kind(score)
        if kind.provenance(exp) is not None:
            from .external import describe_external

            settings = kind.settings(exp)
            out += ([""] if out else []) + [f"# {experiment}: {score}, a model trained elsewhere ({settings['kind']})",
                                            describe_external(settings, math.prod(shape), exp[kind.sampler],
                                                              exp["dataset"])]
    if source.kind == "images" and ("unet" in exp["scores"] or not out):
        unet = build_network("unet", exp["model"], shape)
        m = exp["model"]
        out += [f"# {experiment}: U-Net for {shape[0]}x{shape[1]}x{shape[2]} images "
                f"(channels {m['channels']}, channel_mult {m['channel_mult']}, num_res_blocks "
                f"{m['num_res_blocks']}, attention_resolutions {m['attention_resolutions']}, dropout {m['dropout']})"
                + ("" if "unet" in exp["scores"] else "  [unet is not among this experiment's scores]"),
                describe(unet, shape), f"U-Net parameters: {count_parameters(unet):,}"]
    if "mlp" in exp["scores"] or (source.kind != "images" and not out):
        flat = network_input_shape("mlp", shape)
        mlp = build_network("mlp", exp["mlp"], flat)
        out += ([""] if out else []) + [
            f"# {experiment}: residual MLP for vectors of length {flat[0]} ({exp['mlp']})"
            + ("" if "mlp" in exp["scores"] else "  [mlp is not among this experiment's scores]"),
            describe(mlp, flat), f"MLP parameters: {count_parameters(mlp):,}"]
    if classifier and needs_classifier(exp):
        net = build_classifier(exp["classifier"], shape)
        out += ["", f"# {experiment}: classifier {exp['classifier']['arch']}", describe(net, shape),
                f"classifier parameters: {count_parameters(net):,}"]
    return "\n".join(out)


def config_files(args: list[str]) -> list[str]:
    """The files given to ``--configfile`` / ``--configfiles`` in Snakemake arguments."""
    files, taking = [], False
    for arg in args:
        if arg.startswith("--configfile"):
            name, _, value = arg.partition("=")
            taking = name in ("--configfile", "--configfiles") and not value
            if value:
                files.append(value)
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


def check_config(path: str, models: bool = True) -> str:
    """Validate a config file; returns a one-line summary of its experiments and a line per
    model kept outside the project (what identifies it, the OU times it is valid on). With
    ``models`` False its files are not read (``check_models: false``): a config whose model
    does not exist yet."""
    cfg = load_yaml(path)
    if not models:
        cfg["check_models"] = False
    cfg = validate_config(cfg)
    lines = [f"{path}: valid, experiments {', '.join(cfg['experiments'])}"]
    if cfg.get("check_models", True):
        from .scoremodels import score_kind

        for name, exp in cfg["experiments"].items():
            for score in exp["scores"]:
                found = score_kind(score).provenance(exp)
                if found:
                    lines.append(f"  {name}/{score}: {found['id']}")
    return "\n".join(lines)


def _option(args: list[str], *names: str) -> str | None:
    """The value of a Snakemake option (``--name value`` or ``--name=value``) in ``args``."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in names:
            return value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return None


#: Snakemake options after which nothing is computed (no result to print)
NOT_A_RUN = ("-n", "--dry-run", "--dryrun", "--report", "--lint", "--list", "-l", "--dag", "--rulegraph",
             "--summary", "-S", "--detailed-summary", "-D", "--unlock", "--cleanup-metadata", "--delete-all-output",
             "--list-changes", "--lc", "--list-code-changes", "--list-params-changes", "--help", "-h", "--version")


def run(args: list[str]) -> int:
    """Check the config files in ``args``, run ``snakemake args``, and after a run that ends
    well print the summary's headline numbers (:func:`diffusion_regimes.summary.console`)."""
    import subprocess

    files = config_files(args)
    if not files and Path("config/config.yaml").exists():  # the workflow profile's default
        files = ["config/config.yaml"]
    for path in files:
        cfg = load_yaml(path)
        if len(files) == 1:  # several files are merged by Snakemake: the Snakefile validates the merge
            validate_config(cfg)
    workdir = Path(_option(args, "-d", "--directory") or ".")
    summary = workdir / "results" / "summary.parquet"
    if _option(args, "--report") is not None and not summary.exists():
        raise InputError(f"no results to report: {summary} does not exist; run the workflow first (make run, or "
                         f"diffusion-regimes run --configfile {files[0] if files else 'CONFIG'}), then the report")
    exe = Path(sys.executable).with_name("snakemake")
    program = str(exe) if exe.exists() else "snakemake"
    proc = subprocess.Popen([program, *args])

    def forward(signum, frame):  # a scheduler's SIGTERM reaches snakemake, which cleans up
        proc.send_signal(signum)

    # Ctrl-C reaches snakemake from the terminal (its process group): wait for it to clean up
    old = {sig: signal.signal(sig, handler) for sig, handler in ((signal.SIGINT, signal.SIG_IGN),
                                                                 (signal.SIGTERM, forward))}
    try:
        code = proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if code == 0 and not any(a.partition("=")[0] in NOT_A_RUN for a in args) and summary.exists():
        from .summary import console

        print(console(summary))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # everything after 'run' goes to snakemake untouched
        try:
            return run(argv[1:])
        except InputError as err:
            print(f"diffusion-regimes: {err}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="diffusion-regimes", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-config", help="read and validate a config file (one line per problem)")
    c.add_argument("config", help="config YAML file")
    c.add_argument("--no-model", action="store_true",
                   help="do not read the files of external models (a config whose model does not exist yet)")
    sub.add_parser("run", help="check the --configfile(s), then run snakemake with the same arguments",
                   add_help=False)
    p = sub.add_parser("describe-model", help="architecture summary and parameter count of an experiment's networks")
    p.add_argument("--config", required=True, help="config YAML file (e.g. config/paper.yaml)")
    p.add_argument("--experiment", required=True, help="experiment name in the config")
    p.add_argument("--no-classifier", action="store_true", help="describe the U-Net only")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            print(check_config(args.config, not args.no_model))
        else:
            print(describe_model(args.config, args.experiment, not args.no_classifier))
    except InputError as err:
        print(f"diffusion-regimes: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
