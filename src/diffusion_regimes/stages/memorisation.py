"""Stages of ``workflow/rules/memorisation.smk``: the memorisation study
(:mod:`diffusion_regimes.memorisation`): a chain of training jobs, one per weight snapshot,
each continuing the previous one; one measurement job per snapshot; a gather per
experiment (the curves, tau_mem, tau_gen) and per group of n (tau against n, gamma,
collapse against the entropy)."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import memorisation as memo
from ..data import load_subset
from ..errors import InputError
from ..io import load_checkpoint, make_metadata, read_metadata, read_table, write_table
from ..networks import save_network
from ..seeding import Stream, derive_seed
from ..training import train_network, training_results
from .common import by_key, score_of
from .models import input_shape

log = logging.getLogger("diffusion_regimes")


def train_snapshot(input: dict, output: dict, exp: str, arch: str, model: dict, train: dict, step: int, seed: int,
                   state: str, device: str = "auto", options: dict | None = None, progress: bool = True) -> None:
    """Train to ``step`` from the previous weight snapshot (input ``previous``; from scratch
    for the first) and write the snapshot: the network (EMA weights when ``ema`` is set) as
    :func:`diffusion_regimes.networks.load_network` reads it, beside the full training state
    that the next snapshot continues from. ``train`` is the train block without ``steps``."""
    x, _, meta = load_subset(input["data"])
    net, loss_log, info = train_network(x, arch, model, input_shape(arch, meta, input["data"]),
                                        {**train, "steps": int(step)}, derive_seed(seed, exp, Stream.TRAIN), state,
                                        progress, device, start=input.get("previous"), options=options)
    full = load_checkpoint(state, required=("model", "optimizer", "step", "generator", "log"))
    results = {**training_results(net, loss_log, info), "step": int(step)}
    metadata = make_metadata("train_snapshot", {"model": model, "train": train, "step": int(step)}, seed, results)
    save_network(net, arch, model, metadata, output["snapshot"], extra=full)
    Path(state).unlink(missing_ok=True)
    log.info("snapshot %s at step %d: loss %.4f", arch, step, results["final_loss"])


def memorisation_snapshot(input: dict, output: dict, exp: str, score: dict, memorisation: dict, block: int,
                          seed: int, step: int) -> None:
    """One weight snapshot measured (:func:`diffusion_regimes.memorisation.measure_snapshot`);
    the snapshot is the score model's network (input ``model``)."""
    x, _, meta = load_subset(input["data"])
    ref, _, _ = load_subset(input["reference"])
    if len(ref) < 2:
        raise InputError(f"{input['reference']}: the memorisation study needs held-out points (for images "
                         "dataset.holdout > 0)")
    fn, _ = score_of(score, x, meta, input)
    features = memo.quality_features(input.get("classifier"), score["device"])
    table, results, cfg = memo.measure_snapshot(fn, score["kind"], x, ref, features, score["sampler"], memorisation,
                                                block, seed, exp, step)
    results.update(shape=meta["shape"], quality_features="classifier penultimate" if input.get("classifier")
                   else "coordinates")
    write_table(table, output["measure"], make_metadata("memorisation_snapshot", cfg, seed, results))
    log.info("snapshot %d: memorised %.3f, quality %.4g +- %.2g", step, results["memorised_fraction"],
             results["quality"], results["quality_se"])


def memorisation(input: dict, output: dict, exp: str, score: str, memorisation: dict, steps: list[int],
                 seed: int, device: str | None = None) -> None:
    """Gather the snapshots of one experiment (:func:`diffusion_regimes.memorisation.gather`)."""
    files = by_key(steps, input["snapshots"], "snapshot measurement")
    snapshots = {step: read_table(files[step], stage="memorisation_snapshot") for step in steps}
    x, _, data_meta = load_subset(input["data"])
    ref, _, _ = load_subset(input["reference"])
    features = memo.quality_features(input.get("classifier"), device)
    curve, loss, results = memo.gather(snapshots, x, ref, features, memorisation, data_meta["n"], seed, exp, score)
    cfg = {"memorisation": memorisation, "score": score}
    write_table(curve, output["curve"], make_metadata("memorisation", cfg, seed, results))
    write_table(loss, output["loss"], make_metadata("memorisation", cfg, seed, {"n": results["n"]}))
    log.info("memorisation %s: tau_mem %.4g [%.4g, %.4g], tau_gen %.4g (quality), %.4g (held-out loss)", exp,
             results["tau_mem"], results["tau_mem_lo"], results["tau_mem_hi"], results["tau_gen"],
             results["tau_gen_loss"])


def memorisation_group(input: dict, output: dict, group: str, members: list[str]) -> None:
    """One table per group of n (:func:`diffusion_regimes.memorisation.group`), then the
    group's figures."""
    from .. import plots

    per = {key: by_key(members, input[key], key) for key in ("curve", "entropy", "theory", "last", "data")}
    read = {exp: (*read_table(per["curve"][exp], stage="memorisation"), read_metadata(per["entropy"][exp], "entropy"),
                  read_metadata(per["theory"][exp], "theory")) for exp in members}
    table, results = memo.group(read)
    write_table(table, output["table"], make_metadata("memorisation_group", {"group": group}, None, results))
    plots.memorised_fraction_figure(group, per["curve"], Path(output["fraction"]))
    plots.tau_figure(group, table, results, Path(output["tau"]))
    ends = [table["experiment"].iloc[0], table["experiment"].iloc[-1]]
    plots.nearest_figure(group, {e: (per["last"][e], per["data"][e]) for e in dict.fromkeys(ends)},
                         Path(output["nearest"]))
    plots.collapse_entropy_figure(group, table, Path(output["collapse"]))
    log.info("memorisation %s: tau_mem ~ n^%.3g [%.3g, %.3g]", group, results["gamma"], results["gamma_lo"],
             results["gamma_hi"])


def memorisation_figure(input: dict, output: dict, exp: str) -> None:
    """The memorisation curves of one experiment along training."""
    from .. import plots

    plots.memorisation_figure(exp, input["curve"], input["loss"], Path(output["figure"]))
