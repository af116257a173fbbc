"""Stages of ``workflow/rules/sampling.smk``: cloning, collapse and U-turns, each sampling
stage as shards (a contiguous range of blocks of pairs or trajectories, each block with its
own generator) and a gather whose result is identical to one job's. ``score`` is the score
model's spec (:meth:`diffusion_regimes.scoremodels.ScoreModel.spec`)."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq

from .. import cloning as cloning_mod
from .. import collapse as collapse_mod
from .. import sanity as sanity_mod
from .. import uturn as uturn_mod
from ..classifier import labeller
from ..data import load_subset
from ..errors import InputError
from ..io import concat_tables, make_metadata, read_metadata, write_table
from ..scoremodels import score_kind
from ..seeding import Stream, derive_seed
from .common import provenance, score_of

log = logging.getLogger("diffusion_regimes")


def cloning_shard(input: dict, output: dict, exp: str, score: dict, cloning: dict, min_accuracy: float | None,
                  seed: int, shard: int = 0, device: str | None = None) -> None:
    """Pairs of shard ``shard`` of ``cloning.shards``: raw labels and (shard 0) the snapshots."""
    x, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"], "spectrum")
    fn, model = score_of(score, x, meta, input)
    label, accuracy = labeller(model, input.get("classifier"), min_accuracy, device)
    labels, snaps, results, cfg = cloning_mod.shard(fn, score["kind"], label, accuracy, score["sampler"], x.shape[1],
                                                    spec["t_S"], cloning, seed, exp, shard)
    results.update(provenance(score))
    write_table(labels, output["labels"], make_metadata("cloning_shard", cfg, seed, results))
    write_table(snaps, output["snapshots"], make_metadata("cloning_shard", cfg, seed, {"shape": meta["shape"]}))
    log.info("cloning %s shard %d: blocks %s, nfe %d", score["kind"], shard, results["blocks"], results["nfe"])


def cloning(input: dict, output: dict, exp: str, score: str, cloning: dict, seed: int) -> None:
    """Gather the shards (:func:`diffusion_regimes.cloning.gather`)."""
    from ..datamodels import for_meta

    meta = read_metadata(input["data"], "subset")
    spec = read_metadata(input["spectrum"], "spectrum")
    times, trunk, clone, metas = cloning_mod.read_labels(list(input["labels"]))
    table, results, cfg = cloning_mod.gather(times, trunk, clone, metas, for_meta(meta), spec["t_S"],
                                             spec["Lambda"], cloning, seed, exp, score)
    results.update(provenance(metas))
    write_table(table, output["cloning"], make_metadata("cloning", cfg, seed, results))
    read_metadata(input["snapshots"][0], "cloning_shard")
    snaps = pq.read_table(input["snapshots"][0]).replace_schema_metadata(None)
    write_table(snaps, output["snapshots"], make_metadata("cloning", cfg, seed, {"shape": meta["shape"]}))
    log.info("cloning %s: t_S measured %.4g (theory %.4g), nfe %d over %d shards", score, results["t_S_measured"],
             spec["t_S"], results["nfe"], len(metas))


def collapse_shard(input: dict, output: dict, exp: str, score: dict, collapse: dict, block: int, seed: int,
                   shard: int = 0) -> None:
    """Trajectories and clone pairs of shard ``shard`` of ``collapse.shards``
    (:func:`diffusion_regimes.collapse.shard`)."""
    x, _, meta = load_subset(input["data"])
    x_ref, _, _ = load_subset(input["reference"])
    spec = read_metadata(input["spectrum"], "spectrum")
    fn, _ = score_of(score, x, meta, input)
    table, pairs, results, cfg = collapse_mod.shard(fn, score["kind"], x, x_ref, score["sampler"], spec["t_S"],
                                                    collapse, block, seed, exp, shard)
    results.update(provenance(score))
    write_table(table, output["times"], make_metadata("collapse_shard", cfg, seed, results))
    write_table(pairs, output["pairs"], make_metadata("collapse_shard", cfg, seed, results))


def collapse(input: dict, output: dict, exp: str, score: str, collapse: dict, seed: int) -> None:
    """Gather the shards (:func:`diffusion_regimes.collapse.gather`): collapse times and phi_C(t)."""
    table = concat_tables(input["times"], "trajectory", "collapse_shard")
    times, trunk, clone, metas = cloning_mod.read_labels(list(input["pairs"]))
    phi_c, results, cfg = collapse_mod.gather(table, times, trunk, clone, metas, collapse, seed, exp, score)
    results.update(provenance(metas))
    write_table(table, output["times"], make_metadata("collapse", cfg, seed, results))
    write_table(phi_c, output["phi_c"], make_metadata("collapse", cfg, seed, results))
    log.info("collapse %s: mean t_collapse %.4g", score, results["t_C_measured"])


def uturn(input: dict, output: dict, exp: str, score: dict, uturn: dict, min_accuracy: float | None, seed: int,
          device: str | None = None) -> None:
    """U-turns from data points (:func:`diffusion_regimes.uturn.measure`)."""
    x, _, meta = load_subset(input["data"])
    spec = read_metadata(input["spectrum"], "spectrum")
    fn, model = score_of(score, x, meta, input)
    label, accuracy = labeller(model, input.get("classifier"), min_accuracy, device)
    if uturn["start"] == "reference":
        x, _, _ = load_subset(input["reference"])
        if len(x) < 2:
            raise InputError(f"uturn.start: reference, but {exp}'s reference set is empty (dataset.holdout is 0): "
                             "start from the training points or hold some out")
    table, results, cfg = uturn_mod.measure(fn, score["kind"], x, label, accuracy, score["sampler"], spec["t_S"],
                                            uturn, seed, exp)
    results.update(provenance(score))
    write_table(table, output["uturn"], make_metadata("uturn", cfg, seed, results))
    log.info("uturn %s: phi_U crosses at t = %.4g +- %.2g (t_S = %.4g), %d points from the %s set", score["kind"],
             results["t_U_measured"], results["t_U_measured_se"], spec["t_S"], results["n_points"], uturn["start"])


def sanity(input: dict, output: dict, exp: str, score: dict, name: str, sanity: dict, seed: int) -> None:
    """The sanity check of a network score before it is measured
    (:func:`diffusion_regimes.sanity.check`): a model that does not denoise the data stops
    here with one line."""
    x, _, meta = load_subset(input["data"])
    x_ref, _, _ = load_subset(input["reference"])
    fn, model = score_of(score, x, meta, input)
    table, results = sanity_mod.check(fn, x, x_ref, meta, f"{exp}/{name}", derive_seed(seed, exp, name, Stream.SANITY),
                                      model.kind == "images", sanity["max_ratio"])
    results.update(provenance(score))
    recorded = score_kind(score["kind"]).training_data(score["settings"])
    results["training_reference_overlap"] = sanity_mod.reference_overlap(recorded, input["reference"], input["data"],
                                                                         f"{exp}/{name}")
    write_table(table, output["sanity"], make_metadata("sanity", {**sanity, "levels": list(sanity_mod.LEVELS)}, seed,
                                                       results))
    log.info("sanity %s: denoising ratio %.3g +- %.2g on training points (noise %g of the data's std; at most "
             "%g passes)", name, results["ratio_training"], results["ratio_training_se"], results["level"],
             sanity["max_ratio"])
