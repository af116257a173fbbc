"""Stages of ``workflow/rules/analysis.smk``: the excess entropy (shards and gather), the
closed-form theory, the symmetry-breaking projections, the summary and Table 1."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import entropy as entropy_mod
from .. import summary as summary_mod
from .. import theory as theory_mod
from ..data import load_subset
from ..datamodels import for_meta
from ..io import atomic_path, concat_tables, make_metadata, read_metadata, read_table, write_table
from ..sampling import Sampler, projection_table
from ..seeding import Stream, derive_seed
from .common import by_key

log = logging.getLogger("diffusion_regimes")


def entropy_shard(input: dict, output: dict, exp: str, entropy: dict, block: int, seed: int, shard: int = 0,
                  progress: bool = True) -> None:
    """Time points of shard ``shard`` of ``entropy.shards`` of the Monte Carlo f(t)."""
    x, _, _ = load_subset(input["data"])
    table, keys = entropy_mod.shard(x, entropy, block, derive_seed(seed, exp, Stream.ENTROPY), shard, progress)
    write_table(table, output["entropy"], make_metadata("entropy_shard", {**entropy, "shard": shard}, seed,
                                                        {"keys": keys}))


def entropy(input: dict, output: dict, exp: str, entropy: dict, seed: int) -> None:
    """Gather the shards: f(t) and t_C (:func:`diffusion_regimes.entropy.gather`)."""
    meta = read_metadata(input["data"], "subset")
    table = concat_tables(input["entropy"], "t", "entropy_shard", finite=("f", "f_se"))
    results = {**entropy_mod.gather(table, meta["n"], meta["d"]), "shards": len(input["entropy"])}
    write_table(table, output["entropy"], make_metadata("entropy", entropy, seed, results))
    log.info("entropy: alpha=%.4g t_C=%.4g", results["alpha"], results["t_C"])


def theory(input: dict, output: dict, exp: str, theory: dict, seed: int) -> None:
    """The data model's closed forms on a grid of OU times (null columns where it has none)
    and the reference curves phi_G, phi_H from the training split and the reference set."""
    x, labels, meta = load_subset(input["data"])
    reference, _, _ = load_subset(input["reference"])
    spec = read_metadata(input["spectrum"], "spectrum")
    columns, results = theory_mod.theory_columns(for_meta(meta), theory, spec["t_S"], spec["Lambda"],
                                                 (x, labels.numpy(), reference), derive_seed(seed, exp, Stream.THEORY))
    table = pa.table({k: pa.array(v, mask=~np.isfinite(v)) if k != "t" else pa.array(v) for k, v in columns.items()})
    write_table(table, output["theory"], make_metadata("theory", theory, seed, results))


def symmetry(input: dict, output: dict, exp: str, symmetry: dict, sampler: dict, seed: int) -> None:
    """Projections q = x . m / sqrt(d) of backward trajectories of the exact mixture score at
    times around t_S (:func:`diffusion_regimes.sampling.projection_table`)."""
    meta = read_metadata(input["data"], "subset")
    spec = read_metadata(input["spectrum"], "spectrum")
    samp = Sampler.from_config(sampler)
    table, results = projection_table(for_meta(meta), samp, symmetry, spec["t_S"],
                                      derive_seed(seed, exp, Stream.SYMMETRY))
    write_table(table, output["symmetry"], make_metadata("symmetry", {"symmetry": symmetry,
                                                                      "sampler": samp.settings}, seed, results))


def summary(input: dict, output: dict, experiments: dict, uturn: list[str] | None = None) -> None:
    """One row per (experiment, score model) (:func:`diffusion_regimes.summary.summary_table`),
    from the files the rule declares: per experiment (in the order of ``experiments``) its
    spectrum, entropy and theory; per (experiment, score) its cloning table and collapse
    times, and its U-turns for the experiments listed in ``uturn``."""
    pairs = [(exp, s) for exp, scores in experiments.items() for s in scores]
    per_exp = {key: by_key(experiments, input[key], key) for key in ("spectrum", "entropy", "theory")}
    per_pair = {key: by_key(pairs, input[key], key) for key in ("cloning", "collapse")}
    per_pair["uturn"] = by_key([(e, s) for e in uturn or [] for s in experiments[e]], input.get("uturn", []), "uturn")
    rows = []
    for exp, score in pairs:  # each file's metadata under the name of the stage that wrote it
        metas = {stage: read_metadata(found[exp], stage) for stage, found in per_exp.items()}
        metas.update({stage: read_metadata(found[exp, score], stage) for stage, found in per_pair.items()
                      if (exp, score) in found})
        rows.append((exp, score, metas))
    df = summary_mod.summary_table(rows)
    write_table(df, output["summary"], make_metadata("summary", {"experiments": experiments}))
    if "table" in output:  # the same table as TSV, which snakemake --report shows as a table
        with atomic_path(output["table"]) as tmp:
            df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        log.info("summary:\n%s", df.to_string(index=False))


def table1(input: dict, output: dict) -> None:
    """The paper's Table 1 (:func:`diffusion_regimes.summary.table1`), Parquet and Markdown."""
    summ, _ = read_table(input["summary"], stage="summary")
    df = summary_mod.table1(summ)
    write_table(df, output["table"], make_metadata("table1", {"experiments": list(summ["experiment"].unique())}))
    with atomic_path(output["markdown"]) as tmp:
        tmp.write_text(summary_mod.table1_markdown(df))
