"""Command line: ``diffusion-regimes describe-model --config CONFIG --experiment EXP``.

Prints the architecture summary and parameter count of an experiment's U-Net
(and of its classifier, for image data) for the input shape its dataset block
will produce, without reading the data.
"""

from __future__ import annotations

import argparse
import sys

from .config import load_config, needs_classifier
from .datamodels import data_model
from .errors import InputError
from .models import build_classifier, build_network, count_parameters, describe


def describe_model(config_path: str, experiment: str, classifier: bool = True) -> str:
    """Text summary of the networks of ``experiment`` in the config file."""
    cfg = load_config(config_path)
    exps = cfg["experiments"]
    if experiment not in exps:
        raise InputError(f"experiment {experiment!r} is not in {config_path}: it has {sorted(exps)}")
    exp = exps[experiment]
    source = data_model(exp["dataset"]["source"])
    if source.kind != "images":
        raise InputError(f"experiment {experiment!r} has vector data (source {source.name!r}): its score models "
                         "are analytic, there is no U-Net to describe")
    shape = source.planned_shape(exp["dataset"])
    unet = build_network("unet", exp["model"], shape)
    m = exp["model"]
    out = [f"# {experiment}: U-Net for {shape[0]}x{shape[1]}x{shape[2]} images "
           f"(channels {m['channels']}, channel_mult {m['channel_mult']}, num_res_blocks {m['num_res_blocks']}, "
           f"attention_resolutions {m['attention_resolutions']}, dropout {m['dropout']})"
           + ("" if "unet" in exp["scores"] else "  [unet is not among this experiment's scores]"),
           describe(unet, shape), f"U-Net parameters: {count_parameters(unet):,}"]
    if classifier and needs_classifier(exp):
        net = build_classifier(exp["classifier"], shape)
        out += ["", f"# {experiment}: classifier {exp['classifier']['arch']}", describe(net, shape),
                f"classifier parameters: {count_parameters(net):,}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusion-regimes", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("describe-model", help="architecture summary and parameter count of an experiment's networks")
    p.add_argument("--config", required=True, help="config YAML file (e.g. config/paper.yaml)")
    p.add_argument("--experiment", required=True, help="experiment name in the config")
    p.add_argument("--no-classifier", action="store_true", help="describe the U-Net only")
    args = parser.parse_args(argv)
    try:
        print(describe_model(args.config, args.experiment, not args.no_classifier))
    except InputError as err:
        print(f"diffusion-regimes: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
